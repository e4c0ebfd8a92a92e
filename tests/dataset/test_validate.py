"""``scoring validate`` passes a good partition and catches planted bad ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE

from scoring import demo
from scoring.cli import main
from scoring.dataset import buckets, quantiles, reading
from scoring.dataset.buckets import repeated_ids
from scoring.dataset.validate import population_stability_index, psi_bins, validate_partition


@pytest.fixture(scope="module")
def scored_output(spark, registry, input_dir, tmp_path_factory):
    """Two dates published by the real job; tests tamper with copies."""
    output = tmp_path_factory.mktemp("validated")
    for date in (DATE, OTHER_DATE):
        model = f"models:/{demo.MODEL_NAME}@champion"
        args = ["score", "--model-uri", model, "--input", str(input_dir), "--output", str(output),
                "--date", date.isoformat(), "--id-column", "customer_id"]  # fmt: skip
        assert main(args) == 0
    return output


@pytest.fixture
def output(scored_output, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(scored_output, copy)
    return copy


def rewrite_first_file(output, change) -> None:
    """Apply ``change`` to the first data file of OTHER_DATE, keeping its row count."""
    path = sorted((output / f"date={OTHER_DATE}").glob("*.parquet"))[0]
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if c.status == "fail"}


def test_good_partition_passes(output, capsys):
    report = validate_partition(str(output), OTHER_DATE)
    assert report.ok, report.summary()
    names = [c.name for c in report.checks]
    assert names == ["published", "manifest", "files", "row counts", "schema", "model version",
                     "predictions", "probabilities", "ids unique", "score drift"]  # fmt: skip
    drift = next(c for c in report.checks if c.name == "score drift")
    assert drift.status == "ok" and f"against date={DATE}" in drift.detail

    assert main(["validate", "--output", str(output), "--date", OTHER_DATE.isoformat(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_first_partition_has_no_drift_reference(output):
    report = validate_partition(str(output), DATE)
    assert report.ok
    assert "no earlier published partition" in next(
        c.detail for c in report.checks if c.name == "score drift"
    )


def test_null_prediction_is_caught(output, report):
    def null_first_prediction(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index("prediction")
        values = table.column(i).to_pylist()
        values[0] = None
        return table.set_column(i, "prediction", pa.array(values, table.schema.field(i).type))

    rewrite_first_file(output, null_first_prediction)
    result = validate_partition(str(output), OTHER_DATE)
    assert not result.ok and failed(result) == {"predictions": "1 null predictions"}
    report("validator | planted null prediction: caught (predictions)")


def test_missing_manifest_is_caught(output, capsys, report):
    (output / f"date={OTHER_DATE}" / "_manifest.json").unlink()
    assert main(["validate", "--output", str(output), "--date", OTHER_DATE.isoformat()]) == 1
    assert "FAIL  manifest               no _manifest.json" in capsys.readouterr().out
    report("validator | planted missing manifest: caught (manifest)")


def test_missing_success_marker_is_caught(output, report):
    (output / f"date={OTHER_DATE}" / "_SUCCESS").unlink()
    result = validate_partition(str(output), OTHER_DATE)
    assert failed(result) == {"published": "no _SUCCESS: not published"}
    report("validator | planted partition without _SUCCESS: caught (published)")


@pytest.mark.parametrize("name", ["a-first.parquet", "z-last.parquet"])
def test_unreadable_file_is_one_line_error_naming_it(output, capsys, name):
    (output / f"date={OTHER_DATE}" / name).write_bytes(b"not parquet")
    assert main(["validate", "--output", str(output), "--date", OTHER_DATE.isoformat()]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not readable parquet" in err and "\n" not in err
    assert f"date={OTHER_DATE}/{name}" in err


def test_count_mismatch_is_caught(output, report):
    sorted((output / f"date={OTHER_DATE}").glob("*.parquet"))[0].unlink()
    result = validate_partition(str(output), OTHER_DATE)
    assert set(failed(result)) == {"files", "row counts"}
    report("validator | planted count mismatch (a lost file): caught (files, row counts)")


def test_duplicate_ids_and_out_of_range_probability_are_caught(output, report):
    def spoil(table: pa.Table) -> pa.Table:
        ids = table.column("customer_id").to_pylist()
        ids[1] = ids[0]
        probability = table.column("probability").to_pylist()
        probability[2] = 1.5
        table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", pa.array(ids))
        return table.set_column(
            table.schema.get_field_index("probability"), "probability", pa.array(probability)
        )

    rewrite_first_file(output, spoil)
    result = validate_partition(str(output), OTHER_DATE)
    assert set(failed(result)) == {"ids unique", "probabilities"}
    report("validator | planted duplicate id and probability 1.5: caught (ids unique, probabilities)")


@pytest.mark.parametrize("rows_per_bucket", [None, 50], ids=["ids in one bucket", "ids in buckets on disk"])
def test_small_batches_across_files_catch_a_repeat_and_a_null_version(output, monkeypatch, rows_per_bucket):
    monkeypatch.setattr(reading, "READ_BATCH_ROWS", 3)  # every check sees many batches
    if rows_per_bucket:  # 400 rows: 8 buckets, spilled every 20 rows
        monkeypatch.setattr(buckets, "ROWS_PER_BUCKET", rows_per_bucket)
        monkeypatch.setattr(buckets, "SPILL_ROWS", 20)
    paths = sorted((output / f"date={OTHER_DATE}").glob("*.parquet"))
    assert len(paths) > 1
    first_id = pq.read_table(paths[0]).column("customer_id")[0].as_py()
    assert validate_partition(str(output), OTHER_DATE).ok

    def spoil(table: pa.Table) -> pa.Table:
        ids = table.column("customer_id").to_pylist()
        ids[-1] = first_id  # the first file's first id, again in the last file's last batch
        versions = table.column("model_version").to_pylist()
        versions[0] = None
        table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", pa.array(ids))
        index = table.schema.get_field_index("model_version")
        return table.set_column(index, "model_version", pa.array(versions, pa.string()))

    pq.write_table(spoil(pq.read_table(paths[-1])), paths[-1])
    problems = failed(validate_partition(str(output), OTHER_DATE))
    assert set(problems) == {"ids unique", "model version"}
    assert problems["ids unique"] == "1 repeated ids (customer_id)"
    assert "and 1 null" in problems["model version"]


def rewrite_scores(output, date, scores: np.ndarray) -> None:
    """Give ``date``'s rows these probabilities, file by file in order, keeping everything else."""
    start = 0
    for path in sorted((output / f"date={date}").glob("*.parquet")):
        table = pq.read_table(path)
        part = pa.array(scores[start : start + table.num_rows])
        start += table.num_rows
        pq.write_table(
            table.set_column(table.schema.get_field_index("probability"), "probability", part), path
        )


