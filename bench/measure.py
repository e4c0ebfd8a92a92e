"""One run of a way: a subprocess timed from start to exit, its process tree's memory sampled.

Peak memory is the largest sum, over the samples (every ``interval`` seconds), of the resident set
sizes of the child and all its descendants: the JVM, Spark's Python daemon and workers included.
Pages shared between processes (forked Python workers) count once per process, as RSS does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

INTERVAL_S = 0.2


@dataclass(frozen=True)
class Outcome:
    """What one run did.

    Attributes:
        returncode: The process's exit code (negative: killed by that signal).
        wall_s: Seconds from start to exit.
        peak_rss_bytes: The largest sampled RSS sum of the process tree.
        samples: Number of memory samples taken.
        timed_out: Whether the run was killed for running past its limit.
    """

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    samples: int
    timed_out: bool


def tree_rss(process: psutil.Process) -> int:
    """The RSS sum of ``process`` and all its descendants, in bytes (0 when it is gone)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):  # exited between listing and reading
            total += member.memory_info().rss
    return total


def run_process(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    timeout_s: float,
    interval_s: float = INTERVAL_S,
) -> Outcome:
    """Run ``command`` to its end, timing it and sampling its process tree's memory.

    Args:
        command: The command line.
        env: Its whole environment.
        cwd: Its working directory.
        log: File that receives its stdout and stderr.
        timeout_s: Limit; past it the whole process group is killed and the run counts as failed.
        interval_s: Seconds between memory samples.
    """
    peak = 0
    samples = 0
    done = threading.Event()
    with log.open("wb") as out:
        start = time.perf_counter()
        # Its own session, so that a timeout kills the JVM and the Python workers along with it.
        child = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = psutil.Process(child.pid)

        def sample() -> None:
            nonlocal peak, samples
            while not done.is_set():
                peak = max(peak, tree_rss(process))
                samples += 1
                done.wait(interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timed_out = False
        try:
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            returncode = child.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        _kill_leftovers(child.pid)
    return Outcome(returncode, wall, peak, samples, timed_out)


def _kill_leftovers(group: int) -> None:
    # Anything of the run's process group still alive (an orphaned JVM or Python worker) would take
    # cores from the next run.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
