"""Local worker processes that run the Arrow pass's slices: Spark's local scheduler, without a JVM.

On one machine the Arrow pass needs nothing from Spark but its scheduling: each task reads, checks,
scores and writes its slice with pyarrow (``scoring.batch.arrow_pass``). ``SlicePool`` schedules the same
slices on processes of its own, with Spark's local guarantees:

- one worker process per core, each loading the run's models once (``scoring.batch.model_cache``);
- a slice whose worker fails or dies (an exception, a SIGKILL, the OOM killer) is run again on a fresh
  worker, up to ``max_failures`` attempts in all (as ``local[N,F]``); a slice writes its files under an
  attempt's own name and moves them into place at its end, so a retry replaces them whole;
- a slice that fails ``max_failures`` times fails the run with its last error, and the other workers
  are killed before the run goes on to delete its staging; a file whose bytes cannot be decoded
  (``UnreadableSlice``) fails the run at once, as another attempt would read the same bytes.

Each worker is a fresh interpreter (no thread or lock of the driver's is inherited), started as soon
as the pool is made so that its imports overlap the driver's model resolution, and connected to the
driver by a socket pair. It is started as ``python -c``, not by ``multiprocessing``'s ``spawn``, which
re-imports the caller's main script in every child: a script calling the job without an
``if __name__ == "__main__"`` guard would start the job again in each worker. A worker whose driver
dies sees its socket close and exits; a driver that sees a worker's socket close knows it died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, TypeVar

from scoring.batch.arrow_pass import UnreadableSlice
from scoring.errors import OutputError

if TYPE_CHECKING:
    from scoring.batch.arrow_pass import ArrowPass, Slice, SliceResult

log = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts of a slice in all, as a cluster's ``spark.task.maxFailures`` (4 by default).
MAX_FAILURES = 4
# Seconds an idle worker has to exit when told to, before it is killed.
STOP_TIMEOUT_S = 1.0


class SliceFailed(OutputError):
    """A slice failed on every attempt, for a reason that is not an exception of its own."""


def worker_process(fd: int, prober: bool = False) -> None:
    """A worker's entry point.

    Args:
        fd: Its end of the socket pair, inherited. Not inherited further: a model that forks must not
            keep the socket open after the worker dies, or the driver would never see the death.
        prober: Whether it is the worker that ``SlicePool.call`` runs on.
    """
    os.set_inheritable(fd, False)
    worker_main(Connection(fd), prober)
    # Out without the interpreter's teardown (0.2 s of the driver's wait at every run's end, freeing
    # ONNX Runtime, pandas and pyarrow): every file a slice wrote is closed and in place already.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker_main(conn: Connection, prober: bool = False) -> None:
    """A worker's life: import what scoring needs, then run the slices it is sent until told to stop.

    Messages in: ``("pass", pickled ArrowPass)`` once, then ``("slice", Slice)``, or ``("call",
    (function, args))`` at any time (``SlicePool.call``); None or a closed socket stops it. Messages
    out: ``("done", SliceResult or the call's result)`` or ``("failed", exception)``.

    Args:
        conn: The worker's end of its socket pair with the driver.
        prober: Whether it is the worker that ``SlicePool.call`` runs on (it imports ``onnx`` too).
    """
    # pandas, pyarrow, the pass and ONNX Runtime, while the driver resolves the model. The driver
    # probes an ONNX model on the prober (``SlicePool.call``), which reads a classifier's labels with
    # onnx (0.5 s of import, mostly ``ml_dtypes``); the others get them with the pass
    # (``ScorerSpec.classes``) and never import it.
    import scoring.batch.arrow_pass
    import scoring.model.predictors  # noqa: F401

    with contextlib.suppress(ImportError):  # neither is needed for pyfunc models
        import onnxruntime  # noqa: F401

        if prober:
            import onnx  # noqa: F401

    arrow_pass = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if message is None:
            return
        kind, payload = message
        if kind == "pass":
            arrow_pass = pickle.loads(payload)
            continue
        try:
            if kind == "call":
                function, args = payload
                conn.send(("done", function(*args)))
            else:
                conn.send(("done", arrow_pass.score_slice(payload)))
        except Exception as e:  # reported to the driver, which retries the slice or fails the run
            e.add_note(traceback.format_exc())  # the worker's stack, for the driver's log
            conn.send(("failed", _picklable(e)))


def _picklable(error: Exception) -> Exception:
    """``error`` itself when it pickles (the driver re-raises its type), else its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # any exception may fail to pickle or unpickle, in any way
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


@dataclass
class _Worker:
    """One worker process, its socket, and the slice it is running (None: idle)."""

    process: subprocess.Popen
    conn: Connection
    has_pass: bool = False
    running: Slice | None = None


@dataclass
class _Schedule:
    """The slices still to run, and each one's failed attempts."""

    pending: deque[Slice]
    failures: dict[int, int] = field(default_factory=dict)
    results: dict[int, SliceResult] = field(default_factory=dict)


class SlicePool:
    """``workers`` local processes that run an Arrow pass's slices (see the module).

    Use as a context manager: the workers stop when it exits, however it exits.
    """

    def __init__(self, workers: int, max_failures: int = MAX_FAILURES) -> None:
        self._max_failures = max(max_failures, 1)
        self._workers = [self._start(prober=i == 0) for i in range(max(workers, 1))]

    @property
    def size(self) -> int:
        """How many workers run slices at once."""
        return len(self._workers)

    def __enter__(self) -> SlicePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, prober: bool) -> _Worker:
        ours, theirs = socket.socketpair()
        # The driver's import path, as spawn would hand it down: a pass may be of a class the caller
        # imported from outside the installed packages.
        path = os.pathsep.join(p for p in sys.path if p)
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from scoring.batch.pool import worker_process; worker_process({theirs.fileno()}, {prober})",
            ],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, "PYTHONPATH": path},
        )
        theirs.close()
        return _Worker(process, Connection(ours.detach()))

    def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on an idle worker: work that wants a worker's imports and model cache.

        The job probes an ONNX model this way: the worker has ONNX Runtime imported already, and the
        session it opens is the one its first slice scores with (``scoring.batch.model_cache``). A
        worker that dies (idle before, or during the call) is replaced and the call made once more.

        Args:
            function: A module-level function (pickled by reference).
            *args: Its arguments, picklable.

        Raises:
            Exception: The function's own error, re-raised; ``SliceFailed`` when its worker died twice.
        """
        worker = self._workers[0]
        for attempt in (1, 2):
            try:
                worker.conn.send(("call", (function, args)))
                kind, payload = worker.conn.recv()
                break
            except (EOFError, OSError):
                code = worker.process.wait()
                self._replace(worker)
                if attempt == 2:
                    died = f"{function.__name__}: its worker process died (exit code {code})"
                    raise SliceFailed(died) from None
        if kind == "failed":
            raise payload
        return payload

    def run(
        self,
        arrow_pass: ArrowPass,
        slices: Sequence[Slice],
        on_done: Callable[[SliceResult], None] = lambda _: None,
    ) -> dict[int, SliceResult]:
        """Run every slice, each to success on some attempt; the results by slice index.

        Args:
            arrow_pass: The run's pass, sent once to each worker.
            slices: The slices, started in order.
            on_done: Called on the driver with each slice's result as it comes (progress).

        Raises:
            Exception: The error of a slice that failed on its last attempt (an exception of the
                slice's, re-raised; ``SliceFailed`` when its worker died).
        """
        schedule = _Schedule(deque(slices))
        pickled = pickle.dumps(arrow_pass, protocol=pickle.HIGHEST_PROTOCOL)  # once, for every worker
        try:
            while schedule.pending or any(w.running for w in self._workers):
                for worker in self._workers:
                    if worker.running is None and schedule.pending:
                        self._send(worker, pickled, schedule.pending.popleft())
                busy = [w for w in self._workers if w.running is not None]
                ready = wait([w.conn for w in busy])  # an answer, or a socket closed by a worker's death
                for worker in busy:
                    if worker.conn in ready:
                        self._collect(worker, schedule, on_done)
        except BaseException:
            # No worker may go on writing once the run fails: the run's staging is deleted next.
            self._stop_busy()
            raise
        return schedule.results

    def _send(self, worker: _Worker, pickled: bytes, piece: Slice) -> None:
        """Hand ``piece`` to an idle worker (the pass first, once); one found dead is replaced first."""
        for attempt in (1, 2):
            try:
                if not worker.has_pass:
                    worker.conn.send(("pass", pickled))
                    worker.has_pass = True
                worker.conn.send(("slice", piece))
                break
            except OSError:  # it died idle (between slices, or while importing): a fresh one takes it
                if attempt == 2:
                    raise
                log.warning("a worker died idle (exit code %s); starting another", worker.process.wait())
                self._replace(worker)
        worker.running = piece

    def _stop_busy(self) -> None:
        """Kill the workers still running a slice, and wait until they are gone."""
        for worker in self._workers:
            if worker.running is not None:
                worker.process.kill()
                worker.process.wait()
                worker.running = None

    def _collect(self, worker: _Worker, schedule: _Schedule, on_done: Callable[[SliceResult], None]) -> None:
        """Take the worker's answer, or its death, for the slice it was running."""
        piece = worker.running
        assert piece is not None
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            kind, payload = "died", None
        if kind == "done":
            worker.running = None
            schedule.results[piece.index] = payload
            on_done(payload)
            return
        if isinstance(payload, UnreadableSlice):
            worker.running = None
            raise payload  # the file's bytes are bad: another attempt reads the same bytes
        if kind == "died":
            payload = SliceFailed(
                f"slice {piece.index} ({piece.parts[0][0]}, ...): its worker process died "
                f"(exit code {worker.process.wait()})"
            )
            self._replace(worker)
        worker.running = None
        failures = schedule.failures[piece.index] = schedule.failures.get(piece.index, 0) + 1
        if failures >= self._max_failures:
            raise payload
        log.warning("slice %d failed (attempt %d of %d), retrying: %s",
                    piece.index, failures, self._max_failures, payload)  # fmt: skip
        schedule.pending.appendleft(piece)

    def _replace(self, worker: _Worker) -> None:
        """Start a fresh process in the dead worker's place."""
        worker.conn.close()
        fresh = self._start(prober=worker is self._workers[0])
        worker.process, worker.conn, worker.has_pass = fresh.process, fresh.conn, False

    def close(self) -> None:
        """Stop every worker: an idle one is told to (it exits at once), a busy one is killed."""
        for worker in self._workers:
            if worker.running is None:
                with contextlib.suppress(OSError):  # already dead: nothing to tell
                    worker.conn.send(None)
            else:
                worker.process.kill()
            worker.conn.close()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # still importing, say: it holds nothing, kill it
                worker.process.kill()
                worker.process.wait()
