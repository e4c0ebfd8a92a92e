"""The two entry points as a user starts them: spark-submit and the ``scoring`` console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import DATE, ROWS

from scoring import demo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def user_env() -> dict[str, str]:
    """A shell's environment, as after activating the virtualenv (MLFLOW_TRACKING_URI included)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_GATEWAY_PORT")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_spark_submit_scores_a_partition(registry, input_dir, tmp_path):
    output = tmp_path / "out"
    command = [
            str(BIN / "spark-submit"),
            "--master", "local[2]",
            "--conf", "spark.ui.enabled=false",
            str(ROOT / "jobs" / "score.py"),
            "--model-uri", f"models:/{demo.MODEL_NAME}@champion",
            "--input", str(input_dir),
            "--output", str(output),
            "--date", DATE.isoformat(),
            "--id-column", "customer_id",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env={**user_env(), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scored {ROWS:,} of {ROWS:,} rows (0 rejected) for date={DATE}" in result.stdout
    scored = pd.read_parquet(output / f"date={DATE}")
    assert len(scored) == ROWS and scored["customer_id"].is_unique
    manifest = json.loads((output / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["model"]["version"] == registry["onnx"]


def test_console_script_fails_fast_on_an_unknown_alias(registry, input_dir, tmp_path):
    command = [
            str(BIN / "scoring"), "score",
            "--model-uri", f"models:/{demo.MODEL_NAME}@retired",
            "--input", str(input_dir),
            "--output", str(tmp_path / "out"),
            "--date", DATE.isoformat(),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "retired" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_publishes_a_directory_and_a_table(tmp_path, monkeypatch):
    """``scoring demo`` as ``make demo`` runs it (fewer rows), and the table lines it prints, as printed."""
    import pyarrow.parquet as pq

    from scoring.dataset.catalog import open_catalog

    workdir = tmp_path / "demo-workdir"
    env = {
        k: v for k, v in user_env().items() if not k.startswith("PYICEBERG_") and k != "MLFLOW_TRACKING_URI"
    }
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    command = [
        str(BIN / "scoring"),
        "demo",
        "--workdir",
        str(workdir),
        "--rows",
        "2000",
        "--master",
        "local[2]",
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    # The directory and the table hold the same rows of both dates.
    monkeypatch.setenv("PYICEBERG_HOME", str(workdir))
    table = open_catalog(demo.CATALOG).load_table(demo.TABLE)
    in_table = table.scan(selected_fields=("customer_id", "probability", "date")).to_pandas()
    in_directory = pq.read_table(workdir / "output", partitioning="hive").to_pandas()
    for date in demo.DATES:
        assert (workdir / "output" / f"date={date}" / "_SUCCESS").exists()
        rows = in_table[in_table["date"] == date].sort_values("customer_id")
        expected = in_directory[in_directory["date"].astype(str) == date.isoformat()].sort_values(
            "customer_id"
        )
        assert 0 < len(rows) == len(expected) <= 2000
        assert rows["customer_id"].tolist() == expected["customer_id"].tolist()
        assert rows["probability"].tolist() == expected["probability"].tolist()
    summaries = [s.summary.additional_properties for s in table.snapshots()]
    assert [s["scoring.date"] for s in summaries] == [d.isoformat() for d in demo.DATES]

    # Its per-day query, printed with its answer, and the lines to go on, run as a user copies them.
    per_day = result.stdout.split("through pyiceberg and DuckDB:")[1].split("Try it:")[0]
    for date in demo.DATES:
        assert re.search(rf"{date} │\s+{len(in_table[in_table['date'] == date])} │", per_day), per_day
    try_it = result.stdout.split("Try it:")[1].splitlines()
    assert (
        f"  export PYICEBERG_HOME={workdir}    # its .pyiceberg.yaml configures the catalog 'demo'" in try_it
    )
    lines = [line.split("    # ")[0].strip() for line in try_it]
    user = {**env, "PYICEBERG_HOME": str(workdir)}
    query = next(line for line in lines if line.startswith('.venv/bin/python -c "from pyiceberg'))
    history = next(line for line in lines if line.startswith(".venv/bin/scoring history"))
    answers = {}
    for line in (query, history):
        run = subprocess.run(
            line.replace(".venv/bin/", f"{BIN}/"),
            shell=True,
            env=user,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        answers[line] = run.stdout
    assert all(date.isoformat() in answers[query] for date in demo.DATES)
    assert f"--table {demo.TABLE} --catalog {demo.CATALOG} --date {demo.DATES[0]}" in history
    (version,) = [line for line in answers[history].splitlines() if line.startswith("*")]
    assert str(table.snapshots()[0].snapshot_id) in version and f"{demo.MODEL_NAME}/" in version
