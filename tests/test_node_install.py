"""An EMR node's virtualenv, built as the bootstrap builds it, scores as the models themselves do.

EMR 7.9 brings its own Spark (3.5); the bootstrap installs ``emr/requirements-node.txt`` and the wheel
with ``--no-deps``. This builds that venv with pip's pyspark of the same Spark line standing in for
EMR's, then runs ``spark-submit jobs/score.py`` from it on staged copies of two registered models (an
sklearn pipeline logged the ordinary way and the ONNX model), with no registry, as a node would:
each model through both passes (Spark's, which a repeated id calls for, and the Arrow pass, forced
with ``--engine arrow`` on the input without it), so both run on EMR's Spark line. Then the ONNX model
publishes through both passes to an Iceberg table (``--table``) in a Glue catalog configured, as the
DAG configures it on EMR, by pyiceberg's variables only (moto's Glue on 127.0.0.1, the warehouse on the
local disk, which local Spark writes), and the table is read back with pyiceberg. It is the slow test
of the suite (a venv build), so it is one test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATE, features

from scoring import demo
from scoring.dataset.catalog import open_catalog
from scoring.dataset.table import rejects_identifier
from scoring.orchestration.artifacts import build_wheel, stage_model

ROOT = Path(__file__).resolve().parents[1]
# EMR 7.9's Spark; pip's pyspark of that version stands in for it.
NODE_PYSPARK = "pyspark==3.5.5"
ROWS = 200


@pytest.fixture(scope="module")
def node_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("node") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run(
        [*pip, NODE_PYSPARK, "-r", str(ROOT / "emr" / "requirements-node.txt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The node's own requirements agree; the wheel then goes in without its declared dependencies
    # (pip's pyspark among them), as the bootstrap installs it.
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    result = subprocess.run([*pip, "--no-deps", str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def _ordinary_sklearn_model(frame: pd.DataFrame) -> tuple[object, str]:
    """A pipeline registered with a signature and nothing else (no pyfunc_predict_fn)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features(frame)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, frame["defaulted"])
    with mlflow.start_run(run_name="node-install"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            registered_model_name="node-sklearn",
        )
    return model, f"models:/node-sklearn/{info.registered_model_version}"


