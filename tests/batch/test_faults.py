"""Faults survived: a Python worker dies mid-task, the job is SIGKILLed before or during publishing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATE

from scoring import demo, faults
from scoring.cli import main
from scoring.dataset.publish import recover

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"
ROWS = 4_000


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault-input")
    demo.write_partitioned(demo.make_customers(ROWS, DATE, seed=11), root, DATE, files=4)
    return root


def score_args(input_dir, output, model_uri=CHAMPION) -> list[str]:
    return [
        "score", "--model-uri", model_uri, "--input", str(input_dir), "--output", str(output),
        "--date", DATE.isoformat(), "--id-column", "customer_id", "--batch-size", "100",
    ]  # fmt: skip


def snapshot(partition: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(partition.iterdir())}


def assert_every_row_once(output: Path, version: str) -> None:
    scored = pd.read_parquet(output / f"date={DATE}")
    expected = demo.make_customers(ROWS, DATE, seed=11)["customer_id"]
    assert len(scored) == ROWS and scored["customer_id"].is_unique
    assert set(scored["customer_id"]) == set(expected)
    assert set(scored["model_version"]) == {version}
    assert (output / f"date={DATE}" / "_SUCCESS").exists()


@pytest.mark.parametrize("executor", ["spark", "local"])
def test_python_worker_killed_mid_task_is_retried_every_row_once(
    spark, registry, big_input, tmp_path, report, monkeypatch, executor
):
    marker = tmp_path / "worker-killed"
    fault = f"kill-worker-once:{marker}"
    # Spark's Python workers take their environment from the UDF's (a new value starts new workers);
    # the local executor's workers, from the driver's when the run starts them.
    environment = spark.sparkContext.environment if executor == "spark" else os.environ
    monkeypatch.setitem(environment, faults.ENV, fault)
    output = tmp_path / "out"
    assert main([*score_args(big_input, output), "--executor", executor]) == 0

    assert marker.exists(), "no worker was killed"
    assert_every_row_once(output, registry["onnx"])
    manifest = json.loads((output / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["resources"]["executor"] == executor
    killed = f"Python worker killed mid-task ({executor} executor)"
    report(f"fault (a) | {killed}: {ROWS} ids scored, 0 missing, 0 duplicated")


def run_cli(args: list[str], fault: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_GATEWAY_PORT")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(
        [str(BIN / "scoring"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a SIGKILL reaches Spark's JVM too
    )


@pytest.fixture
def published(spark, registry, big_input, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """An output whose partition was published by the ONNX version."""
    output = tmp_path / "out"
    assert main(score_args(big_input, output)) == 0
    return output, snapshot(output / f"date={DATE}")


@pytest.mark.parametrize("point", ["before-publish", "mid-swap"])
def test_job_killed_while_publishing_leaves_the_old_partition_then_rerun_publishes(
    registry, big_input, published, point, report
):
    output, before = published
    job = run_cli(score_args(big_input, output, SKLEARN), fault=f"kill-driver:{point}")
    job.communicate(timeout=300)
    assert job.returncode == -signal.SIGKILL
    os.killpg(job.pid, signal.SIGKILL)  # Spark's JVM, if it outlived its driver

    partition = output / f"date={DATE}"
    assert list(output.glob("_staging/*")), "the killed run's staging should be left for the next run"
    if point == "before-publish":
        assert snapshot(partition) == before  # untouched, still published
    else:
        # Killed with the old partition moved aside: nothing half-written is visible, and the old
        # partition is restored exactly by the next run before it writes anything.
        assert not partition.exists()
        assert recover(str(output), f"date={DATE}")
        assert snapshot(partition) == before

    rerun = run_cli(score_args(big_input, output, SKLEARN))
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-2000:]
    assert_every_row_once(output, registry["sklearn"])
    manifest = json.loads((partition / "_manifest.json").read_text())
    assert manifest["counts"] == {"input": ROWS, "scored": ROWS, "rejected": 0}
    report(f"fault (b) | job SIGKILLed at {point}: old partition intact, rerun published {ROWS} ids once")


def test_job_killed_mid_write_leaves_the_old_partition(registry, big_input, published, report):
    output, before = published
    job = run_cli(score_args(big_input, output, SKLEARN), fault="slow-batches:0.05")
    deadline = time.monotonic() + 240
    # the write has started: Spark's committer's directory, or a file of an Arrow pass task's attempt
    while not (
        list(output.glob("_staging/*/data/*/_temporary")) or list(output.glob("_staging/*/_attempts/*"))
    ):
        assert job.poll() is None and time.monotonic() < deadline, "the write never started"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=60)

    assert snapshot(output / f"date={DATE}") == before
    assert list(output.glob("_staging/*")), "the killed run's staging should be left for the next run"

    rerun = run_cli(score_args(big_input, output, SKLEARN))
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-2000:]
    assert_every_row_once(output, registry["sklearn"])
    assert not list(output.glob("_staging/*"))
    report(f"fault (b) | job SIGKILLed mid-write: old partition intact, rerun published {ROWS} ids once")
