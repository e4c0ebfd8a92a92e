"""The dynamic batcher: callers share model calls, each gets its own rows, nothing is lost on close."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from scoring.model.output import Scores
from scoring.serve.batching import Batcher


class _Model:
    """Scores x -> 2x; the first call waits until released, so that later requests queue up."""

    def __init__(self):
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, frame: pd.DataFrame) -> Scores:
        if not self.calls:
            self.entered.set()
            self.release.wait(5)
        self.calls.append(len(frame))
        x = frame["x"].to_numpy()
        return Scores(x * 2, np.column_stack([x, -x]).astype(float), (("prediction", "predict"),))


def _frame(*values: float) -> dict[str, np.ndarray]:
    """One request's typed columns."""
    return {"x": np.array(values, dtype=np.float64)}


def test_queued_requests_share_one_call_and_get_their_own_rows():
    model = _Model()
    batcher = Batcher(model, max_rows=100, max_wait_s=0.05)
    first = batcher.submit(_frame(1))
    assert model.entered.wait(5)  # the model is busy with the first: the others queue behind it
    queued = [batcher.submit(_frame(10 * i, 10 * i + 1)) for i in range(1, 6)]
    model.release.set()
    assert first.result(5).prediction.tolist() == [2]
    for i, future in enumerate(queued, start=1):
        scores = future.result(5)
        assert scores.prediction.tolist() == [20 * i, 20 * i + 2]
        assert scores.probability.tolist() == [[10 * i, -10 * i], [10 * i + 1, -10 * i - 1]]
    assert model.calls == [1, 10]  # five requests, one model call
    batcher.close()


def test_a_batch_never_exceeds_max_rows():
    model = _Model()
    batcher = Batcher(model, max_rows=4, max_wait_s=0.05)
    first = batcher.submit(_frame(0))
    assert model.entered.wait(5)
    futures = [batcher.submit(_frame(i, i)) for i in range(1, 6)]
    model.release.set()
    first.result(5)
    assert [f.result(5).prediction.tolist() for f in futures] == [[2 * i, 2 * i] for i in range(1, 6)]
    assert max(model.calls) <= 4 and sum(model.calls) == 11
    batcher.close()


def test_a_model_error_reaches_every_caller_of_its_batch():
    def broken(frame):
        raise RuntimeError("model down")

    batcher = Batcher(broken, max_rows=10, max_wait_s=0.01)
    futures = [batcher.submit(_frame(i)) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="model down"):
            future.result(5)
    batcher.close()


def test_close_scores_what_is_queued_and_later_requests_inline():
    model = _Model()
    batcher = Batcher(model, max_rows=10, max_wait_s=0.01)
    queued = [batcher.submit(_frame(i)) for i in range(3)]
    model.release.set()
    batcher.close(timeout=5)
    assert [f.result(0).prediction.tolist() for f in queued] == [[0], [2], [4]]
    late = batcher.submit(_frame(7))
    assert late.done() and late.result().prediction.tolist() == [14]


def test_a_lone_request_is_not_kept_waiting_for_company():
    model = _Model()
    model.release.set()
    # A minute of allowed wait: a lone caller still gets its answer at once, as nothing else came.
    batcher = Batcher(model, max_rows=100, max_wait_s=60)
    for i in range(3):
        assert batcher.submit(_frame(i)).result(timeout=10).prediction.tolist() == [2 * i]
    assert model.calls == [1, 1, 1]
    batcher.close()


def test_a_cancelled_request_does_not_stop_the_batcher():
    model = _Model()
    batcher = Batcher(model, max_rows=100, max_wait_s=0.01)
    first = batcher.submit(_frame(1))
    assert model.entered.wait(5)
    gone = batcher.submit(_frame(2))
    assert gone.cancel()  # the caller went away while its request was queued
    kept = batcher.submit(_frame(3))
    model.release.set()
    assert first.result(5).prediction.tolist() == [2]
    assert kept.result(5).prediction.tolist() == [6]
    assert batcher.submit(_frame(4)).result(5).prediction.tolist() == [8]  # the thread still runs
    assert model.calls == [1, 1, 1]
    batcher.close()