def _spark_submit(
    venv: Path, model_dir: str, input_path: Path, where: list[str], *flags: str
) -> subprocess.CompletedProcess:
    """``spark-submit jobs/score.py`` on the node's venv; ``where`` is ``--output DIR`` or ``--table ...``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PYSPARK_", "SPARK_", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        PYSPARK_PYTHON=str(venv / "bin" / "python"),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    command = [str(venv / "bin" / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
               str(ROOT / "jobs" / "score.py"), "--model-uri", model_dir, "--input", str(input_path),
               *where, "--date", DATE.isoformat(), "--id-column", "customer_id", *flags]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_node_venv_scores_staged_models_like_the_models_themselves(
    node_venv, registry, aws, tmp_path, monkeypatch, report
):
    import onnxruntime as ort
    from pyiceberg.expressions import EqualTo

    frame = demo.make_customers(ROWS, DATE, seed=5)
    # A copy of row 0 without its income (rejected: null feature) in both inputs; in the first, an
    # exact copy of row 2 too (one of the two rejected: repeated id; either scores the same), which
    # sends a run to Spark's pass.
    null_income = frame.iloc[[0]].copy()
    null_income["income"] = np.nan
    repeated = frame.iloc[[2]]
    for name, extra in (("dup", [null_income, repeated]), ("nodup", [null_income])):
        demo.write_partitioned(pd.concat([frame, *extra], ignore_index=True), tmp_path / name, DATE)
    runs = {
        "spark": ("dup", (), {"null_feature:income": 1, "duplicate_id:customer_id": 1}),
        "arrow": ("nodup", ("--engine", "arrow"), {"null_feature:income": 1}),
    }

    sklearn_model, sklearn_uri = _ordinary_sklearn_model(frame)
    onnx_uri = f"models:/{demo.MODEL_NAME}/{registry['onnx']}"
    expected_rows = frame.sort_values("customer_id")
    x = features(expected_rows)
    onnx_model = resolve_onnx_session(onnx_uri, tmp_path / "onnx-registry", ort)
    expected = {
        "sklearn": sklearn_model.predict_proba(x)[:, 1],
        "onnx": onnx_model.run(None, {"features": x.to_numpy(np.float32)})[1][:, 1],
    }

    staged = {}
    for name, uri in (("sklearn", sklearn_uri), ("onnx", onnx_uri)):
        staged[name] = stage_model(uri, str(tmp_path / f"{name}-staged"))
        for engine, (input_name, flags, reasons) in runs.items():
            output = tmp_path / f"{name}-{engine}"
            result = _spark_submit(
                node_venv, staged[name], tmp_path / input_name, ["--output", str(output)], *flags
            )
            assert result.returncode == 0, result.stderr[-4000:]

            partition = output / f"date={DATE}"
            manifest = json.loads((partition / "_manifest.json").read_text())
            assert manifest["spark_version"].startswith("3.5.")
            assert manifest["resources"]["engine"] == engine
            assert manifest["model"]["pinned_uri"] == uri
            rejected = sum(reasons.values())
            assert manifest["counts"] == {"input": ROWS + rejected, "scored": ROWS, "rejected": rejected}
            assert manifest["rejects"]["by_reason"] == reasons
            out = pd.read_parquet(partition).sort_values("customer_id")
            assert out["customer_id"].tolist() == expected_rows["customer_id"].tolist()
            np.testing.assert_allclose(out["probability"], expected[name], atol=1e-6)
            report(
                f"node venv | {NODE_PYSPARK}, {engine} pass, scored {name} model {uri}: "
                f"{ROWS} rows + {rejected} rejects, as the model"
            )

    # The table: Glue configured by variables alone, as the DAG's step configures it on EMR.
    glue = {"TYPE": "glue", "WAREHOUSE": f"file://{tmp_path}/warehouse", "GLUE__REGION": "us-east-1",
            "GLUE__ENDPOINT": aws.endpoint, "GLUE__ACCESS_KEY_ID": "testing",
            "GLUE__SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    for key, value in glue.items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__NODE__{key}", value)
    table_flags = ["--table", "node.scores", "--catalog", "node"]
    for engine, (input_name, flags, reasons) in runs.items():
        result = _spark_submit(node_venv, staged["onnx"], tmp_path / input_name, table_flags, *flags)
        assert result.returncode == 0, result.stderr[-4000:]

        scores = open_catalog("node").load_table("node.scores")  # a re-run replaces the date
        summary = scores.current_snapshot().summary
        manifest = json.loads(Path(summary["scoring.manifest"].removeprefix("file://")).read_text())
        assert manifest["spark_version"].startswith("3.5.") and summary["scoring.engine"] == engine
        rejected = sum(reasons.values())
        assert json.loads(summary["scoring.rejects-by-reason"]) == reasons
        date = EqualTo("date", DATE.isoformat())
        out = scores.scan(row_filter=date).to_pandas().sort_values("customer_id")
        assert out["customer_id"].tolist() == expected_rows["customer_id"].tolist()
        np.testing.assert_allclose(out["probability"], expected["onnx"], atol=1e-6)
        rejects = open_catalog("node").load_table(rejects_identifier("node.scores"))
        assert len(rejects.scan(row_filter=date).to_arrow()) == rejected
        report(
            f"node venv | {NODE_PYSPARK}, {engine} pass, published the onnx model to an Iceberg table in "
            f"Glue (moto): {ROWS} rows + {rejected} rejects, read back by pyiceberg, as the model"
        )


def resolve_onnx_session(uri: str, download_dir: Path, ort):
    """onnxruntime's own session on the registered ONNX graph, for the expected probabilities."""
    from scoring.model.resolve import resolve_model

    model = resolve_model(uri, download_dir)
    return ort.InferenceSession(model.onnx_file, providers=["CPUExecutionProvider"])
