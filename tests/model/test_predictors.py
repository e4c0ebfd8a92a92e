"""Backends and output mapping: unit tests, and multiclass and regression models through the job."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DATE
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from scoring import demo
from scoring.cli import main
from scoring.errors import ModelError
from scoring.model import predictors
from scoring.model.output import OutputSpec, scores_from_outputs
from scoring.model.predictors import OnnxPredictor, PyfuncPredictor, ScorerSpec, choose_backend
from scoring.model.resolve import resolve_model
from scoring.model.signature import Feature


def test_column_output_is_the_prediction():
    scores = scores_from_outputs([np.array([[1.5], [2.5]])], rows=2)
    assert scores.prediction.tolist() == [1.5, 2.5]
    assert scores.probability is None
    assert OutputSpec.of(scores) == OutputSpec("double", None)


def test_binary_probabilities_give_the_positive_class_and_argmax():
    scores = scores_from_outputs([np.array([[0.9, 0.1], [0.2, 0.8]])], rows=2)
    assert scores.prediction.tolist() == [0, 1]
    assert scores.probability.tolist() == [0.1, 0.8]
    assert OutputSpec.of(scores) == OutputSpec("long", "binary")


def test_label_and_multiclass_probabilities():
    labels = np.array(["a", "c"])
    matrix = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    scores = scores_from_outputs([labels, matrix], rows=2)
    assert scores.prediction.tolist() == ["a", "c"]
    assert scores.probability.shape == (2, 3)
    assert OutputSpec.of(scores) == OutputSpec("string", "multiclass")


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([np.zeros(3)], "returned 3 rows for a batch of 2 rows"),
        ([np.zeros(2), np.zeros(2)], "cannot map the model's outputs"),
        ([np.zeros((2, 2, 2))], "cannot map the model's outputs"),
    ],
)
def test_unmappable_outputs_are_refused(outputs, message):
    with pytest.raises(ModelError, match=message):
        scores_from_outputs(outputs, rows=2)


@pytest.mark.parametrize(
    ("requested", "is_onnx", "has_pyfunc", "expected"),
    [("auto", True, True, "onnx"), ("auto", False, True, "pyfunc"), ("pyfunc", True, True, "pyfunc")],
)
def test_choose_backend(requested, is_onnx, has_pyfunc, expected):
    assert choose_backend(requested, is_onnx, has_pyfunc) == expected


def test_bare_onnx_file_has_no_pyfunc():
    with pytest.raises(ModelError, match=r"a bare \.onnx file has no pyfunc"):
        choose_backend("pyfunc", True, False)


def test_onnx_runs_on_cpu_when_forced(registry, tmp_path):
    from scoring.model.predictors import load_predictor

    model = resolve_model(f"models:/{demo.MODEL_NAME}@champion", tmp_path)
    spec = ScorerSpec(model.local_path, model.fingerprint, "onnx", "cpu", 1, model.features, "model.onnx")
    assert load_predictor(spec, model.local_path).providers == ["CPUExecutionProvider"]


def _pretend_node_has_cuda(monkeypatch) -> None:
    """onnxruntime-gpu with broken CUDA libraries: CUDA listed as available, yet sessions fall back."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])


def test_cuda_forced_but_fallen_back_to_cpu_is_an_error(registry, tmp_path, monkeypatch):
    from scoring.model.predictors import load_predictor

    model = resolve_model(f"models:/{demo.MODEL_NAME}@champion", tmp_path)
    spec = ScorerSpec(model.local_path, model.fingerprint, "onnx", "cuda", 1, model.features, "model.onnx")
    _pretend_node_has_cuda(monkeypatch)
    with pytest.raises(
        ModelError, match=r"--device cuda, but ONNX Runtime could not start CUDA.*runs on CPU"
    ):
        load_predictor(spec, model.local_path)


