"""The validator's bounded-memory parts, without Spark: exact streaming quantiles, the drift's counts,
and the id buckets spilled to disk."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from scoring.dataset import buckets, quantiles
from scoring.dataset.buckets import RepeatBuckets, bucket_of, repeated_ids
from scoring.dataset.quantiles import exact_quantiles, key_values, order_keys
from scoring.dataset.validate import Reference, ScoreCounts, bin_counts, psi_bins

DECILES = np.linspace(0, 1, 11)


def batches_of(values: np.ndarray, size: int):
    """A ``read`` for ``exact_quantiles``: a new pass over ``values`` in batches at each call."""
    return lambda: (values[i : i + size] for i in range(0, len(values), size))


_RNG = np.random.default_rng(7)
COLUMNS = {
    "uniform": _RNG.random(20_000),
    "beta": _RNG.beta(2, 5, 30_001),
    "normal": _RNG.normal(0, 3, 9_999),
    "few values": np.round(_RNG.random(20_000), 1),
    "integers": _RNG.integers(-50, 50, 12_345).astype(np.float64),
    "one value": np.full(5_000, 0.25),
    "extremes": np.array([0.0, -0.0, 5e-324, -5e-324, np.inf, -np.inf, 1e308, -1e308, 3.0]),
    "one row": np.array([0.7]),
}


@pytest.mark.parametrize("hold_limit", [1 << 18, 100, 1], ids=["held at once", "narrowed", "every digit"])
@pytest.mark.parametrize("name", list(COLUMNS))
def test_exact_quantiles_are_numpys_to_the_last_bit(name, hold_limit, monkeypatch):
    monkeypatch.setattr(quantiles, "HOLD_LIMIT", hold_limit)
    values = COLUMNS[name]
    found = exact_quantiles(batches_of(values, 997), DECILES, len(values))
    np.testing.assert_array_equal(found.values, np.quantile(values, DECILES))
    assert found.rows == len(values)
    assert found.passes <= 5  # the whole column held, or up to four digits then one hold


def test_exact_quantiles_take_few_passes_over_a_large_column(monkeypatch):
    monkeypatch.setattr(quantiles, "HOLD_LIMIT", 1_000)  # as 2^18 is to a few hundred million rows
    values = np.random.default_rng(1).beta(2, 5, 400_000)
    found = exact_quantiles(batches_of(values, 65_536), DECILES, len(values))
    np.testing.assert_array_equal(found.values, np.quantile(values, DECILES))
    assert found.passes == 3


def test_exact_quantiles_of_a_column_with_nan_or_no_rows():
    values = np.array([0.1, np.nan, 0.3])
    assert np.isnan(exact_quantiles(batches_of(values, 2), DECILES, 3).values).all()  # as np.quantile
    empty = exact_quantiles(batches_of(np.empty(0), 2), DECILES, 0)
    assert empty.rows == 0 and np.isnan(empty.values).all()


def test_a_wrong_row_hint_changes_nothing(monkeypatch):
    monkeypatch.setattr(quantiles, "HOLD_LIMIT", 50)
    values = np.random.default_rng(2).random(3_000)
    for hint in (10, 3_000, 10**9):  # held at first though large, or counted though small
        found = exact_quantiles(batches_of(values, 64), DECILES, hint)
        np.testing.assert_array_equal(found.values, np.quantile(values, DECILES))


def test_order_keys_sort_as_the_floats_and_come_back():
    values = np.concatenate([COLUMNS["extremes"], COLUMNS["normal"]])
    keys = order_keys(values)
    assert np.all(np.diff(values[np.argsort(keys, kind="stable")]) >= 0)
    np.testing.assert_array_equal(key_values(keys), values)


@pytest.mark.parametrize("name", ["beta", "few values", "integers", "extremes"])
def test_bin_counts_are_numpys_histogram(name):
    values = COLUMNS[name]
    edges = np.unique(np.quantile(values, DECILES))
    edges[0], edges[-1] = -np.inf, np.inf
    np.testing.assert_array_equal(bin_counts(values, edges), np.histogram(values, edges)[0])
    inner = np.linspace(-1.0, 1.0, 41)  # values outside the edges are not counted; the last edge is
    np.testing.assert_array_equal(bin_counts(values, inner), np.histogram(values, inner)[0])
    with_nan = np.append(values, np.nan)
    np.testing.assert_array_equal(bin_counts(with_nan, inner), np.histogram(with_nan, inner)[0])


def streamed_psi(expected: np.ndarray, actual: np.ndarray, batch: int) -> float:
    """The validator's way: exact deciles in passes, then both days counted batch by batch."""
    found = exact_quantiles(batches_of(expected, batch), DECILES, len(expected))
    edges = np.unique(found.values)
    edges[0], edges[-1] = -np.inf, np.inf
    counts = [ScoreCounts(edges), ScoreCounts(edges)]
    for values, counted in zip((expected, actual), counts, strict=True):
        for part in batches_of(values, batch)():
            counted.add(part)
    return Reference(None, edges, None, counts[0], found.passes + 1).psi_bins(counts[1]).psi


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_streamed_psi_is_the_in_memory_psi(shift, monkeypatch):
    """Rank error 0: the streamed index on a generated score shift is the exact one, to the last bit."""
    monkeypatch.setattr(quantiles, "HOLD_LIMIT", 500)
    rng = np.random.default_rng(11)
    reference, scores = rng.beta(2, 5, 50_000), rng.beta(2 + shift, 5, 40_000)
    assert streamed_psi(reference, scores, 4_096) == psi_bins(reference, scores).psi


