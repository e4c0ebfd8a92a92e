"""Fault injection for the fault-tolerance tests; inert unless ``SCORING_TEST_FAULT`` is set.

Values:
    ``kill-driver:POINT``: the job SIGKILLs itself at ``POINT`` (``before-publish``, ``mid-swap``).
    ``kill-worker-once:PATH``: the first Python worker to score a batch creates ``PATH`` and dies
        mid-task, after its first batch; Spark must retry the task.
    ``slow-batches:SECONDS``: every batch takes SECONDS longer, so that a test can lose a node while
        the job runs.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "SCORING_TEST_FAULT"


def at(point: str) -> None:
    """Kill this process here when the test fault names ``point``."""
    if os.environ.get(ENV) == f"kill-driver:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def after_batch() -> None:
    """Kill this Python worker once, or slow it down, when a test asks."""
    fault = os.environ.get(ENV, "")
    if fault.startswith("slow-batches:"):
        time.sleep(float(fault.split(":", 1)[1]))
    if not fault.startswith("kill-worker-once:"):
        return
    try:
        # O_EXCL: exactly one worker of one attempt dies; the retry finds the marker and goes on.
        os.close(os.open(fault.split(":", 1)[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)
