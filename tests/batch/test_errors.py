"""Each expected failure exits non-zero with one line that says what and where, and writes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DATE, features, run_score

from scoring import demo
from scoring.cli import main

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"


def assert_one_line_error(capsys, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 1
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in "\n".join(err)


def write_input(tmp_path, frame: pd.DataFrame):
    demo.write_partitioned(frame, tmp_path / "input", DATE)
    return tmp_path / "input"


@pytest.mark.parametrize(
    ("model_uri", "fragments"),
    [
        (f"models:/{demo.MODEL_NAME}@no-such-alias", ["cannot resolve model", "no-such-alias"]),
        ("models:/no-such-model@champion", ["cannot resolve model", "no-such-model"]),
        (f"models:/{demo.MODEL_NAME}/999", ["cannot resolve model", "/999"]),
        (f"models:/{demo.MODEL_NAME}/latest-ish", ["malformed model URI"]),
        ("/no/such/model/dir", ["model not found", "/no/such/model/dir"]),
    ],
)
def test_unusable_model_reference(spark, registry, input_dir, tmp_path, capsys, model_uri, fragments):
    code = run_score(model_uri, input_dir, tmp_path / "out")
    assert_one_line_error(capsys, code, *fragments)
    assert not (tmp_path / "out").exists()


def test_input_path_missing(spark, registry, tmp_path, capsys):
    code = run_score(CHAMPION, tmp_path / "nowhere", tmp_path / "out")
    assert_one_line_error(capsys, code, "input path not found", str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


def test_input_directory_empty(spark, registry, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = run_score(CHAMPION, tmp_path / "empty", tmp_path / "out")
    assert_one_line_error(capsys, code, "input is empty", str(tmp_path / "empty"))
    assert not (tmp_path / "out").exists()


def test_input_has_no_rows_for_the_date(spark, registry, customers, tmp_path, capsys):
    demo.write_partitioned(customers[DATE], tmp_path / "input", DATE.replace(day=20))
    code = run_score(CHAMPION, tmp_path / "input", tmp_path / "out")
    assert_one_line_error(capsys, code, "no rows for date=2026-11-01", str(tmp_path / "input"))
    assert not (tmp_path / "out").exists()


def test_signature_feature_missing_from_input(spark, registry, customers, tmp_path, capsys):
    source = write_input(tmp_path, customers[DATE].drop(columns=["debt_ratio"]))
    code = run_score(CHAMPION, source, tmp_path / "out")
    assert_one_line_error(capsys, code, "column 'debt_ratio' is missing", str(source))
    assert not (tmp_path / "out").exists()


def test_feature_name_differs_only_in_case(spark, registry, customers, tmp_path, capsys):
    source = write_input(tmp_path, customers[DATE].rename(columns={"income": "Income"}))
    code = run_score(CHAMPION, source, tmp_path / "out")
    assert_one_line_error(capsys, code, "column 'income' is missing", "found 'Income'")


@pytest.mark.parametrize(
    ("column", "values", "source_type", "target_type"),
    [
        ("income", lambda s: s > 50_000, "boolean", "double"),
        ("age", lambda s: s.astype("float64"), "double", "integer"),
        ("late_payments", lambda s: s > 0, "boolean", "integer"),
    ],
)
def test_feature_type_cannot_be_cast(
    spark, registry, customers, tmp_path, capsys, column, values, source_type, target_type
):
    frame = customers[DATE].assign(**{column: values(customers[DATE][column])})
    source = write_input(tmp_path, frame)
    code = run_score(CHAMPION, source, tmp_path / "out")
    assert_one_line_error(
        capsys, code, f"feature {column!r} has type {source_type}", f"model's {target_type}", str(source)
    )
    assert not (tmp_path / "out").exists()


def test_id_column_missing(spark, registry, input_dir, tmp_path, capsys):
    code = run_score(CHAMPION, input_dir, tmp_path / "out", "--id-column", "account_id")
    assert_one_line_error(capsys, code, "column 'account_id' is missing")
    assert not (tmp_path / "out").exists()


def test_model_without_signature_needs_features(spark, registry, customers, input_dir, tmp_path, capsys):
    import mlflow

    model_dir = tmp_path / "unsigned"
    mlflow.sklearn.save_model(registry["model"], model_dir, serialization_format="cloudpickle")
    code = run_score(str(model_dir), input_dir, tmp_path / "out")
    assert_one_line_error(capsys, code, "has no signature", "--features")
    assert not (tmp_path / "out").exists()

    names = ",".join(demo.FEATURE_TYPES)
    assert run_score(str(model_dir), input_dir, tmp_path / "out", "--features", names) == 0
    scored = pd.read_parquet(tmp_path / "out" / f"date={DATE}").sort_values("customer_id")
    expected = registry["model"].predict(features(customers[DATE].sort_values("customer_id")))
    assert (scored["prediction"].to_numpy() == expected).all()


def test_backend_onnx_refused_for_a_pyfunc_model(spark, registry, input_dir, tmp_path, capsys):
    uri = f"models:/{demo.MODEL_NAME}@sklearn"
    code = run_score(uri, input_dir, tmp_path / "out", "--backend", "onnx")
    assert_one_line_error(capsys, code, "--backend onnx needs an ONNX model")


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--model-uri", CHAMPION, "--input", "x", "--output", "y", "--date", "2026-13-01"])
    assert exit_info.value.code == 2
    assert "not a YYYY-MM-DD date" in capsys.readouterr().err
