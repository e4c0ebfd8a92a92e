"""Counting repeated ids exactly, in memory that does not grow with the rows: ids spilled to buckets on disk.

The validator checks that no id repeats in a published partition. Holding every id, or a byte per id
of their range, grows with the rows (100M integer ids sorted: 800 MB). Here each batch's ids go to one
of ``ceil(rows / ROWS_PER_BUCKET)`` buckets by a hash of their value, so every copy of an id lands in
the same bucket; a bucket is an Arrow IPC stream in a temporary directory on local disk (``TMPDIR``).
Once every batch is in, the buckets are read back one at a time and each is counted exactly (its rows
less its distinct ids): one integer id column by a sort (8 bytes a row), other ids by pyarrow's hash
grouping. Memory is then one bucket and one batch, about ``ROWS_PER_BUCKET`` rows whatever the
partition's size; disk holds the ids once, for the check's duration. A partition of at most
``ROWS_PER_BUCKET`` rows is one bucket held in memory, and nothing is written.

The count is exact: the hash only decides where an id is counted, and equal ids hash alike. What can
make one bucket larger than the others is many copies of one id (a partition that fails the check), or
more than ``MAX_BUCKETS`` buckets' worth of rows (open files are bounded).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Rows a bucket holds: about 24 MB to count for integer ids (the ids, then sorted), more for text.
ROWS_PER_BUCKET = 1 << 20
# Rows gathered before they are written to their buckets (2 MB of integer ids; partitioning them
# takes a few times that).
SPILL_ROWS = 1 << 18
# Buckets written at once, each an open file; past MAX_BUCKETS * ROWS_PER_BUCKET rows, buckets grow.
MAX_BUCKETS = 512
# Fibonacci hashing: multiplying by 2^64 / golden ratio spreads consecutive integers evenly.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x5BD1E9955BD1E995)  # the hash of a null, whatever its type (not that of 0)


class RepeatBuckets:
    """Counts the rows whose id an earlier row had, fed the id columns a batch at a time.

    Args:
        rows: The rows that will be added (the footers'): how many buckets to spread them over.
        integer: The id is one integer column (int64 holds it): nulls are counted apart, as one id,
            and the rest sorted; otherwise the columns are grouped, a null a value like any other.
        rows_per_bucket: Rows a bucket should hold (default ``ROWS_PER_BUCKET``).
    """

    def __init__(self, rows: int, integer: bool, rows_per_bucket: int | None = None) -> None:
        per_bucket = rows_per_bucket or ROWS_PER_BUCKET
        self.buckets = min(max(1, -(-rows // per_bucket)), MAX_BUCKETS)
        self._integer = integer
        self._nulls = 0
        self._held: list[pa.RecordBatch] = []  # the one bucket, when there is one
        self._pending: list[pa.RecordBatch] = []  # batches not yet written to their buckets
        self._pending_rows = 0
        self._directory: tempfile.TemporaryDirectory | None = None
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._repeats: int | None = None

    def add(self, keys: pa.RecordBatch) -> None:
        """Take in one batch of the id columns."""
        if self._integer:
            ids = keys.column(0)
            self._nulls += ids.null_count
            keys = pa.record_batch([ids.drop_null().cast(pa.int64())], names=["id"])  # int64 holds it
        self._pending.append(keys)
        self._pending_rows += keys.num_rows
        if self.buckets == 1 or self._pending_rows >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        """Write the pending batches to their buckets, one sorted by bucket at a time.

        Batches are gathered to ``SPILL_ROWS`` rows first: one partitioning and one write per bucket
        for a million rows, not for each of the reader's small batches.
        """
        if self.buckets == 1:
            self._held.extend(self._pending)
        elif self._pending:
            keys = pa.Table.from_batches(self._pending).combine_chunks().to_batches()[0]
            bucket = bucket_of(keys, self.buckets, self._integer)
            order = np.argsort(bucket, kind="stable")  # uint16 buckets: a radix sort
            bounds = np.zeros(self.buckets + 1, dtype=np.int64)
            np.cumsum(np.bincount(bucket, minlength=self.buckets), out=bounds[1:])
            ordered = keys.take(pa.array(order))
            for index in np.flatnonzero(np.diff(bounds)).tolist():
                start, end = int(bounds[index]), int(bounds[index + 1])
                self._writer(index, keys.schema).write_batch(ordered.slice(start, end - start))
        self._pending, self._pending_rows = [], 0

    def repeats(self) -> int:
        """Rows less distinct ids over everything added; the buckets on disk are removed.

        The count is made once, at the first call: add nothing after it.
        """
        if self._repeats is None:
            try:
                self._spill()
                total = max(self._nulls - 1, 0)
                for table in self._tables():
                    total += self._count(table)
                self._repeats = total
            finally:
                self.close()
        return self._repeats

    def close(self) -> None:
        """Close and remove the buckets' files (also when the count never ran)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def _writer(self, index: int, schema: pa.Schema) -> pa.ipc.RecordBatchStreamWriter:
        if index not in self._writers:
            if self._directory is None:
                self._directory = tempfile.TemporaryDirectory(prefix="scoring-ids-")
            self._writers[index] = pa.ipc.new_stream(self._path(index), schema)
        return self._writers[index]

    def _path(self, index: int) -> str:
        return str(Path(self._directory.name) / f"bucket-{index:05d}.arrows")

    def _tables(self) -> Iterator[pa.Table]:
        """The buckets, one at a time."""
        if self.buckets == 1:
            if self._held:
                yield pa.Table.from_batches(self._held)
            self._held = []
            return
        for writer in self._writers.values():
            writer.close()
        for index in sorted(self._writers):
            with pa.OSFile(self._path(index)) as source:
                yield pa.ipc.open_stream(source).read_all()

    def _count(self, table: pa.Table) -> int:
        if not self._integer:
            return repeated_ids(table)
        ids = np.sort(table.column(0).to_numpy())
        return int(np.count_nonzero(ids[1:] == ids[:-1]))


def repeated_ids(keys: pa.Table) -> int:
    """Rows of ``keys`` whose id an earlier row has (rows less distinct ids), grouped by pyarrow."""
    return keys.num_rows - keys.group_by(keys.column_names).aggregate([]).num_rows


def bucket_of(keys: pa.RecordBatch, buckets: int, integer: bool = False) -> np.ndarray:
    """Each row's bucket, from a hash of its id columns' values: equal ids, equal buckets.

    Args:
        keys: The id columns.
        buckets: How many buckets.
        integer: ``keys`` is one int64 column without nulls: its values are the hash.
    """
    if integer:
        mixed = keys.column(0).to_numpy().view(np.uint64) * _GOLDEN
    else:
        mixed = np.zeros(keys.num_rows, dtype=np.uint64)
        for column in keys.columns:
            mixed = mixed * _GOLDEN + column_hash(column)
        mixed *= _GOLDEN
    dtype = np.uint16 if buckets <= 1 << 16 else np.uint32
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(dtype)


def column_hash(column: pa.Array) -> np.ndarray:
    """A 64-bit value per row that is equal for equal values (nulls all alike).

    Integers, dates and times are their own value; floats their bits (-0.0 as 0.0); anything else
    is hashed from its text (pandas' SipHash of the string or bytes).
    """
    kind = column.type
    if pa.types.is_temporal(kind):  # its storage, a 32- or 64-bit integer (date32 casts to no int64)
        column = column.view(pa.int32() if kind.bit_width == 32 else pa.int64())
        kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        # unsafe: an unsigned 64-bit id wraps, which keeps equal ids equal
        values = pc.fill_null(column.cast(pa.int64(), safe=False), 0).to_numpy().view(np.uint64)
    elif pa.types.is_floating(kind):
        floats = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        values = (floats + 0.0).view(np.uint64)  # -0.0 + 0.0 is 0.0
    else:
        from pandas.util import hash_array  # only text and other ids need it: imported then

        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)):
            column = column.cast(pa.string())
        values = hash_array(column.to_numpy(zero_copy_only=False), categorize=False)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    return np.where(nulls, _NULL, values)
