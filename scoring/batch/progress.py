"""Progress lines while a partition is scored: rows so far, the total, rows/s and an ETA.

One plain log line every N seconds, the same in spark-submit's output, an EMR step's stderr and an
Airflow task's log::

    progress date=2026-11-01: 1,200,000 of 10,000,000 rows (12.0%), 85,714 rows/s, ETA 1m43s

The total is the input's rows from the parquet footers; the rows so far are the input records the
scoring pass's stages have read, from Spark's status store. Spark updates a running task's metrics with
each executor heartbeat (``spark.executor.heartbeatInterval``, 10 s by default) and a finished task's
at its end, so the count moves in steps. The Arrow pass's tasks read the input themselves, so there the
count is of finished tasks, each an equal share of the rows. The lines come from a daemon thread that
only reads; a failure to read (the context stopping) ends the lines, never the run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)

JOB_GROUP_PREFIX = "scoring-progress-"


def duration_text(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``42s``: a duration as people read it in a log line."""
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before the first row (no rate yet)."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) / (done / elapsed)


def remaining_text(done: int, total: int, elapsed: float) -> str:
    """``ETA 1m43s``, ``ETA unknown`` before the first unit, or ``done`` at the total."""
    if done >= total:
        return "done"
    eta = eta_seconds(done, total, elapsed)
    return f"ETA {duration_text(eta)}" if eta is not None else "ETA unknown"


def progress_line(label: str, done: int, total: int, elapsed: float) -> str:
    """One progress line: ``label: DONE of TOTAL rows (P%), R rows/s, ETA T``.

    Args:
        label: What is being scored (``date=2026-11-01``).
        done: Rows so far.
        total: Rows in all.
        elapsed: Seconds since the scoring pass started.
    """
    share = 100.0 * done / total if total else 100.0
    rate = done / elapsed if elapsed > 0 else 0.0
    left = remaining_text(done, total, elapsed)
    return f"progress {label}: {done:,} of {total:,} rows ({share:.1f}%), {rate:,.0f} rows/s, {left}"


def rows_read(sc: SparkContext, group: str) -> int:
    """The input records read so far by the stages of the jobs of ``group``, from the status store.

    A stage's last attempt counts (a retried stage's earlier attempt read rows that are read again).
    A stage the store does not hold yet counts 0.
    """
    from py4j.protocol import Py4JJavaError

    store = sc._jsc.sc().statusStore()
    tracker = sc.statusTracker()
    rows = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else ():
            try:
                rows += store.lastStageAttempt(stage_id).inputRecords()
            except Py4JJavaError:  # NoSuchElementException: the stage is not submitted yet
                continue
    return rows


def rows_by_tasks(sc: SparkContext, group: str, total: int) -> int:
    """The share of ``total`` that the finished tasks of ``group``'s jobs stand for.

    For a pass whose tasks read the input themselves (``scoring.batch.arrow_pass``): Spark records no
    input records for them, so the count moves a task at a time, each standing for an equal share.
    """
    tracker = sc.statusTracker()
    done = tasks = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done, tasks = done + stage.numCompletedTasks, tasks + stage.numTasks
    return total * done // tasks if tasks else 0


@contextlib.contextmanager
def job_group(sc: SparkContext, group: str, description: str) -> Iterator[None]:
    """The Spark jobs this thread starts inside the block belong to ``group``."""
    sc.setJobGroup(group, description)
    try:
        yield
    finally:
        # Clear it so that the run's later jobs are not counted as the scoring pass.
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
        sc.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]


class _Reporter(threading.Thread):
    """The daemon thread that logs a line every ``every`` seconds until stopped."""

    def __init__(
        self,
        read: Callable[[], int],
        label: str,
        total: int,
        every: float,
        clock: Callable[[], float],
        gone: tuple[type[Exception], ...],
    ) -> None:
        super().__init__(name=f"scoring-progress {label}", daemon=True)
        self.read, self.label, self.total, self.every, self.clock = read, label, total, every, clock
        self.gone = gone
        self.started = clock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                done = min(self.read(), self.total)
            except self.gone as e:  # what is counted went away: the run goes on or fails on its own
                log.debug("progress %s: no more lines: %s", self.label, e)
                return
            log.info("%s", progress_line(self.label, done, self.total, self.clock() - self.started))

    def finish(self) -> None:
        """Stop the lines and log the last one: the pass read the whole input."""
        self.stopped.set()
        self.join()
        log.info("%s", progress_line(self.label, self.total, self.total, self.clock() - self.started))


@contextlib.contextmanager
def progress(
    sc: SparkContext,
    label: str,
    total: int,
    every_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    by_tasks: bool = False,
) -> Iterator[None]:
    """Log progress lines while the block's Spark jobs run; the last line when it ends well.

    The block's jobs are tagged with a job group of their own, so that only they are counted. With
    ``every_seconds`` 0 it logs nothing and tags nothing.

    Args:
        sc: The session's context.
        label: What is scored (``date=2026-11-01``), the lines' prefix.
        total: The rows the block reads in all (the input's footers).
        every_seconds: Seconds between two lines; 0: no lines.
        clock: Seconds, monotonic (a test's own clock).
        by_tasks: Count finished tasks (``rows_by_tasks``) instead of the input records Spark read.
    """
    if every_seconds <= 0:
        yield
        return
    from py4j.protocol import Py4JError

    group = f"{JOB_GROUP_PREFIX}{uuid.uuid4().hex[:12]}"
    read = (lambda: rows_by_tasks(sc, group, total)) if by_tasks else (lambda: rows_read(sc, group))
    with (
        job_group(sc, group, f"scoring {label}"),
        progress_lines(read, label, total, every_seconds, clock, (Py4JError,)),
    ):
        yield


@contextlib.contextmanager
def progress_lines(
    read: Callable[[], int],
    label: str,
    total: int,
    every_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    gone: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Log ``read()`` of ``total`` rows every ``every_seconds`` inside the block; the last line at its end.

    Args:
        read: The rows done so far (called from the reporting thread).
        label: What is scored (``date=2026-11-01``), the lines' prefix.
        total: The rows the block reads in all.
        every_seconds: Seconds between two lines; 0: no lines.
        clock: Seconds, monotonic (a test's own clock).
        gone: Errors of ``read`` that mean there is nothing more to count: the lines stop, not the run.
    """
    if every_seconds <= 0:
        yield
        return
    reporter = _Reporter(read, label, total, every_seconds, clock, gone)
    reporter.start()
    try:
        yield
    except BaseException:
        reporter.stopped.set()
        reporter.join()
        raise
    reporter.finish()
