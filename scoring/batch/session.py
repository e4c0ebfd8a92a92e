"""Getting a SparkSession that works the same under spark-submit and from the console script."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def prepare_environment(master: str | None) -> None:
    """Make Spark's launcher and Python workers use this interpreter and its packages.

    Spark starts ``python3`` from PATH for its workers unless ``PYSPARK_PYTHON`` says otherwise, and
    pip's spark-submit script runs ``python3`` itself: outside an activated virtualenv both would find
    an interpreter without pandas. Local masters also bind to loopback, not the machine's address.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    if master is not None and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def get_session(
    master: str | None = None, app_name: str = "scoring", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Return the active SparkSession, or start one.

    Args:
        master: Spark master URL. None keeps spark-submit's master, or uses ``local[*]`` when the
            process was not started by spark-submit.
        app_name: Application name shown in the Spark UI and logs.
        conf: More Spark configuration for a new session.
    """
    launched_by_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master is None and not launched_by_spark_submit:
        master = "local[*]"
    prepare_environment(master)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        # The job logs its own progress; Spark's console progress bar garbles captured logs.
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    if master is not None:
        builder = builder.master(master)
    return builder.getOrCreate()


def start_session(master: str | None = None) -> Callable[[], SparkSession]:
    """Start ``get_session(master)`` in the background; the function returned waits for it.

    A JVM takes seconds to start, and so does resolving a model in a registry: the job does both at
    once. A model that fails to resolve still fails the job at once; the half-started JVM exits with
    the process (Spark's gateway quits when its parent's pipe closes).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return lambda: active
    outcome: dict[str, object] = {}

    def start() -> None:
        try:
            outcome["session"] = get_session(master)
        except BaseException as e:  # handed to the waiting caller, who raises it
            outcome["error"] = e

    thread = threading.Thread(target=start, name="spark-session-start", daemon=True)
    thread.start()

    def wait() -> SparkSession:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["session"]  # type: ignore[return-value]

    return wait