def test_score_counts_keep_the_range_and_say_whether_all_are_one_value():
    counts = ScoreCounts()
    for part in (np.array([0.5, np.nan]), np.array([0.2, 0.9])):
        counts.add(part)
    assert (counts.rows, counts.nans, counts.low, counts.high) == (4, 1, 0.2, 0.9)
    assert not counts.all_close_to(0.5)
    same = ScoreCounts()
    same.add(np.array([0.3, 0.3 + 1e-9]))
    assert same.all_close_to(0.3) == np.allclose([0.3, 0.3 + 1e-9], 0.3)
    assert ScoreCounts().all_close_to(0.3)  # no scores: np.allclose of nothing


def int_batches(ids: np.ndarray, size: int = 1_000, name: str = "customer_id"):
    return [pa.record_batch([pa.array(ids[i : i + size])], names=[name]) for i in range(0, len(ids), size)]


@pytest.fixture
def spill_dir(monkeypatch):
    """The buckets' temporary directory, to see what is spilled there (and that it is removed)."""
    with tempfile.TemporaryDirectory() as directory:
        monkeypatch.setattr(tempfile, "tempdir", directory)
        yield Path(directory)


@pytest.mark.parametrize("integer", [True, False], ids=["sorted in buckets", "grouped in buckets"])
def test_a_planted_duplicate_among_many_ids_spread_over_buckets_is_caught(integer, spill_dir, monkeypatch):
    monkeypatch.setattr(buckets, "SPILL_ROWS", 5_000)
    rng = np.random.default_rng(3)
    ids = rng.choice(2**62, size=200_000, replace=False).astype(np.int64)  # sparse: no range to mark
    ids[-1] = ids[0]  # the first batch's first id again, in the last batch
    counter = RepeatBuckets(len(ids), integer, rows_per_bucket=2_000)
    assert counter.buckets == 100
    seen = set()
    for batch in int_batches(ids):
        counter.add(batch)
        seen.update(p.name for p in spill_dir.rglob("bucket-*"))
    assert len(seen) == 100  # every bucket was written to disk
    assert counter.repeats() == 1
    assert not any(spill_dir.iterdir())  # and removed after the count
    assert counter.repeats() == 1  # asked again: the same answer


def test_buckets_hold_about_their_share_of_the_ids():
    """Consecutive ids (a sequence) spread evenly: each bucket near ROWS_PER_BUCKET, none twice it."""
    ids = pa.record_batch([pa.array(np.arange(1_000_000, dtype=np.int64))], names=["id"])
    sizes = np.bincount(bucket_of(ids, 100, integer=True), minlength=100)
    assert sizes.min() > 9_000 and sizes.max() < 11_000


KEYS = {
    "text": pa.table({"id": pa.array([f"c-{i}" for i in range(30_000)])}),
    "text and date": pa.table(
        {
            "name": pa.array([f"n{i % 997}" for i in range(30_000)]),
            "day": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=i % 31) for i in range(30_000)]),
        }
    ),
    "integers with nulls": pa.table({"a": pa.array([i % 5_000 if i % 7 else None for i in range(30_000)])}),
    "floats and booleans": pa.table(
        {
            "x": pa.array([float(i % 3_001) * (-1 if i % 2 else 1) for i in range(30_000)]),
            "b": pa.array([i % 3 == 0 for i in range(30_000)]),
        }
    ),
}


@pytest.mark.parametrize("name", list(KEYS))
def test_bucketed_counts_match_one_grouping_of_every_id(name, spill_dir, monkeypatch):
    """Text, composite, nullable keys: spread over buckets, the count is the whole table's grouping."""
    monkeypatch.setattr(buckets, "SPILL_ROWS", 3_000)
    keys = KEYS[name]
    planted = pa.concat_tables([keys, keys.slice(12_345, 1)])  # one more repeat, at the end
    counter = RepeatBuckets(planted.num_rows, integer=False, rows_per_bucket=1_000)
    for batch in planted.to_batches(max_chunksize=777):
        counter.add(batch)
    assert counter.repeats() == repeated_ids(planted)
    assert repeated_ids(planted) == repeated_ids(keys) + 1


def test_nulls_of_one_integer_id_count_as_one_id():
    counter = RepeatBuckets(6, integer=True, rows_per_bucket=2)
    counter.add(pa.record_batch([pa.array([1, None, 2, None, 3, None], pa.int32())], names=["id"]))
    assert counter.repeats() == 2  # three nulls: one id, two repeats (as pyarrow's grouping)


def test_a_small_partition_is_one_bucket_in_memory(spill_dir):
    counter = RepeatBuckets(3_000, integer=True)
    for batch in int_batches(np.r_[np.arange(2_999), 5]):
        counter.add(batch)
    assert counter.buckets == 1 and not any(spill_dir.iterdir())
    assert counter.repeats() == 1


def test_the_buckets_are_removed_when_the_count_never_runs(spill_dir):
    counter = RepeatBuckets(10_000, integer=True, rows_per_bucket=1_000)
    for batch in int_batches(np.arange(10_000)):
        counter.add(batch)
    counter.close()
    assert not any(spill_dir.iterdir())
