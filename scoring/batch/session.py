"""Getting a SparkSession that works the same under spark-submit and from the console script."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
