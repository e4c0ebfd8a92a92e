"""The driver's answer to "does an id repeat?", and when it leaves the question to Spark.

Spark's answer (one shuffle of the ids) is checked by the job's tests (tests/batch/test_quarantine.py),
which run both paths: integer ids take this one, text ids Spark's.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.batch.inputs import head_sample
from scoring.batch.unique_ids import ids_unique
from scoring.model.signature import Feature


def files(tmp_path, *columns: pa.Array, name: str = "id") -> list[tuple[str, int]]:
    """One parquet file per array, named as Spark names local files, with its rows."""
    sizes = []
    for i, column in enumerate(columns):
        path = tmp_path / f"part-{i}.parquet"
        # Small row groups and batches, so that a file's column comes back in several chunks.
        pq.write_table(pa.table({name: column, "x": pa.array(np.zeros(len(column)))}), path, row_group_size=3)
        sizes.append((f"file:{path}", len(column)))
    return sizes


def test_unique_integer_ids_across_files(tmp_path):
    sizes = files(tmp_path, pa.array(range(0, 10)), pa.array(range(10, 17), pa.int32()))
    assert ids_unique(sizes, ["id"]) is True


@pytest.mark.parametrize(
    "first, second",
    [([5, 1, 9, 2], [7, 8, 1]), ([3, 4, 3, 0], [10, 11])],
    ids=["repeat across files", "repeat within a file"],
)
def test_repeated_integer_id(tmp_path, first, second):
    assert ids_unique(files(tmp_path, pa.array(first), pa.array(second)), ["id"]) is False


def test_extreme_int64_ids_stay_distinct(tmp_path):
    ids = pa.array([-(2**63), 2**63 - 1, 0, -1], pa.int64())
    assert ids_unique(files(tmp_path, ids), ["id"]) is True


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, None, 2]),
        pa.array(["a", "b", "c"]),
        pa.array([1, 2, 2**64 - 1], pa.uint64()),
        pa.array([1.0, 2.0, 3.0]),
    ],
    ids=["null id", "text ids", "unsigned 64-bit ids", "floating ids"],
)
def test_spark_decides_ids_the_driver_cannot(tmp_path, column):
    assert ids_unique(files(tmp_path, column), ["id"]) is None


def test_spark_decides_above_the_row_limit_and_for_several_id_columns(tmp_path):
    sizes = files(tmp_path, pa.array(range(5)), pa.array(range(5, 10)))
    assert ids_unique(sizes, ["id"], max_rows=9) is None
    assert ids_unique(sizes, ["id"], max_rows=10) is True
    assert ids_unique(sizes, ["id", "x"]) is None


def test_spark_decides_when_a_name_or_a_file_does_not_match(tmp_path):
    sizes = files(tmp_path, pa.array(range(5)), name="ID")
    assert ids_unique(sizes, ["id"]) is None  # Spark matches names regardless of case; pyarrow does not
    assert ids_unique([(f"file:{tmp_path}/missing.parquet", 5)], ["id"]) is None
    assert ids_unique([(sizes[0][0], 6)], ["id"]) is None  # the footer said otherwise


FEATURES = (Feature("a", "double"), Feature("b", "integer", min=0))


def test_head_sample_keeps_the_scorable_rows_cast(tmp_path):
    path = tmp_path / "part-0.parquet"
    a = [1.0, None, 3.0, float("nan"), 5.0, 6.0]
    b = [1, 2, -3, 4, 5, 6]  # int64 in the file, the signature's int32 in the sample
    pq.write_table(pa.table({"a": a, "b": pa.array(b, pa.int64())}), path)

    sample = head_sample([(f"file:{path}", 6)], FEATURES, rows=2)

    assert sample.to_dict("list") == {"a": [1.0, 5.0], "b": [1, 5]}
    assert str(sample["b"].dtype) == "int32"


def test_head_sample_leaves_it_to_spark(tmp_path):
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"a": [None, None], "B": pa.array([1, 2], pa.int32())}), path)
    assert head_sample([(f"file:{path}", 2)], FEATURES, rows=2) is None  # "B" is not "b"
    pq.write_table(pa.table({"a": pa.array([None, None], pa.float64()), "b": [1, 2]}), path)
    assert head_sample([(f"file:{path}", 2)], FEATURES, rows=2) is None  # none scorable
    assert head_sample([], FEATURES, rows=2) is None
