"""The repeat counter shared by the job's id check and the validator: exact in both of its modes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.dataset.ids import RepeatCounter, holds_int64, id_bounds


def expected_repeats(ids: np.ndarray) -> int:
    return len(ids) - len(np.unique(ids))


def count(batches: list[np.ndarray], bounds: tuple[int, int] | None) -> RepeatCounter:
    counter = RepeatCounter(sum(len(b) for b in batches), bounds)
    for batch in batches:
        counter.add(batch)
    return counter


@pytest.mark.parametrize("dense", [True, False], ids=["bitmap", "sorted array"])
@pytest.mark.parametrize(
    "draws", [(1_000, 5_000), (5_000, 1_000), (4, 50)], ids=["few repeats", "many repeats", "tiny"]
)
def test_counts_rows_less_distinct_ids(dense, draws):
    rows, span = draws
    rng = np.random.default_rng(rows + span)
    low = -(2**40) if dense else 0
    ids = rng.integers(0, span, rows) * (1 if dense else 2**30) + low
    batches = np.array_split(ids, 7)
    bounds = (int(ids.min()), int(ids.max()))
    counter = count(batches, bounds)
    assert counter.repeats == expected_repeats(ids)
    assert counter.mode == ("bitmap" if dense else "sorted")  # as the bounds chose


def test_statistics_that_lie_switch_to_the_array_and_lose_no_count():
    ids = [np.array([3, 3, 4, 5]), np.array([5, 6]), np.array([100, 3, -7, -7]), np.array([100, 8])]
    counter = count(ids, (3, 6))  # the footers claimed 3..6
    assert counter.repeats == expected_repeats(np.concatenate(ids)) == 5
    assert counter.mode == "sorted"


def test_extreme_int64_ids_stay_distinct():
    ids = np.array([-(2**63), 2**63 - 1, 0, -1], np.int64)
    assert count([ids], (-(2**63), 2**63 - 1)).repeats == 0
    assert count([ids[:2], ids[:2]], (0, 1)).repeats == 2  # lying bounds, the extremes still compare


def test_threads_add_at_once_and_the_count_stays_exact():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 200_000, 400_000)
    counter = RepeatCounter(len(ids), (0, 199_999))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(counter.add, np.array_split(ids, 64)))
    assert counter.repeats == expected_repeats(ids)


@pytest.mark.parametrize("bounds", [(0, 10), None], ids=["bitmap", "sorted"])
def test_more_ids_than_announced_are_still_counted_exactly(bounds):
    counter = RepeatCounter(3, bounds)
    for batch in ([1, 2], [3, 4], [2, 5, 1], [9] * 7):
        counter.add(np.array(batch))
    assert counter.repeats == 2 + 6


def test_bounds_from_footers_and_none_without_statistics(tmp_path):
    with_stats, without = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [5, 9, 2], "x": [1, 2, 3]}), with_stats, row_group_size=2)
    pq.write_table(pa.table({"id": [-4, 1]}), tmp_path / "c.parquet")
    pq.write_table(pa.table({"id": [1, 2]}), without, write_statistics=False)
    metadata = [pq.ParquetFile(p).metadata for p in (with_stats, tmp_path / "c.parquet")]
    assert id_bounds(metadata, "id") == (-4, 9)
    assert id_bounds([pq.ParquetFile(without).metadata], "id") is None
    assert id_bounds(metadata, "missing") is None


@pytest.mark.parametrize(
    "kind, holds",
    [(pa.int8(), True), (pa.int64(), True), (pa.uint32(), True), (pa.uint64(), False), (pa.float64(), False)],
)
def test_holds_int64(kind, holds):
    assert holds_int64(kind) is holds
