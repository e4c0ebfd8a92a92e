r"""Where a ``scoring score`` run's time goes: the job's steps, stamped in seconds from the process's start.

Runs the ``scoring`` command line in this process with the job's steps wrapped, and prints on stderr one
line as each starts (``>``) and ends (``<``), with the thread that ran it: the model's resolution runs
beside the input's listing, which the stamps show. The run itself is unchanged (its own log lines and
exit code are the command's).

Usage::

    MLFLOW_TRACKING_URI=sqlite:///bench-workdir/mlflow.db .venv/bin/python tools/job_timeline.py \
        score --model-uri models:/bench@onnx --input bench-workdir/data/rows=10000000 \
        --output /tmp/out --date 2026-11-01 --master 'local[2]'
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable

STARTED = time.perf_counter()

# (module, attribute) of each step stamped, in the order a local run takes them.
STEPS = (
    ("scoring.batch.job", "resolve_models"),
    ("scoring.model.resolve", "pin_model_uri"),
    ("scoring.batch.job", "start_local"),
    ("scoring.batch.job", "score_locally"),
    ("scoring.batch.job", "score_on_spark"),
    ("scoring.batch.job", "probe_models"),
    ("scoring.batch.pool", "SlicePool.call"),
    ("scoring.batch.pool", "SlicePool.run"),
    ("scoring.batch.job", "close_run"),
    ("scoring.dataset.publisher", "DirectoryPublisher.finish"),
    ("scoring.batch.pool", "SlicePool.close"),
    ("scoring.batch.job", "write_report_or_warn"),
)


def stamp(what: str) -> None:
    """One line on stderr: seconds since the start, the thread, what happens."""
    elapsed = time.perf_counter() - STARTED
    print(f"[{elapsed:7.2f}] {threading.current_thread().name:<12.12} {what}", file=sys.stderr, flush=True)


def stamped(name: str, function: Callable) -> Callable:
    """``function``, stamping its start and end."""

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        stamp(f"> {name}")
        try:
            return function(*args, **kwargs)
        finally:
            stamp(f"< {name}")

    return wrapper


def wrap_steps() -> None:
    """Replace each step of ``STEPS`` with its stamped self, where its callers look it up."""
    import importlib

    for module_name, attribute in STEPS:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, stamped(attribute, getattr(owner, name)))


def main() -> int:
    """Run ``scoring`` with the arguments given, its steps stamped; its exit code."""
    stamp("start")
    from scoring.cli import main as scoring_main

    wrap_steps()
    stamp("imported")
    try:
        return scoring_main(sys.argv[1:])
    finally:
        stamp("exit")


if __name__ == "__main__":
    sys.exit(main())
