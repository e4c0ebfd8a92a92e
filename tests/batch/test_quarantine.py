"""Bad input, class by class: each ends in rejects rows with their reason, or in a one-line error.

In every case the input rows equal the scored rows plus the rejected rows, checked on the written data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATE, features

from scoring import demo
from scoring.cli import main

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
ROWS = 40
BAD = [3, 17, 29]  # the rows each case spoils


def base_table() -> pa.Table:
    return pa.Table.from_pandas(demo.make_customers(ROWS, DATE, seed=5), preserve_index=False)


def replace(
    table: pa.Table, name: str, values: list | np.ndarray, dtype: pa.DataType | None = None
) -> pa.Table:
    """``table`` with column ``name`` replaced; numpy input keeps NaN as NaN (not null)."""
    array = pa.array(values, type=dtype or table.schema.field(name).type)
    return table.set_column(table.schema.get_field_index(name), name, array)


def spoil(name: str, value, dtype: pa.DataType | None = None) -> Callable[[pa.Table], pa.Table]:
    def apply(table: pa.Table) -> pa.Table:
        column = table.column(name).to_pylist()
        for i in BAD:
            column[i] = value
        if dtype is None and isinstance(value, float):
            column = np.array(column, dtype=np.float64)
        return replace(table, name, column, dtype)

    return apply


def as_text(name: str, bad_text: str) -> Callable[[pa.Table], pa.Table]:
    def apply(table: pa.Table) -> pa.Table:
        column = [str(v) for v in table.column(name).to_pylist()]
        for i in BAD:
            column[i] = bad_text
        return replace(table, name, column, pa.string())

    return apply


def duplicate_ids(table: pa.Table) -> pa.Table:
    ids = table.column("customer_id").to_pylist()
    for i in BAD[1:]:
        ids[i] = ids[BAD[0]]
    return replace(table, "customer_id", ids)


def duplicate_text_ids(table: pa.Table) -> pa.Table:
    """Repeated ids that are text: Spark's shuffle tells, not the driver (``scoring.batch.unique_ids``)."""
    table = duplicate_ids(table)
    return replace(
        table, "customer_id", [f"c{i}" for i in table.column("customer_id").to_pylist()], pa.string()
    )


@dataclass
class Case:
    mutate: Callable[[pa.Table], pa.Table]
    reason: str | None = None  # the reject reason expected on the spoiled rows
    rejected: int = len(BAD)
    error: str | None = None  # the one-line error expected instead
    args: list[str] = field(default_factory=list)


CASES = {
    "null feature": Case(spoil("income", None), "null_feature:income"),
    "NaN feature": Case(spoil("income", float("nan")), "nan_feature:income"),
    "+inf feature": Case(spoil("debt_ratio", float("inf")), "infinite_feature:debt_ratio"),
    "-inf feature": Case(spoil("income", float("-inf")), "infinite_feature:income"),
    "text that is not a number": Case(as_text("income", "n/a"), "not_castable:income"),
    "integer overflowing the signature's int32": Case(spoil("age", 2**40, pa.int64()), "not_castable:age"),
    "double overflowing the signature's float32": Case(
        spoil("utilization", 1e300, pa.float64()), "infinite_feature:utilization"
    ),
    "above the declared range": Case(spoil("age", 150), "out_of_range:age"),
    "below the declared range": Case(spoil("utilization", -0.5, pa.float32()), "out_of_range:utilization"),
    "null id": Case(spoil("customer_id", None), "null_id:customer_id"),
    "duplicate id, rejected": Case(duplicate_ids, "duplicate_id:customer_id", rejected=2),
    "duplicate text id, rejected": Case(duplicate_text_ids, "duplicate_id:customer_id", rejected=2),
    "duplicate text id, policy fail": Case(
        duplicate_text_ids, error="2 rows repeat an id (customer_id)", args=["--on-duplicate-id", "fail"]
    ),
    "duplicate id, policy fail": Case(
        duplicate_ids, error="2 rows repeat an id (customer_id)", args=["--on-duplicate-id", "fail"]
    ),
    "more rejects than --max-reject-fraction": Case(
        spoil("income", None),
        error="3 of 40 rows rejected (7.50%), more than --max-reject-fraction 0.05: null_feature:income 3",
        args=["--max-reject-fraction", "0.05"],
    ),
    "feature of a type that cannot be cast": Case(
        lambda t: replace(t, "income", [True] * ROWS, pa.bool_()),
        error="feature 'income' has type boolean, which cannot be cast to the model's double",
    ),
    "feature column missing": Case(
        lambda t: t.drop_columns(["tenure_months"]), error="'tenure_months' is missing"
    ),
}


