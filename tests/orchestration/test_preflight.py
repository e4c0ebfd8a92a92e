"""Pre-flight checks: the model in the registry and the input's footers, without Spark."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import DATE

from scoring import demo
from scoring.errors import InputError, ModelError
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
    assert found == {"rows": 400, "files": 2, "output": "binary"}


def test_input_check_refuses_a_missing_partition(pinned, input_dir):
    with pytest.raises(InputError, match="no partition date=2026-12-25"):
        check_input(pinned, str(input_dir), dt.date(2026, 12, 25), "date", ("customer_id",))


def test_input_check_refuses_a_signature_mismatch(pinned, customers, tmp_path):
    demo.write_partitioned(customers[DATE].drop(columns="income"), tmp_path, DATE)
    with pytest.raises(InputError, match="column 'income' is missing"):
        check_input(pinned, str(tmp_path), DATE, "date", ("customer_id",))
