"""Whether an id repeats, told from the input files' id column on the driver, without a Spark job.

The common input has one integer id column. Its values, 8 bytes a row, are read from the parquet files
straight into one numpy array (each file into its own slice, a few files at a time) and sorted in
place: a repeat is two equal neighbours. At 10,000,000 rows that is about 80 MB and a second on the
driver, where a Spark shuffle of the ids costs two stages and, on two cores, about 17 s (BENCHMARKS.md).

Every other input gets ``None``, and Spark decides (``scoring.batch.quarantine.ids_repeat``): more
rows than ``DRIVER_MAX_ROWS``, several id columns, ids that are not integers (or are unsigned 64-bit,
which int64 cannot hold), null ids (whose rows are rejected and which Spark groups as it always has),
an id column whose name the files spell otherwise, and a file that does not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from scoring.batch.inputs import FOOTER_THREADS, parquet_file
from scoring.dataset.validate import sorted_repeats

# Ids read on the driver at most: 400 MB of int64. Above it, Spark's shuffle spreads the work.
DRIVER_MAX_ROWS = 50_000_000


def ids_unique(
    sizes: Sequence[tuple[str, int]], id_columns: Sequence[str], max_rows: int = DRIVER_MAX_ROWS
) -> bool | None:
    """Whether no two rows of the files share an id, when the driver can tell cheaply.

    Args:
        sizes: The input's files, as Spark names them, with their rows from the footers
            (``scoring.batch.inputs.InputFiles.sizes``).
        id_columns: The columns that identify a row.
        max_rows: Read no more ids than this on the driver.

    Returns:
        True when every id is unique, False when one repeats, None when Spark must tell (see the module).
    """
    rows = sum(n for _, n in sizes)
    if len(id_columns) != 1 or not 0 < rows <= max_rows:
        return None
    ids = np.empty(rows, dtype=np.int64)
    starts = np.cumsum([0, *(n for _, n in sizes)])
    jobs = [(uri, ids[start : start + n]) for (uri, n), start in zip(sizes, starts, strict=False)]
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(jobs))) as pool:
        read = list(pool.map(lambda job: _read_ids(job[0], id_columns[0], job[1]), jobs))
    if not all(read):
        return None
    return sorted_repeats(ids) == 0


def _read_ids(uri: str, column: str, into: np.ndarray) -> bool:
    """Read the integer ``column`` of one file into ``into``; False when the driver cannot tell."""
    import pyarrow as pa

    try:
        file = parquet_file(uri)
        schema = file.schema_arrow
        if schema.get_field_index(column) < 0:  # absent, or named twice
            return False
        kind = schema.field(column).type
        if not pa.types.is_integer(kind) or kind == pa.uint64():
            return False
        values = file.read(columns=[column], use_threads=False).column(0)
    except (OSError, pa.ArrowException):  # Spark's read decides what an unreadable file means
        return False
    if values.null_count or len(values) != len(into):
        return False
    offset = 0
    for chunk in values.chunks:
        into[offset : offset + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
        offset += len(chunk)
    return True