def run(input_dir, output, *args: str) -> int:
    return main(
        ["score", "--model-uri", CHAMPION, "--input", str(input_dir), "--output", str(output),
         "--date", DATE.isoformat(), "--id-column", "customer_id", "--max-reject-fraction", "0.1", *args]
    )  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(spark, registry, tmp_path, capsys, report, name):
    case = CASES[name]
    table = case.mutate(base_table())
    (tmp_path / "in" / f"date={DATE}").mkdir(parents=True)
    pq.write_table(table, tmp_path / "in" / f"date={DATE}" / "part-0.parquet")
    output = tmp_path / "out"

    code = run(tmp_path / "in", output, *case.args)

    if case.error:
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert code == 1 and len(errors) == 1 and case.error in errors[0], errors
        assert not output.exists()
        report(f"bad input | {name}: input={ROWS} scored=0 rejected=0, one-line error, nothing written")
        return

    assert code == 0
    manifest = json.loads((output / f"date={DATE}" / "_manifest.json").read_text())
    scored = pd.read_parquet(output / f"date={DATE}")
    rejects = pd.read_parquet(output / "_rejects" / f"date={DATE}")
    assert len(rejects) == case.rejected
    assert set(rejects["reject_reason"]) == {case.reason}
    assert len(scored) + len(rejects) == ROWS == manifest["counts"]["input"]
    assert manifest["counts"] == {"input": ROWS, "scored": ROWS - case.rejected, "rejected": case.rejected}
    assert manifest["rejects"]["by_reason"] == {case.reason: case.rejected}
    assert scored["prediction"].notna().all() and scored["probability"].between(0, 1).all()
    ids = table.column("customer_id").to_pylist()
    if case.reason.startswith("duplicate_id"):
        assert scored["customer_id"].is_unique and set(scored["customer_id"]) == set(ids)
    elif not case.reason.startswith("null_id"):
        assert sorted(scored["customer_id"].tolist() + rejects["customer_id"].tolist()) == sorted(ids)
        assert set(rejects["customer_id"]) == {ids[i] for i in BAD}
    report(
        f"bad input | {name}: input={ROWS} scored={len(scored)} rejected={len(rejects)} reason={case.reason}"
    )


def test_rejects_keep_the_original_values(spark, registry, tmp_path):
    table = as_text("income", "n/a")(base_table())
    (tmp_path / "in" / f"date={DATE}").mkdir(parents=True)
    pq.write_table(table, tmp_path / "in" / f"date={DATE}" / "part-0.parquet")

    assert run(tmp_path / "in", tmp_path / "out", "--keep-columns", "region") == 0

    rejects = pd.read_parquet(tmp_path / "out" / "_rejects" / f"date={DATE}")
    assert set(rejects["income"]) == {"n/a"}
    assert list(rejects.columns) == ["customer_id", "region", *demo.FEATURE_TYPES, "reject_reason"]
    # the valid text values were parsed and scored like numbers
    scored = pd.read_parquet(tmp_path / "out" / f"date={DATE}").sort_values("customer_id")
    original = demo.make_customers(ROWS, DATE, seed=5)
    kept = original[~original["customer_id"].isin(rejects["customer_id"])].sort_values("customer_id")
    np.testing.assert_allclose(
        scored["probability"], registry["model"].predict_proba(features(kept))[:, 1], atol=1e-5
    )


def _write_two_files_one_truncated(tmp_path) -> str:
    partition = tmp_path / "in" / f"date={DATE}"
    partition.mkdir(parents=True)
    table = base_table()
    pq.write_table(table.slice(0, 25), partition / "part-0.parquet")
    pq.write_table(table.slice(25), partition / "part-1.parquet")
    data = (partition / "part-1.parquet").read_bytes()
    (partition / "part-1.parquet").write_bytes(data[: len(data) // 2])
    return str(partition / "part-1.parquet")


def test_truncated_input_file_is_named(spark, registry, tmp_path, capsys, report):
    broken = _write_two_files_one_truncated(tmp_path)

    assert run(tmp_path / "in", tmp_path / "out") == 1

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and broken in errors[0] and "--skip-corrupt-files" in errors[0]
    assert not (tmp_path / "out").exists()
    report("bad input | truncated parquet file: input=40 scored=0 rejected=0, one-line error naming the file")


def test_truncated_input_file_skipped_on_request_and_listed(spark, registry, tmp_path, report):
    broken = _write_two_files_one_truncated(tmp_path)

    assert run(tmp_path / "in", tmp_path / "out", "--skip-corrupt-files") == 0

    manifest = json.loads((tmp_path / "out" / f"date={DATE}" / "_manifest.json").read_text())
    assert [f.split(":", 1)[-1].lstrip("/") for f in manifest["input"]["skipped_files"]] == [
        broken.lstrip("/")
    ]
    assert manifest["counts"] == {"input": 25, "scored": 25, "rejected": 0}
    assert len(pd.read_parquet(tmp_path / "out" / f"date={DATE}")) == 25
    report(
        "bad input | truncated parquet file, --skip-corrupt-files: input=25 scored=25 rejected=0, file listed"
    )
