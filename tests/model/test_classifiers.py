"""Models logged the ordinary way (no ``pyfunc_predict_fn``), registered and scored through the job.

Classifiers get their own ``predict_proba`` and ``predict`` whatever pyfunc's ``predict`` returns; an
skl2onnx export with its default ZipMap output gives the same columns; ``--scores`` picks the columns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DATE

from scoring import demo
from scoring.cli import main

ROWS = 300


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, 3)).astype(np.float32)
    logit = x @ np.array([1.5, -2.0, 0.5])
    return pd.DataFrame(
        {
            "id": np.arange(ROWS, dtype=np.int64),
            "x1": x[:, 0],
            "x2": x[:, 1],
            "x3": x[:, 2],
            "default": (logit + rng.normal(size=ROWS) > 0).astype(np.int64),
            "band": np.array(["high", "low", "mid"])[np.digitize(logit, [-1.0, 1.0])],
            "amount": 3 * x[:, 0] - x[:, 2] + 10,
        }
    )


@pytest.fixture(scope="module")
def features(frame) -> pd.DataFrame:
    return frame[["x1", "x2", "x3"]]


@pytest.fixture(scope="module")
def input_path(frame, tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier-input")
    demo.write_partitioned(frame[["id", "x1", "x2", "x3"]], root, DATE, files=2)
    return root


def _log(flavor: str, model, features: pd.DataFrame, name: str) -> str:
    """Log and register ``model`` with a signature and nothing else, as most registries are filled."""
    import mlflow
    from mlflow.models import infer_signature

    output = model.predict(features) if flavor == "sklearn" else None
    with mlflow.start_run(run_name=name):
        if flavor == "sklearn":
            info = mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(features, output), registered_model_name=name
            )
        else:
            info = mlflow.onnx.log_model(
                model, name="model", signature=infer_signature(features), registered_model_name=name
            )
    return f"models:/{name}/{info.registered_model_version}"


@pytest.fixture(scope="module")
def models(registry, frame, features) -> dict:
    """Four models in the test session's SQLite registry, each logged the ordinary way."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    binary = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, frame["default"])
    multiclass = LogisticRegression(max_iter=500).fit(features, frame["band"])
    regressor = Ridge().fit(features, frame["amount"])
    # skl2onnx's defaults: a label output and a ZipMap (a list of {class: probability}).
    graph = convert_sklearn(binary, initial_types=[("features", FloatTensorType([None, 3]))], target_opset=17)
    return {
        "binary": (binary, _log("sklearn", binary, features, "ordinary-binary")),
        "multiclass": (multiclass, _log("sklearn", multiclass, features, "ordinary-multiclass")),
        "regressor": (regressor, _log("sklearn", regressor, features, "ordinary-regressor")),
        "zipmap": (graph, _log("onnx", graph, features, "ordinary-zipmap")),
    }


def score(model_uri: str, input_path, output, *extra: str) -> tuple[pd.DataFrame, dict]:
    code = main(
        ["score", "--model-uri", model_uri, "--input", str(input_path), "--output", str(output),
         "--date", DATE.isoformat(), *extra]
    )  # fmt: skip
    assert code == 0
    partition = output / f"date={DATE}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    return pd.read_parquet(partition).sort_values("id").reset_index(drop=True), manifest


def test_binary_pipeline_scores_its_own_predict_proba_and_labels(
    spark, models, features, input_path, tmp_path
):
    model, uri = models["binary"]
    out, manifest = score(uri, input_path, tmp_path)

    np.testing.assert_allclose(out["probability"], model.predict_proba(features)[:, 1], atol=1e-6)
    assert (out["prediction"].to_numpy() == model.predict(features)).all()
    assert manifest["model"]["scores"] == {
        "requested": "auto",
        "prediction_type": "long",
        "probability": "binary",
        "methods": {"prediction": "predict", "probability": "predict_proba"},
        "classes": [0, 1],
    }


def test_three_classes_with_string_labels(spark, models, features, input_path, tmp_path):
    model, uri = models["multiclass"]
    out, manifest = score(uri, input_path, tmp_path)

    np.testing.assert_allclose(
        np.stack(out["probability"].to_numpy()), model.predict_proba(features), atol=1e-6
    )
    assert out["prediction"].tolist() == model.predict(features).tolist()
    assert manifest["model"]["scores"]["classes"] == ["high", "low", "mid"]
    assert manifest["model"]["scores"]["prediction_type"] == "string"


def test_regressor_scores_its_predict_and_has_no_probability(spark, models, features, input_path, tmp_path):
    model, uri = models["regressor"]
    out, manifest = score(uri, input_path, tmp_path)

    assert "probability" not in out.columns
    np.testing.assert_allclose(out["prediction"], model.predict(features), rtol=1e-6)
    assert manifest["model"]["scores"]["methods"] == {"prediction": "pyfunc predict"}


def test_onnx_export_with_zipmap_equals_onnxruntime(spark, models, features, input_path, tmp_path):
    import onnxruntime as ort

    graph, uri = models["zipmap"]
    out, manifest = score(uri, input_path, tmp_path)

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, zipmap = session.run(None, {"features": features.to_numpy(np.float32)})
    np.testing.assert_allclose(out["probability"], [row[1] for row in zipmap], atol=1e-6)
    assert (out["prediction"].to_numpy() == labels).all()
    assert manifest["model"]["backend"] == "onnx"
    assert manifest["model"]["scores"]["classes"] == [0, 1]
    assert manifest["model"]["scores"]["methods"] == {
        "prediction": "onnx output output_label",
        "probability": "onnx output output_probability",
    }


def test_scores_label_writes_labels_only(spark, models, features, input_path, tmp_path):
    model, uri = models["binary"]
    out, manifest = score(uri, input_path, tmp_path, "--scores", "label")

    assert "probability" not in out.columns
    assert (out["prediction"].to_numpy() == model.predict(features)).all()
    assert manifest["model"]["scores"]["methods"] == {"prediction": "predict"}


def test_scores_probability_refuses_a_regressor(spark, models, input_path, tmp_path, capsys):
    _, uri = models["regressor"]
    code = main(
        ["score", "--model-uri", uri, "--input", str(input_path), "--output", str(tmp_path),
         "--date", DATE.isoformat(), "--scores", "probability"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: --scores probability, but the model gives no class probabilities")
    assert not (tmp_path / f"date={DATE}").exists()
