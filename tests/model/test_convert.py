"""``scoring convert``: MLflow scikit-learn models exported to ONNX, parity measured on real rows.

Every conversion here is a real one (skl2onnx, ONNX Runtime, dynamic quantization, the SQLite registry of
the test session); parity is measured through the job's own predictors, and refusals are real ones.
"""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DATE
from conftest import features as demo_features

from scoring import demo
from scoring.cli import main
from scoring.errors import InputError, ModelError
from scoring.model import convert, export
from scoring.model.parity import onnx_predictor, written_columns
from scoring.model.predictors import ScorerSpec, load_predictor
from scoring.model.resolve import resolve_model
from scoring.model.rows import scorable_rows
from scoring.model.signature import Feature

ROWS = 400
FLOATS = ["x1", "x2", "x3"]
DOUBLES = ["d1", "d2", "d3"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(ROWS, 3))
    logit = x @ np.array([1.5, -2.0, 0.5])
    return pd.DataFrame(
        {
            "id": np.arange(ROWS, dtype=np.int64),
            **{name: x[:, i].astype(np.float32) for i, name in enumerate(FLOATS)},
            **{name: x[:, i] * 100 for i, name in enumerate(DOUBLES)},
            "default": (logit + rng.normal(size=ROWS) > 0).astype(np.int64),
            "amount": 300 * x[:, 0] - 100 * x[:, 2] + 1_000,
            "band": np.array(["high", "low", "mid"])[np.digitize(logit, [-1.0, 1.0])],
        }
    )


@pytest.fixture(scope="module")
def input_path(frame, tmp_path_factory):
    root = tmp_path_factory.mktemp("convert-input")
    demo.write_partitioned(frame[["id", *FLOATS, *DOUBLES, "band"]], root, DATE, files=2)
    return root


def _log(model, features: pd.DataFrame, name: str, input_example: bool = False) -> str:
    """Log and register ``model`` as sklearn with a signature, as a training job would."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    with mlflow.start_run(run_name=name), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features)),
            input_example=features.head(20) if input_example else None,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            registered_model_name=name,
        )
    return f"models:/{name}/{info.registered_model_version}"


@pytest.fixture(scope="module")
def models(registry, frame) -> dict:
    """Models trained here, registered in the test session's SQLite registry."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    floats, doubles = frame[FLOATS], frame[DOUBLES]
    logistic = make_pipeline(StandardScaler(), LogisticRegression()).fit(floats, frame["default"])
    ridge = Ridge().fit(doubles, frame["amount"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0)
        mlp.fit(floats, frame["default"])
        mlp_regressor = MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=500, random_state=0)
        mlp_regressor.fit(floats, frame["amount"] / 1_000)
    return {
        "mlp_regressor": (mlp_regressor, _log(mlp_regressor, floats, "convert-mlp-regressor")),
        "logistic": (logistic, _log(logistic, floats, "convert-logistic", input_example=True)),
        "ridge": (ridge, _log(ridge, doubles, "convert-ridge")),
        "mlp": (mlp, _log(mlp, floats, "convert-mlp")),
    }


def _convert(*flags: str) -> int:
    return main(["convert", *flags])


