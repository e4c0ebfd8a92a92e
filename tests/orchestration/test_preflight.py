"""Pre-flight checks: the model in the registry and the input's footers, without Spark."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from conftest import DATE

from scoring import demo
from scoring.errors import InputError, ModelError
from scoring.lineup import Lineup
from scoring.orchestration.preflight import check_input, check_model


@pytest.fixture
def pinned(registry) -> str:
    return f"models:/{demo.MODEL_NAME}/{registry['onnx']}"


def test_model_check_pins_the_alias(registry):
    now = dt.datetime.now(dt.UTC)
    pinned = check_model(f"models:/{demo.MODEL_NAME}@champion", max_age_days=1, as_of=now)
    assert pinned["pinned_uri"] == f"models:/{demo.MODEL_NAME}/{registry['onnx']}"
    assert pinned["version"] == registry["onnx"]


def test_model_check_refuses_an_old_version(registry):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    with pytest.raises(ModelError, match=r"days old at .*, older than the 30 days allowed"):
        check_model(f"models:/{demo.MODEL_NAME}@champion", max_age_days=30, as_of=later)


def test_model_check_refuses_a_model_without_signature(registry, tmp_path):
    import mlflow

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            registry["model"],
            name="unsigned",
            serialization_format="cloudpickle",
            registered_model_name="unsigned",
        )
    with pytest.raises(ModelError, match="has no signature"):
        check_model(f"models:/unsigned/{info.registered_model_version}", None, dt.datetime.now(dt.UTC))


def test_model_check_refuses_an_unknown_alias(registry):
    with pytest.raises(ModelError, match="cannot resolve model"):
        check_model(f"models:/{demo.MODEL_NAME}@retired", None, dt.datetime.now(dt.UTC))


def test_input_check_reads_footers_and_scores_a_sample(pinned, input_dir):
    found = check_input(pinned, str(input_dir), DATE, "date", ("customer_id",))
    assert found == {
        "rows": 400,
        "files": 2,
        "output": "binary",
        # The kind the cost estimate's GPU warning reads: a tree ensemble, on the CPU only.
        "kinds": {"champion": {"backend": "onnx", "tree_ensemble": "TreeEnsembleClassifier"}},
    }


def test_input_check_refuses_a_missing_partition(pinned, input_dir):
    with pytest.raises(InputError, match="no partition date=2026-12-25"):
        check_input(pinned, str(input_dir), dt.date(2026, 12, 25), "date", ("customer_id",))


def test_input_check_refuses_a_signature_mismatch(pinned, customers, tmp_path):
    demo.write_partitioned(customers[DATE].drop(columns="income"), tmp_path, DATE)
    with pytest.raises(InputError, match="column 'income' is missing"):
        check_input(pinned, str(tmp_path), DATE, "date", ("customer_id",))


def test_input_check_scores_the_sample_with_every_challenger(pinned, registry, input_dir):
    lineup = Lineup(
        challengers=(("plain", f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"),),
        ensemble=(("champion", 1.0), ("plain", 1.0)),
    )
    found = check_input(pinned, str(input_dir), DATE, "date", ("customer_id",), lineup=lineup)
    assert found["challengers"] == {"plain": "binary"} and found["output"] == "binary"
    # The sklearn challenger is scored by pyfunc, and told a tree ensemble by its estimator's class.
    tree = type(registry["model"]).__name__
    assert found["kinds"] == {
        "champion": {"backend": "onnx", "tree_ensemble": "TreeEnsembleClassifier"},
        "plain": {"backend": "pyfunc", "tree_ensemble": tree},
    }


def test_input_check_refuses_an_ensemble_of_a_classifier_and_a_regressor(pinned, customers, input_dir):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    train = customers[DATE].head(100)
    features = train[list(demo.FEATURE_TYPES)]
    regressor = LinearRegression().fit(features, train["defaulted"])
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        info = mlflow.sklearn.log_model(
            regressor,
            name="regressor",
            signature=infer_signature(features, regressor.predict(features)),
            serialization_format="cloudpickle",
            registered_model_name="risk-regressor",
        )
    lineup = Lineup(
        challengers=(("linear", f"models:/risk-regressor/{info.registered_model_version}"),),
        ensemble=(("champion", 0.5), ("linear", 0.5)),
    )
    with pytest.raises(ModelError, match="models 'champion' and 'linear' cannot be combined"):
        check_input(pinned, str(input_dir), DATE, "date", ("customer_id",), lineup=lineup)


def test_input_check_names_the_challenger_that_does_not_resolve(pinned, input_dir):
    lineup = Lineup(challengers=(("gone", f"models:/{demo.MODEL_NAME}@retired"),))
    with pytest.raises(ModelError, match="challenger 'gone': cannot resolve model"):
        check_input(pinned, str(input_dir), DATE, "date", ("customer_id",), lineup=lineup)
