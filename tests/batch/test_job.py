"""The scoring job end to end: real Spark, real MLflow registry, real parquet."""

from __future__ import annotations

import json
import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE, ROWS, features, run_score

from scoring import demo

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"


def score(spark, input_dir, output, model_uri=CHAMPION, date=DATE, *extra: str) -> int:
    """``scoring score`` in this process, once the test session's Spark exists."""
    assert spark is not None
    return run_score(model_uri, input_dir, output, *extra, date=date)


def read_partition(output, date=DATE) -> pd.DataFrame:
    return pd.read_parquet(output / f"date={date.isoformat()}").sort_values("customer_id")


def expected_probability(registry, frame: pd.DataFrame) -> np.ndarray:
    ordered = frame.sort_values("customer_id")
    return registry["model"].predict_proba(features(ordered))[:, 1]


@pytest.mark.parametrize(
    ("alias", "backend", "tolerance"),
    [("champion", "onnx", 1e-5), ("sklearn", "pyfunc", 1e-12)],
)
def test_scores_equal_the_models_own_predictions(
    spark, registry, input_dir, customers, tmp_path, alias, backend, tolerance
):
    assert score(spark, input_dir, tmp_path, f"models:/{demo.MODEL_NAME}@{alias}") == 0

    out = read_partition(tmp_path)
    manifest = json.loads((tmp_path / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["model"]["backend"] == backend
    assert len(out) == ROWS
    assert out["customer_id"].is_unique
    np.testing.assert_allclose(
        out["probability"], expected_probability(registry, customers[DATE]), atol=tolerance
    )
    # prediction is the label the sklearn model predicts (ONNX agrees except at a float32 tie)
    labels = registry["model"].predict(features(customers[DATE].sort_values("customer_id")))
    assert (out["prediction"].to_numpy() == labels).mean() > 0.99


def test_alias_is_pinned_once_even_if_it_moves_mid_job(
    spark, registry, input_dir, customers, tmp_path, monkeypatch
):
    import mlflow

    from scoring.batch import job

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(demo.MODEL_NAME, "moving", registry["onnx"])
    real_probe = job.probe_models

    def probe_after_the_alias_moved(*args, **kwargs):
        # The model is already resolved when it is probed: move the alias under the job.
        client.set_registered_model_alias(demo.MODEL_NAME, "moving", registry["sklearn"])
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(job, "probe_models", probe_after_the_alias_moved)
    assert score(spark, input_dir, tmp_path, f"models:/{demo.MODEL_NAME}@moving") == 0

    out = read_partition(tmp_path)
    manifest = json.loads((tmp_path / f"date={DATE}" / "_manifest.json").read_text())
    assert set(out["model_version"]) == {registry["onnx"]}
    assert manifest["model"]["pinned_uri"] == f"models:/{demo.MODEL_NAME}/{registry['onnx']}"
    assert manifest["model"]["backend"] == "onnx"
    assert str(client.get_model_version_by_alias(demo.MODEL_NAME, "moving").version) == registry["sklearn"]


def test_features_come_from_the_signature_in_any_order_extra_columns_ignored(
    spark, registry, customers, tmp_path
):
    frame = customers[DATE]
    shuffled = frame[list(reversed(frame.columns))].assign(
        unrelated_score=1.5, notes="free text", age=frame["age"].astype("int64")
    )
    demo.write_partitioned(shuffled, tmp_path / "input", DATE)

    assert score(spark, tmp_path / "input", tmp_path / "out", SKLEARN) == 0

    out = read_partition(tmp_path / "out")
    np.testing.assert_allclose(out["probability"], expected_probability(registry, frame), atol=1e-12)
    assert "unrelated_score" not in out.columns


def test_rerunning_a_date_replaces_only_that_partition(spark, registry, input_dir, tmp_path):
    assert score(spark, input_dir, tmp_path, CHAMPION, DATE) == 0
    assert score(spark, input_dir, tmp_path, CHAMPION, OTHER_DATE) == 0
    other = tmp_path / f"date={OTHER_DATE}"
    other_before = {p.name: p.read_bytes() for p in other.iterdir()}

    assert score(spark, input_dir, tmp_path, SKLEARN, DATE) == 0

    rescored = read_partition(tmp_path, DATE)
    assert len(rescored) == ROWS and rescored["customer_id"].is_unique
    assert set(rescored["model_version"]) == {registry["sklearn"]}
    assert {p.name: p.read_bytes() for p in other.iterdir()} == other_before
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("_"))
    assert visible == [f"date={DATE}", f"date={OTHER_DATE}"]


def test_manifest_counts_equal_the_data(spark, registry, input_dir, customers, tmp_path):
    assert score(spark, input_dir, tmp_path, CHAMPION, OTHER_DATE, "--keep-columns", "region") == 0

    partition = tmp_path / f"date={OTHER_DATE}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    files = sorted(p.name for p in partition.glob("*.parquet"))
    assert manifest["input"]["rows"] == len(customers[OTHER_DATE])
    assert manifest["output"]["rows"] == pq.read_table(partition).num_rows == len(customers[OTHER_DATE])
    assert sorted(f["name"] for f in manifest["output"]["files"]) == files
    assert [f["rows"] for f in manifest["output"]["files"]] == [
        pq.ParquetFile(partition / f["name"]).metadata.num_rows for f in manifest["output"]["files"]
    ]
    assert manifest["model"]["version"] == registry["onnx"]
    assert manifest["model"]["uri"] == CHAMPION
    assert manifest["arguments"]["keep_columns"] == ["region"]
    assert [c["name"] for c in manifest["output"]["columns"]] == [
        "customer_id", "region", "prediction", "probability", "model_name", "model_version"
    ]  # fmt: skip
    assert (partition / "_SUCCESS").exists()


def test_output_reads_back_with_pandas_pyarrow_and_duckdb(spark, registry, input_dir, tmp_path):
    for date in (DATE, OTHER_DATE):
        assert score(spark, input_dir, tmp_path, CHAMPION, date) == 0

    table = pq.read_table(tmp_path, partitioning="hive")
    assert table.num_rows == 2 * ROWS
    assert sorted(set(table.column("date").to_pylist())) == [DATE.isoformat(), OTHER_DATE.isoformat()]

    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 2 * ROWS and frame["customer_id"].is_unique

    rows = duckdb.sql(
        f"SELECT date, count(*), count(DISTINCT customer_id), min(probability), max(probability) "
        f"FROM read_parquet('{tmp_path}/*/*.parquet', hive_partitioning = true) GROUP BY date ORDER BY date"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(DATE, ROWS, ROWS), (OTHER_DATE, ROWS, ROWS)]
    assert all(0.0 <= r[3] <= r[4] <= 1.0 for r in rows)


def test_bare_onnx_file_scores_with_features_named_on_the_command_line(
    spark, registry, input_dir, customers, tmp_path, capsys
):
    import mlflow

    onnx_dir = mlflow.artifacts.download_artifacts(
        f"models:/{demo.MODEL_NAME}/{registry['onnx']}", dst_path=str(tmp_path / "model")
    )
    onnx_file = os.path.join(onnx_dir, "model.onnx")

    # One [N, 8] input: the graph alone does not name its columns.
    assert score(spark, input_dir, tmp_path / "out", onnx_file) == 1
    assert "has no signature with named input columns" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    names = ",".join(demo.FEATURE_TYPES)
    assert score(spark, input_dir, tmp_path / "out", onnx_file, DATE, "--features", names) == 0
    out = read_partition(tmp_path / "out")
    np.testing.assert_allclose(out["probability"], expected_probability(registry, customers[DATE]), atol=1e-5)
    manifest = json.loads((tmp_path / "out" / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["model"]["name"] == "model"
    assert len(manifest["model"]["version"]) == 12  # a content hash for a local file
