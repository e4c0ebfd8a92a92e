"""Session-wide fixtures: one SparkSession, one SQLite MLflow registry, tiny data made here."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from scoring import demo

DATE = dt.date(2026, 11, 1)
OTHER_DATE = dt.date(2026, 11, 2)
ROWS = 400

# Figures the tests report (bad-input classes, faults survived), printed at the end of the run.
_FIGURES: list[str] = []


@pytest.fixture
def report():
    """Record one line for the run's closing "figures" section."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("figures")
        for line in sorted(_FIGURES):
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session.

    ``local[2,2]``: two threads, and a failed task is tried twice, as a cluster would retry it.
    """
    from scoring.batch.session import get_session

    session = get_session(
        "local[2,2]",
        app_name="scoring-tests",
        conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    # Airflow's logging setup raises py4j to INFO; its goodbye at interpreter exit finds stdout closed.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> dict:
    """A real SQLite MLflow registry holding the demo classifier as sklearn (v1) and ONNX (v2).

    Returns the trained sklearn model and the registered versions.
    """
    root = tmp_path_factory.mktemp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    demo.use_local_registry(root)
    train = demo.make_customers(2_000, DATE, seed=7)
    model = demo.train_classifier(train, trees=15)
    sklearn_version, onnx_version = demo.register_models(model, train.head(50))
    yield {"model": model, "sklearn": sklearn_version, "onnx": onnx_version, "root": root}
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def customers() -> dict[dt.date, pd.DataFrame]:
    """The input rows of two dates."""
    return {date: demo.make_customers(ROWS, date, seed=1) for date in (DATE, OTHER_DATE)}


@pytest.fixture(scope="session")
def input_dir(tmp_path_factory, customers) -> Path:
    """The two dates as hive-partitioned parquet, two files per date."""
    root = tmp_path_factory.mktemp("input")
    for date, frame in customers.items():
        demo.write_partitioned(frame, root, date, files=2)
    return root


def run_score(model_uri: str, input_path, output, *extra: str, date: dt.date = DATE) -> int:
    """Run ``scoring score`` in this process (on the test session's Spark) and return its exit code."""
    from scoring.cli import main

    return main(
        ["score", "--model-uri", model_uri, "--input", str(input_path), "--output", str(output),
         "--date", date.isoformat(), "--id-column", "customer_id", *extra]
    )  # fmt: skip


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """The demo model's feature columns of ``frame``."""
    return frame[list(demo.FEATURE_TYPES)]


@pytest.fixture(scope="session")
def aws():
    """moto's AWS server on 127.0.0.1; AWS_* variables point boto3, pyarrow and Airflow at it.

    Yields the server: ``aws.faults.lose_next("RunJobFlow")`` makes its next answer a 500 after
    moto carried the request out.
    """
    from moto_aws import MotoServer

    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {name: os.environ.get(name) for name in names}
    with MotoServer() as server:
        os.environ.update(
            AWS_ENDPOINT_URL=server.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
