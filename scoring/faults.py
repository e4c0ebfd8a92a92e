"""Fault injection for the fault-tolerance tests; inert unless ``SCORING_TEST_FAULT`` is set.

Values:
    ``kill-driver:POINT``: the job SIGKILLs itself at ``POINT`` (``before-publish``, ``mid-swap``).
    ``kill-worker-once:PATH``: the first Python worker to score a batch creates ``PATH`` and SIGKILLs
        itself mid-task, after its first batch; the executor (Spark, or the local pool) must retry
        the task.
    ``slow-batches:SECONDS``: every batch takes SECONDS longer, so that a test can lose a node while
        the job runs.

``SCORING_TEST_TRACE=PATH`` (apart, so that it combines with a fault): the driver appends
``<unix time> <point>`` to ``PATH`` at each point it passes, so that a test can SIGKILL the job at a
moment it chooses within a step (``tests/dataset/test_table_faults.py``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

ENV = "SCORING_TEST_FAULT"
TRACE_ENV = "SCORING_TEST_TRACE"


def at(point: str) -> None:
    """Note ``point`` in the test's trace, if any; kill this process here when the test fault names it."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a") as out:
            out.write(f"{time.time():.6f} {point}\n")
    if os.environ.get(ENV) == f"kill-driver:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def worker_fault() -> Callable[[], None]:
    """What a Python worker does after each batch it scores: nothing, unless a test asked for a fault.

    Read once per task, so that scoring's per-batch loop pays for no environment lookups.
    """
    fault = os.environ.get(ENV, "")
    if fault.startswith("slow-batches:"):
        seconds = float(fault.split(":", 1)[1])
        return lambda: time.sleep(seconds)
    if fault.startswith("kill-worker-once:"):
        marker = fault.split(":", 1)[1]
        return lambda: _kill_worker_once(marker)
    return _nothing


def _nothing() -> None:
    pass


def _kill_worker_once(marker: str) -> None:
    try:
        # O_EXCL: exactly one worker of one attempt dies; the retry finds the marker and goes on.
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
