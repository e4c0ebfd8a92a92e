"""The pinned model staged on S3 (moto) and scored from there without a registry."""

from __future__ import annotations

import dataclasses
import os

import boto3
import pytest

from scoring import demo
from scoring.errors import ModelError
from scoring.model.resolve import PROVENANCE_FILE, resolve_model, write_provenance
from scoring.orchestration.artifacts import stage_model

BUCKET = "scoring-artifacts-test"


@pytest.fixture(scope="module")
def bucket(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def test_staged_model_resolves_without_a_registry_under_its_registry_name(
    registry, bucket, tmp_path, monkeypatch
):
    pinned = f"models:/{demo.MODEL_NAME}/{registry['onnx']}"
    from_registry = resolve_model(pinned, tmp_path / "registry")
    target = stage_model(pinned, f"s3://{bucket}/run-1/model")

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    staged = resolve_model(target, tmp_path / "staged")

    assert staged.uri == target
    assert (staged.pinned_uri, staged.name, staged.version, staged.run_id) == (
        pinned,
        demo.MODEL_NAME,
        registry["onnx"],
        from_registry.run_id,
    )
    assert staged.features == from_registry.features
    assert staged.is_onnx
    assert os.path.isfile(os.path.join(staged.local_path, PROVENANCE_FILE))


def test_a_missing_staged_model_is_one_clear_error(bucket, tmp_path):
    with pytest.raises(ModelError, match=r"not an MLflow model directory|cannot download model"):
        resolve_model(f"s3://{bucket}/nothing-here/model", tmp_path)


def test_a_bare_onnx_file_has_no_directory_for_its_provenance(registry, tmp_path):
    model = resolve_model(f"models:/{demo.MODEL_NAME}@champion", tmp_path / "registry")
    with pytest.raises(ModelError, match="only a model directory can be staged"):
        write_provenance(dataclasses.replace(model, local_path=model.onnx_file))
