"""Counting repeated ids batch by batch, in little memory: the job's input check and the validator's.

Integer ids are usually dense (a sequence, a surrogate key): the parquet footers' statistics bound
them, and a byte per value of that range marks which ids were seen, so 10,000,000 ids from 0 take
10 MB and each batch costs a sort of its own rows. Ids that are sparse, or files that lack statistics,
fall back to keeping every id in one int64 array sorted at the end (8 bytes a row). Either way the
count is exact: the rows less the distinct ids.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The bitmap is used while it takes no more memory than the sorted array would (8 bytes a row).
BITMAP_BYTES_PER_ROW = 8


def holds_int64(kind: pa.DataType) -> bool:
    """Whether every value of an Arrow type is an integer that int64 holds (unsigned 64-bit is not)."""
    return pa.types.is_integer(kind) and kind != pa.uint64()


def id_bounds(metadata: Sequence[pq.FileMetaData], column: str) -> tuple[int, int] | None:
    """The least and greatest value of integer ``column`` in the files, from their footers' statistics.

    Returns:
        ``(low, high)``, or None when a row group holding rows has no min/max for the column.
    """
    lows, highs = [], []
    for meta in metadata:
        index = meta.schema.to_arrow_schema().get_field_index(column)
        if index < 0:
            return None
        for group in range(meta.num_row_groups):
            chunk = meta.row_group(group)
            if chunk.num_rows == 0:
                continue
            stats = chunk.column(index).statistics
            if stats is None or not stats.has_min_max:
                return None
            lows.append(stats.min)
            highs.append(stats.max)
    return (int(min(lows)), int(max(highs))) if lows else None


class RepeatCounter:
    """Counts the rows whose id an earlier row had, fed a batch at a time (from any thread).

    Args:
        rows: How many ids will be added, at most.
        bounds: The least and greatest id (``id_bounds``), when known. Within ``BITMAP_BYTES_PER_ROW``
            bytes a row the ids are marked in a bitmap; otherwise, or when an id falls outside the
            bounds (statistics that lie), they are kept and sorted.
    """

    def __init__(self, rows: int, bounds: tuple[int, int] | None = None) -> None:
        self._rows = rows
        self._lock = threading.Lock()
        self._repeats = 0  # repeats counted in the bitmap
        self._low = self._high = 0
        self._seen: np.ndarray | None = None
        self._values: np.ndarray | None = None
        self._filled = 0  # ids held in _values
        if bounds is not None and 0 <= bounds[1] - bounds[0] < BITMAP_BYTES_PER_ROW * max(rows, 1):
            self._low, self._high = bounds
            self._seen = np.zeros(bounds[1] - bounds[0] + 1, dtype=bool)
        else:
            self._values = np.empty(rows, dtype=np.int64)

    def add(self, ids: np.ndarray) -> None:
        """Count one batch of ids (any integer dtype that int64 holds; no nulls).

        More ids than ``rows`` are still counted exactly (the array grows): a file that changed
        between its footer's read and its scan is for the caller's row checks to catch.
        """
        ids = ids.astype(np.int64, copy=False)
        # Only the bitmap needs a batch sorted (to tell each id's first row); sort outside the lock,
        # so that threads sort at once. The mode only ever goes from bitmap to sorted.
        ordered = np.sort(ids) if self._seen is not None else None
        with self._lock:
            if self._seen is not None and len(ids) and (ids.min() < self._low or ids.max() > self._high):
                self._to_values()  # the statistics lied
            if self._seen is None:
                self._hold(ids)
                return
            offsets = ordered - self._low
            first = np.ones(len(offsets), dtype=bool)  # each id's first row within the batch
            first[1:] = offsets[1:] != offsets[:-1]
            self._repeats += len(offsets) - int(np.count_nonzero(first & ~self._seen[offsets]))
            self._seen[offsets] = True

    def _hold(self, ids: np.ndarray) -> None:
        """Append ids to the array, doubling it when more came than were announced."""
        needed = self._filled + len(ids)
        if needed > len(self._values):
            grown = np.empty(max(needed, 2 * len(self._values)), dtype=np.int64)
            grown[: self._filled] = self._values[: self._filled]
            self._values = grown
        self._values[self._filled : needed] = ids
        self._filled = needed

    def _to_values(self) -> None:
        """Leave the bitmap for the array: it starts with the distinct ids seen, once each.

        Their repeats are already in ``_repeats``; what the array's sort finds comes on top.
        """
        distinct = np.flatnonzero(self._seen) + self._low
        self._values = np.empty(max(self._rows, len(distinct)), dtype=np.int64)
        self._values[: len(distinct)] = distinct
        self._filled = len(distinct)
        self._seen = None

    @property
    def mode(self) -> str:
        """``bitmap`` or ``sorted``: how the ids are being counted."""
        return "bitmap" if self._seen is not None else "sorted"

    @property
    def repeats(self) -> int:
        """Rows less distinct ids, over everything added so far."""
        with self._lock:
            if self._seen is not None:
                return self._repeats
            held = self._values[: self._filled]
            held.sort()
            return self._repeats + int(np.count_nonzero(held[1:] == held[:-1]))