def test_cuda_fallback_under_device_auto_warns_and_scores(registry, tmp_path, monkeypatch, caplog):
    from scoring.model.predictors import load_predictor

    model = resolve_model(f"models:/{demo.MODEL_NAME}@champion", tmp_path)
    spec = ScorerSpec(model.local_path, model.fingerprint, "onnx", "auto", 1, model.features, "model.onnx")
    _pretend_node_has_cuda(monkeypatch)
    predictor = load_predictor(spec, model.local_path)
    assert predictor.providers == ["CPUExecutionProvider"]
    assert any("could not start CUDA" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def _three_class_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    label = np.argmax(x @ rng.normal(size=(3, 3)), axis=1)
    return pd.DataFrame({"id": np.arange(rows), "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "label": label})


def test_multiclass_onnx_with_one_input_per_column(spark, tmp_path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame = _three_class_frame(300)
    x = frame[["x1", "x2", "x3"]]
    # The column transformer gives the ONNX graph one named input per column.
    model = make_pipeline(
        ColumnTransformer([("features", "passthrough", list(x.columns))]),
        LogisticRegression(max_iter=500),
    ).fit(x, frame["label"])
    graph = convert_sklearn(
        model,
        initial_types=[(name, FloatTensorType([None, 1])) for name in ("x1", "x2", "x3")],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    (tmp_path / "multiclass.onnx").write_bytes(graph.SerializeToString())
    demo.write_partitioned(frame.drop(columns="label"), tmp_path / "input", DATE)

    resolved = resolve_model(str(tmp_path / "multiclass.onnx"), tmp_path / "dl")
    assert resolved.features == (Feature("x1", "float"), Feature("x2", "float"), Feature("x3", "float"))

    code = main(
        ["score", "--model-uri", str(tmp_path / "multiclass.onnx"), "--input", str(tmp_path / "input"),
         "--output", str(tmp_path / "out"), "--date", DATE.isoformat()]
    )  # fmt: skip
    assert code == 0
    out = pd.read_parquet(tmp_path / "out" / f"date={DATE}").sort_values("id")
    np.testing.assert_allclose(np.stack(out["probability"].to_numpy()), model.predict_proba(x), atol=1e-5)
    assert (out["prediction"].to_numpy() == model.predict(x)).all()
    # No ZipMap in this export: the class labels come from the classifier node of the graph.
    manifest = json.loads((tmp_path / "out" / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["model"]["scores"]["classes"] == [_plain(c) for c in model.classes_]


def test_an_onnx_classifiers_labels_handed_over_are_not_read_from_the_graph_again(tmp_path, monkeypatch):
    from skl2onnx import to_onnx

    frame = _three_class_frame(200)
    x = frame[["x1", "x2", "x3"]].to_numpy(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, frame["label"] + 10)  # labels 10, 11 and 12
    path = tmp_path / "classifier.onnx"
    path.write_bytes(to_onnx(model, x[:1], options={"zipmap": False}, target_opset=17).SerializeToString())
    features = tuple(Feature(name, "float") for name in ("x1", "x2", "x3"))
    read = OnnxPredictor(str(path), features, "cpu", 1)
    assert read.classes == (10, 11, 12)

    def unread(path: str) -> None:
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(predictors, "graph_classes", unread)
    handed = OnnxPredictor(str(path), features, "cpu", 1, classes=read.classes)
    scores = handed.predict(frame[["x1", "x2", "x3"]].astype(np.float32))
    assert scores.prediction.tolist() == model.predict(x).tolist()
    assert scores.classes == (10, 11, 12)
    # A graph with no classifier node is read once too: ``()`` says so.
    assert OnnxPredictor(str(path), features, "cpu", 1, classes=()).classes == ()


def test_regression_pyfunc_writes_prediction_only(spark, tmp_path):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    frame = _three_class_frame(200).assign(target=lambda f: 2 * f["x1"] - f["x3"])
    x = frame[["x1", "x2", "x3"]]
    model = LinearRegression().fit(x, frame["target"])
    mlflow.sklearn.save_model(
        model, tmp_path / "regressor", signature=infer_signature(x), serialization_format="cloudpickle"
    )
    demo.write_partitioned(frame, tmp_path / "input", DATE)

    code = main(
        ["score", "--model-uri", str(tmp_path / "regressor"), "--input", str(tmp_path / "input"),
         "--output", str(tmp_path / "out"), "--date", DATE.isoformat(), "--batch-size", "64"]
    )  # fmt: skip
    assert code == 0
    out = pd.read_parquet(tmp_path / "out" / f"date={DATE}").sort_values("id")
    assert "probability" not in out.columns
    np.testing.assert_allclose(out["prediction"], model.predict(x), rtol=1e-6)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _tied_data(rows: int = 400, classes: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """Integer features with labels drawn at random: many rows tie between their classes."""
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.integers(0, 3, rows).astype(float), "b": rng.normal(size=rows)})
    return x, rng.integers(0, classes, rows)


ARGMAX_MODELS = {
    "random forest": lambda: RandomForestClassifier(n_estimators=5, max_depth=2, random_state=0),
    "gradient boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
    "histogram gradient boosting": lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    "logistic regression": lambda: LogisticRegression(),
    "k neighbours": lambda: KNeighborsClassifier(n_neighbors=4),
    "naive Bayes": lambda: GaussianNB(),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    "SVC with Platt scaling (predict is called)": lambda: SVC(probability=True, random_state=0),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", list(ARGMAX_MODELS))
def test_labels_equal_the_classifiers_own_predict(name, classes):
    x, y = _tied_data(classes=classes)
    model = ARGMAX_MODELS[name]().fit(x, y)

    scores = PyfuncPredictor.of_classifier(model).predict(x)

    np.testing.assert_array_equal(scores.prediction, model.predict(x))
    np.testing.assert_allclose(
        scores.probability, model.predict_proba(x)[:, 1] if classes == 2 else model.predict_proba(x)
    )


def test_a_tie_takes_the_label_predict_gives():
    # Every leaf is balanced: each row's raw score is exactly 0 and its probabilities 0.5 and 0.5.
    # The most probable class by argmax is the first; GradientBoostingClassifier.predict says the second.
    x = pd.DataFrame({"a": [0.0, 0.0, 1.0, 1.0]})
    model = GradientBoostingClassifier(n_estimators=1, max_depth=1, init="zero").fit(x, [0, 1, 0, 1])
    assert set(model.predict(x)) == {1} and np.all(model.predict_proba(x) == 0.5)

    scores = PyfuncPredictor.of_classifier(model).predict(x)

    np.testing.assert_array_equal(scores.prediction, [1, 1, 1, 1])


def test_labels_from_probabilities_call_predict_only_for_ties(monkeypatch):
    # The first leaf is balanced (a tie, 4 rows), the second is not.
    x = pd.DataFrame({"a": [0.0] * 4 + [1.0] * 4})
    model = DecisionTreeClassifier(max_depth=1).fit(x, [0, 1, 0, 1, 1, 1, 1, 0])
    asked = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda rows: asked.append(len(rows)) or predict(rows))

    scores = PyfuncPredictor.of_classifier(model).predict(x)

    assert asked == [4]
    np.testing.assert_array_equal(scores.prediction, predict(x))
