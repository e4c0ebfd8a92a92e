"""Fault (c): a Spark standalone cluster on 127.0.0.1 loses a worker mid-job; every row is scored once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATE

from scoring import demo, faults

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROWS = 20_000


def log_file(path: Path):
    return path.open("w")  # handed to a child process, which outlives this function


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT",)}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}", SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable
    )
    return env


def master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.load(response)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One master and two one-core workers, started with spark-class as the pip package allows."""
    root = tmp_path_factory.mktemp("cluster")
    port, ui_port = free_port(), free_port()
    spark_class = str(BIN / "spark-class")
    processes = {
        "master": subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui_port)],
            env=cluster_env(), stdout=subprocess.DEVNULL, stderr=log_file(root / "master.log"),
            start_new_session=True,
        )
    }  # fmt: skip
    for name in ("worker-1", "worker-2"):
        processes[name] = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
             "--memory", "1g", "--work-dir", str(root / name), "--webui-port", str(free_port()),
             f"spark://127.0.0.1:{port}"],
            env=cluster_env(), stdout=subprocess.DEVNULL, stderr=log_file(root / f"{name}.log"),
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: sum(w["state"] == "ALIVE" for w in master_state(ui_port)["workers"]) == 2,
            120,
            "2 workers",
        )
        yield {"url": f"spark://127.0.0.1:{port}", "ui": ui_port, "processes": processes, "root": root}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_worker_lost_mid_job_every_row_scored_once(cluster, registry, tmp_path, report):
    frame = demo.make_customers(ROWS, DATE, seed=21)
    demo.write_partitioned(frame, tmp_path / "in", DATE, files=8)
    output = tmp_path / "out"
    job = subprocess.Popen(
        [
            str(BIN / "spark-submit"), "--master", cluster["url"],
            "--conf", "spark.executor.memory=768m",
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", f"spark.executorEnv.{faults.ENV}=slow-batches:0.1",
            "--conf", "spark.ui.enabled=false",
            str(ROOT / "jobs" / "score.py"),
            "--model-uri", f"models:/{demo.MODEL_NAME}@champion",
            "--input", str(tmp_path / "in"), "--output", str(output),
            "--date", DATE.isoformat(), "--id-column", "customer_id", "--batch-size", "200",
        ],
        env=cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    worker = cluster["processes"]["worker-1"]
    executors = cluster["root"] / "worker-1"
    wait_for(
        # Spark's committer's directory, or a file of an Arrow pass task's attempt
        lambda: (
            list(output.glob("_staging/*/data/*/_temporary"))
            or list(output.glob("_staging/*/_attempts/*"))
            or job.poll() is not None
        ),
        240,
        "the scoring write to start",
    )
    if job.poll() is not None:
        # spark-submit merges the Python driver's stderr into its stdout
        pytest.fail(f"the job ended ({job.returncode}) before a worker was lost: {job.stdout.read()[-3000:]}")
    assert list(executors.glob("app-*/*")), "worker-1 ran no executor for the job"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    _, stderr = job.communicate(timeout=300)

    assert job.returncode == 0, stderr[-3000:]
    scored = pd.read_parquet(output / f"date={DATE}")
    assert len(scored) == ROWS and scored["customer_id"].is_unique
    assert set(scored["customer_id"]) == set(frame["customer_id"])
    assert "Lost executor" in stderr or "lost worker" in stderr.lower() or "ExecutorLost" in stderr
    report(f"fault (c) | standalone worker SIGKILLed mid-job: {ROWS} ids scored, 0 missing, 0 duplicated")