def _registered(stdout: str) -> str:
    match = re.search(r"^registered (models:/\S+/\d+)", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def _version_tags(uri: str) -> dict:
    import mlflow

    name, version = uri.removeprefix("models:/").rsplit("/", 1)
    return mlflow.MlflowClient().get_model_version(name, version).tags


def _versions(name: str) -> list:
    import mlflow

    return mlflow.MlflowClient().search_model_versions(f"name = '{name}'")


def test_registered_classifier_converts_and_registers_with_its_signature(
    registry, input_dir, customers, tmp_path, capsys, report
):
    import mlflow

    source_uri = f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"
    code = _convert("--model-uri", source_uri, "--input", str(input_dir), "--register", "credit-risk-onnx")
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"sample: 800 rows (the first 800 of {input_dir})" in out
    assert (
        "exported in float32: ONNX Runtime cannot run GradientBoostingClassifier in double precision" in out
    )
    parity = re.search(r"parity of the export: (max \|diff\| of probability (\S+) .*)", out)
    assert parity and float(parity.group(2)) <= 1e-5, out
    assert "labels agree on 100.0000%" in parity.group(1)
    assert re.search(
        r"speed \(800 rows, best of 5\+ runs, .*\): source [\d,]+ rows/s, ONNX [\d,]+ rows/s", out
    )
    report(f"convert: {source_uri} (GradientBoosting, float32 export): {parity.group(1)}")

    registered = _registered(out)
    source_info, onnx_info = (
        mlflow.models.get_model_info(source_uri),
        mlflow.models.get_model_info(registered),
    )
    assert onnx_info.signature == source_info.signature
    assert onnx_info.metadata["feature_ranges"] == demo.FEATURE_RANGES
    assert "onnx" in onnx_info.flavors
    tags = _version_tags(registered)
    assert tags["converted_from"] == source_uri
    assert tags["quantized"] == "false"
    assert float(tags["max_abs_diff"]) == pytest.approx(float(parity.group(2)), rel=1e-2)
    assert tags["parity_rows"] == "800"

    # The registered version scores through the job's predictors with the source's columns.
    source = resolve_model(source_uri, tmp_path)
    exported = resolve_model(registered, tmp_path)
    assert exported.is_onnx and exported.features == source.features  # ranges included
    rows = scorable_rows(demo_features(customers[DATE]), source.features)
    spec = ScorerSpec(
        exported.local_path,
        exported.fingerprint,
        "onnx",
        "cpu",
        1,
        exported.features,
        exported.relative_onnx_file,
    )
    _, got = written_columns(load_predictor(spec, exported.local_path), rows)
    pyfunc = ScorerSpec(source.local_path, source.fingerprint, "pyfunc", "cpu", 1, source.features)
    _, want = written_columns(load_predictor(pyfunc, source.local_path), rows)
    assert list(got.columns) == list(want.columns) == ["prediction", "probability"]
    assert got["prediction"].dtype == want["prediction"].dtype
    np.testing.assert_allclose(got["probability"], want["probability"], atol=1e-5)
    assert (got["prediction"] == want["prediction"]).all()


def test_regressor_with_double_features_converts_in_double(models, frame, input_path, tmp_path):
    model, uri = models["ridge"]
    lines: list[str] = []
    result = convert.convert_model(
        uri, input_path=str(input_path), output=str(tmp_path / "ridge.onnx"), echo=lines.append
    )

    assert result.export.dtype == "double"
    assert result.parity.measure == "prediction"
    assert result.parity.label_agreement is None
    assert result.parity.difference < 1e-9
    assert any(line.startswith("parity of the export: max |diff| of prediction") for line in lines)
    assert result.output == str(tmp_path / "ridge.onnx") and result.registered_uri is None
    # The bare file scores as the model does; its one matrix input needs the feature names.
    assert any(f"--features {','.join(DOUBLES)}" in line for line in lines)
    features = tuple(Feature(name, "double") for name in DOUBLES)
    scores = onnx_predictor(tmp_path / "ridge.onnx", features).predict(frame[DOUBLES])
    np.testing.assert_allclose(scores.prediction, model.predict(frame[DOUBLES]), rtol=1e-12)


def test_registered_regressor_quantizes_registers_with_its_signature_and_is_refused_above_tolerance(
    models, input_path, capsys, report
):
    import mlflow

    _, uri = models["mlp_regressor"]
    flags = ["--model-uri", uri, "--input", str(input_path)]
    assert _convert(*flags, "--tolerance", "0", "--register", "refused-regressor") == 1
    refused = capsys.readouterr()
    assert "above --tolerance 0: nothing registered or written" in refused.err.strip().splitlines()[-1]
    assert _versions("refused-regressor") == []

    code = _convert(*flags, "--quantize", "--tolerance", "0.5", "--register", "convert-mlp-regressor-onnx")
    out = capsys.readouterr().out
    assert code == 0, out
    export = float(re.search(r"parity of the export: max \|diff\| of prediction (\S+)", out).group(1))
    quantized = float(
        re.search(r"parity of the quantized export: max \|diff\| of prediction (\S+)", out).group(1)
    )
    assert 0 < export < 1e-4 and export < quantized < 0.5  # float32, then int8 weights
    speed = re.search(r"quantized vs export: speed [\d,]+ vs [\d,]+ rows/s \(\S+x\).*", out)
    assert speed, out
    report(f"convert: MLPRegressor quantized: {speed.group(0)}")

    registered = _registered(out)
    assert mlflow.models.get_model_info(registered).signature == mlflow.models.get_model_info(uri).signature
    tags = _version_tags(registered)
    assert tags["converted_from"] == uri and tags["quantized"] == "true"
    assert float(tags["max_abs_diff"]) == pytest.approx(quantized, rel=1e-2)


def test_a_text_feature_gets_one_input_per_column(registry, frame, input_path, tmp_path):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ["x1", "x2", "band"]
    model = make_pipeline(
        make_column_transformer((StandardScaler(), ["x1", "x2"]), (OneHotEncoder(), ["band"])),
        LogisticRegression(),
    ).fit(frame[columns], frame["default"])
    uri = _log(model, frame[columns], "convert-text")
    result = convert.convert_model(
        uri, input_path=str(input_path), output=str(tmp_path / "text.onnx"), echo=lambda _: None
    )

    assert result.export.inputs == ("x1: float[None, 1]", "x2: float[None, 1]", "band: string[None, 1]")
    assert result.parity.measure == "probability" and result.parity.difference < 1e-5
    assert result.parity.label_agreement == 1.0


def test_float32_difference_above_the_tolerance_is_refused(models, input_path, capsys):
    _, uri = models["logistic"]
    code = _convert(
        "--model-uri", uri, "--input", str(input_path), "--tolerance", "0", "--register", "refused"
    )
    captured = capsys.readouterr()

    assert code == 1
    difference = float(
        re.search(r"parity of the export: max \|diff\| of probability (\S+)", captured.out).group(1)
    )
    assert difference > 0  # float32 arithmetic against scikit-learn's float64
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f"error: the ONNX export of {uri} is off by ")
    assert error.endswith("above --tolerance 0: nothing registered or written")
    assert _versions("refused") == []