@pytest.mark.parametrize("shift", [0.3, 3.0], ids=["a small shift", "a large shift"])
def test_the_streamed_psi_is_the_exact_psi_of_the_whole_columns(output, monkeypatch, capsys, shift):
    """Both days read in small batches, the deciles found in several passes: the validator's index is
    the in-memory one of both whole columns (rank error 0), and its JSON says how it was computed."""
    monkeypatch.setattr(reading, "READ_BATCH_ROWS", 7)
    monkeypatch.setattr(quantiles, "HOLD_LIMIT", 16)  # 400 rows: narrowed digit by digit, then held
    rng = np.random.default_rng(5)
    rows = {date: sum(pq.read_metadata(p).num_rows for p in (output / f"date={date}").glob("*.parquet"))
            for date in (DATE, OTHER_DATE)}  # fmt: skip
    reference, scores = rng.beta(2, 5, rows[DATE]), rng.beta(2 + shift, 5, rows[OTHER_DATE])
    rewrite_scores(output, DATE, reference)
    rewrite_scores(output, OTHER_DATE, scores)

    drift = validate_partition(str(output), OTHER_DATE).drift
    exact = psi_bins(reference, scores)
    assert drift.bins.psi == exact.psi
    np.testing.assert_array_equal(drift.bins.edges, exact.edges)
    assert drift.reads > 2  # the deciles took passes of their own, then one to count

    assert main(["validate", "--output", str(output), "--date", OTHER_DATE.isoformat(), "--json"]) in (0, 1)
    printed = json.loads(capsys.readouterr().out)["drift"]
    assert printed["psi"] == exact.psi
    assert printed["method"]["rank_error"] == 0.0 and printed["method"]["deciles"] == quantiles.METHOD
    assert printed["rows"] == {"previous": rows[DATE], "current": rows[OTHER_DATE]}


def test_shifted_score_distribution_warns_or_fails(output, capsys, report):
    for path in (output / f"date={OTHER_DATE}").glob("*.parquet"):
        table = pq.read_table(path)
        shifted = pc.min_element_wise(pc.add(table.column("probability"), 0.3), 1.0)
        pq.write_table(
            table.set_column(table.schema.get_field_index("probability"), "probability", shifted), path
        )

    warned = validate_partition(str(output), OTHER_DATE)
    drift = next(c for c in warned.checks if c.name == "score drift")
    assert warned.ok and drift.status == "warn"
    psi = float(drift.detail.split()[1])
    assert psi > 0.2

    args = ["validate", "--output", str(output), "--date", OTHER_DATE.isoformat(), "--psi-action", "fail"]
    assert main(args) == 1
    assert "FAIL  score drift" in capsys.readouterr().out
    report(f"validator | planted score shift (+0.3): caught (score drift, PSI {psi:.2f})")


def test_population_stability_index():
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, 5_000)
    assert population_stability_index(reference, rng.beta(2, 5, 5_000)) < 0.02
    assert population_stability_index(reference, rng.beta(5, 2, 5_000)) > 1.0


@pytest.mark.parametrize(
    "keys, repeated",
    [
        (pa.table({"id": pa.chunked_array([[3, 1, 2], [1, 3, 9]])}), 2),
        (pa.table({"id": pa.array([5, 6, 7], pa.int32())}), 0),
        (pa.table({"id": pa.array([-(2**63), 2**63 - 1, -(2**63)])}), 1),
        (pa.table({"id": pa.array([1, None, None])}), 1),
        (pa.table({"id": ["a", "b", "a"]}), 1),
        (pa.table({"a": [1, 1, 1], "b": [1, 2, 1]}), 1),
    ],
    ids=["chunked integers", "int32", "int64 extremes", "nulls", "text", "two columns"],
)
def test_repeated_ids_groups_any_key(keys, repeated):
    before = keys.column(0).to_pylist()
    assert repeated_ids(keys) == repeated
    assert keys.column(0).to_pylist() == before  # the table's own buffers are never sorted in place
