"""The two entry points as a user starts them: spark-submit and the ``scoring`` console script."""

from __future__ import annotations

import json
import os
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