def test_quantized_mlp_is_measured_and_registered(models, input_path, tmp_path, capsys, report):
    import onnx

    _, uri = models["mlp"]
    code = _convert(
        "--model-uri", uri, "--input", str(input_path), "--quantize", "--tolerance", "0.5",
        "--register", "convert-mlp-onnx",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out

    assert re.search(r"quantize: int8 weights: replaced 3 MatMul by .*3 MatMulInteger", out), out
    export = float(re.search(r"parity of the export: max \|diff\| of probability (\S+)", out).group(1))
    quantized = float(
        re.search(r"parity of the quantized export: max \|diff\| of probability (\S+)", out).group(1)
    )
    assert export < 1e-5 < quantized < 0.5
    speed = re.search(r"quantized vs export: speed [\d,]+ vs [\d,]+ rows/s \(\S+x\).*", out)
    assert speed, out
    report(f"convert: MLPClassifier quantized: {speed.group(0)}")

    registered = _registered(out)
    tags = _version_tags(registered)
    assert tags["quantized"] == "true"
    assert float(tags["max_abs_diff"]) == pytest.approx(quantized, rel=1e-2)
    graph = onnx.load(resolve_model(registered, tmp_path).onnx_file)
    assert "MatMulInteger" in {node.op_type for node in graph.graph.node}


def test_the_quantized_model_must_pass_the_tolerance_too(models, input_path, tmp_path):
    _, uri = models["mlp"]
    output = tmp_path / "mlp.onnx"
    with pytest.raises(ModelError, match=r"^the quantized export of .* above --tolerance 0.0001: nothing"):
        convert.convert_model(
            uri,
            input_path=str(input_path),
            quantize=True,
            tolerance=1e-4,
            output=str(output),
            echo=lambda _: None,
        )
    assert not output.exists()


def test_a_tree_ensemble_quantizes_to_the_same_graph(registry, input_dir, tmp_path, capsys):
    output = tmp_path / "gb.onnx"
    code = _convert(
        "--model-uri", f"models:/{demo.MODEL_NAME}@sklearn", "--input", str(input_dir),
        "--sample-rows", "100", "--quantize", "--output", str(output),
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines

    assert lines[0] == f"sample: 100 rows (the first 100 of {input_dir})"
    unchanged = "quantize: the quantized graph is unchanged: tree ensembles (TreeEnsembleClassifier ops)"
    assert any(line.startswith(unchanged) for line in lines), lines
    assert not any(line.startswith("parity of the quantized export") for line in lines)  # not measured twice
    assert lines[-1].startswith(f"wrote {output}: score it with --model-uri {output} --features age,income,")
    assert output.is_file()


def test_without_input_the_logged_input_example_is_the_sample(models, tmp_path, monkeypatch):
    _, uri = models["logistic"]
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    result = convert.convert_model(uri, echo=lines.append)

    assert lines[0] == "no --input: measuring parity on the model's logged input example"
    assert lines[1] == "sample: 20 rows (the model's logged input example)"
    assert result.parity.rows == 20
    assert result.output == "model.onnx" and (tmp_path / "model.onnx").is_file()


def test_without_input_or_input_example_it_asks_for_input(registry, capsys):
    uri = f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"
    code = _convert("--model-uri", uri, "--register", "never")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines()[-1] == (
        f"error: model {uri!r} has no logged input example with its features: pass --input PARQUET"
    )
    assert _versions("never") == []


def test_an_onnx_model_is_refused(registry):
    with pytest.raises(ModelError, match="is already an ONNX model"):
        convert.convert_model(f"models:/{demo.MODEL_NAME}/{registry['onnx']}", echo=lambda _: None)


def test_a_missing_feature_column_is_refused(registry, input_path):
    with pytest.raises(InputError, match=r"column 'age' is missing"):
        convert.convert_model(
            f"models:/{demo.MODEL_NAME}/{registry['sklearn']}",
            input_path=str(input_path),
            echo=lambda _: None,
        )


def test_boosters_need_onnxmltools():
    if "onnxmltools" in sys.modules or _importable("onnxmltools"):
        pytest.skip("onnxmltools is installed here")
    booster = type("XGBClassifier", (), {"__module__": "xgboost.sklearn", "predict_proba": None})()
    with pytest.raises(
        ModelError, match=r"^converting a XGBoost model needs onnxmltools' converters: pip install"
    ):
        export.to_onnx(booster, [Feature("x", "float")])


def test_without_skl2onnx_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    with pytest.raises(
        ModelError, match=r"^scoring convert needs skl2onnx and onnx: pip install 'scoring\[convert\]'$"
    ):
        export.require_converter()


def test_scorable_rows_leave_out_what_the_job_rejects():
    features = [Feature("a", "integer"), Feature("b", "double", min=0.0, max=1.0), Feature("c", "boolean")]
    frame = pd.DataFrame(
        {
            "a": ["1", "2", "x", "4", "5", "3000000000", "7"],
            "b": [0.5, np.nan, 0.5, np.inf, 2.0, 0.5, 0.25],
            "c": ["true", "no", "yes", "t", "f", "y", "maybe"],
        }
    )
    typed = scorable_rows(frame, features)
    assert typed.to_dict("list") == {"a": [1], "b": [0.5], "c": [True]}
    assert typed.dtypes.tolist() == [np.int32, np.float64, np.bool_]


def test_initial_types_are_one_matrix_or_one_input_per_column():
    numeric = export.initial_types([Feature("a", "integer"), Feature("b", "float")], "float")
    assert [(name, type(t).__name__, t.shape) for name, t in numeric] == [
        ("features", "FloatTensorType", [None, 2])
    ]
    mixed = export.initial_types([Feature("a", "double"), Feature("s", "string")], "double")
    assert [(name, type(t).__name__) for name, t in mixed] == [
        ("a", "DoubleTensorType"),
        ("s", "StringTensorType"),
    ]
    assert export.onnx_dtype([Feature("a", "float"), Feature("b", "integer")]) == "float"
    assert export.onnx_dtype([Feature("a", "float"), Feature("b", "long")]) == "double"
    assert export.onnx_dtype([Feature("a", "double")], "float") == "float"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
