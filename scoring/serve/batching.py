"""Dynamic batching: requests that arrive together share one model call, as Triton's batcher does.

Each request's rows are queued; one thread takes the first, waits at most ``max_wait_s`` for more (up to
``max_rows``), scores them in one call and hands every caller its slice. It waits only while requests
do arrive together (the last call served several): a lone caller is not kept waiting for company. One
ONNX Runtime call for 64 records costs little more than for one, so under concurrency the model's cost
per record falls with the batch, at the price of at most ``max_wait_s`` of added latency. A model
scores each row on its own, so a record's scores do not depend on the records batched with it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoring.model.output import Scores

# Queued after the last job by ``close``: the thread stops when it gets here.
_STOP = object()


# One request's typed features: an array per feature, in model order (``scoring.model.rows``).
Columns = Mapping[str, np.ndarray]


@dataclass
class _Job:
    columns: Columns
    future: Future = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))


class Batcher:
    """A queue in front of a scoring function, drained by one thread.

    Args:
        score: Scores a frame of typed features (the predictor's ``predict``).
        max_rows: Most rows in one call; a request bigger than this is scored alone.
        max_wait_s: Longest a request waits for others to join its batch.
        on_batch: Called with the rows of each model call (the metrics' batch-size histogram).
    """

    def __init__(
        self,
        score: Callable[[pd.DataFrame], Scores],
        max_rows: int = 256,
        max_wait_s: float = 0.001,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._score = score
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch or (lambda rows: None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="scoring-batcher", daemon=True)
        self._thread.start()

    def submit(self, columns: Columns) -> Future:
        """Queue one request's features to be scored; the future's result is its ``Scores``, row for row.

        After ``close`` they are scored at once in the caller's thread, so a request that took this
        batcher just before a reload still gets its scores from the model it started with.
        """
        with self._lock:
            if not self._closed:
                job = _Job(columns)
                self._queue.put(job)
                return job.future
        job = _Job(columns)
        self._run_batch([job])
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Score what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        carried: _Job | object | None = None  # a job that did not fit the last batch, or _STOP
        shared = False  # whether the last model call served more than one request
        while True:
            job = carried if carried is not None else self._queue.get()
            carried = None
            if job is _STOP:
                return
            batch, rows = [job], job.rows
            # Wait for company only while requests do arrive together: a lone caller is not kept
            # waiting for others that never come (what is queued already still joins).
            deadline = time.monotonic() + (self._max_wait_s if shared else 0.0)
            while rows < self._max_rows:
                try:
                    more = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if more is _STOP or rows + more.rows > self._max_rows:
                    carried = more
                    break
                batch.append(more)
                rows += more.rows
            shared = len(batch) > 1
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        """Score one batch; nothing raised here may stop the thread, or later callers would wait forever."""
        # A caller that gave up (its request was cancelled) is dropped; the others can no longer be.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            frame = _frame([j.columns for j in batch])
            scores = self._score(frame)
            self._on_batch(len(frame))
        except BaseException as e:  # every caller of the batch gets the model's error
            for job in batch:
                job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            stop = start + job.rows
            job.future.set_result(_rows(scores, start, stop))
            start = stop


def _frame(requests: list[Columns]) -> pd.DataFrame:
    """The requests' columns stacked into one frame: one pandas construction per model call.

    ``copy=False``: the arrays are the batch's own, and pandas' copy would cost more than the model
    does for a few records.
    """
    if len(requests) == 1:
        return pd.DataFrame(requests[0], copy=False)
    return pd.DataFrame({c: np.concatenate([r[c] for r in requests]) for c in requests[0]}, copy=False)


def _rows(scores: Scores, start: int, stop: int) -> Scores:
    probability = None if scores.probability is None else scores.probability[start:stop]
    return Scores(scores.prediction[start:stop], probability, scores.methods, scores.classes)
