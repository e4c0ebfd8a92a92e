"""Whether an id repeats, told from the input files' id column on the driver, without a Spark job.

The common input has one integer id column. The driver reads it from the parquet files in batches (a
few files at a time) and counts repeats with ``scoring.dataset.ids.RepeatCounter``: dense ids, as the
footers' statistics bound them, are marked in a bitmap of a byte per id (10 MB at 10,000,000 rows from
0), others kept in one int64 array and sorted. That costs well under a second at 10,000,000 rows, where
a Spark shuffle of the ids costs two stages and, on two cores, about 17 s (BENCHMARKS.md).

Every other input gets ``None``, and Spark decides (``scoring.batch.quarantine.ids_repeat``): more
rows than ``DRIVER_MAX_ROWS``, several id columns, ids that are not integers (or are unsigned 64-bit,
which int64 cannot hold), null ids (whose rows are rejected and which Spark groups as it always has),
an id column whose name the files spell otherwise, and a file that does not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from scoring.batch.inputs import FOOTER_THREADS, parquet_file
from scoring.dataset.ids import RepeatCounter, holds_int64, id_bounds

if TYPE_CHECKING:
    import pyarrow.parquet as pq

# Ids read on the driver at most: 400 MB of int64 when they are sparse. Above it, Spark's shuffle
# spreads the work.
DRIVER_MAX_ROWS = 50_000_000

# Ids decoded at a time per file: a batch's sort and its memory stay small.
ID_BATCH_ROWS = 65_536
# Files whose ids are read at once. On 2 cores at 10,000,000 rows: 1 thread 1.1 s and +65 MB on the
# driver, 2 threads 0.7 s and +103 MB, 4 threads 0.9 s and +136 MB (each reader's buffers and arena).
ID_THREADS = 2


def ids_unique(
    sizes: Sequence[tuple[str, int]],
    id_columns: Sequence[str],
    max_rows: int = DRIVER_MAX_ROWS,
    skip_nulls: bool = False,
) -> bool | None:
    """Whether no two rows of the files share an id, when the driver can tell cheaply.

    Args:
        sizes: The input's files, as Spark names them, with their rows from the footers
            (``scoring.batch.inputs.InputFiles.sizes``).
        id_columns: The columns that identify a row.
        max_rows: Read no more ids than this on the driver.
        skip_nulls: Tell on the ids that are not null (their rows are rejected, and never repeat a
            valid row's id), instead of leaving an input with a null id to Spark.

    Returns:
        True when every id is unique, False when one repeats, None when Spark must tell (see the module).
    """
    import pyarrow as pa

    rows = sum(n for _, n in sizes)
    if len(id_columns) != 1 or not 0 < rows <= max_rows:
        return None
    column = id_columns[0]
    uris = [uri for uri, _ in sizes]
    try:
        with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(uris))) as pool:
            metadata = list(pool.map(lambda uri: _id_metadata(uri, column), uris))
        if not all(metadata):
            return None
        counter = RepeatCounter(rows, id_bounds(metadata, column))
        with ThreadPoolExecutor(max_workers=min(ID_THREADS, len(uris))) as pool:
            read = list(
                pool.map(
                    lambda args: _count_ids(*args, column, counter, skip_nulls),
                    zip(sizes, metadata, strict=True),
                )
            )
    except (OSError, pa.ArrowException, ValueError):  # Spark's read decides what an unreadable file means
        return None
    if not all(read):
        return None
    return counter.repeats == 0


def _id_metadata(uri: str, column: str) -> pq.FileMetaData | None:
    """The file's footer, when ``column`` is in it once, as integers that int64 holds; else None."""
    file = parquet_file(uri)
    try:
        schema = file.schema_arrow
        index = schema.get_field_index(column)  # -1: absent, or named twice
        return file.metadata if index >= 0 and holds_int64(schema.field(index).type) else None
    finally:
        file.close()


def _count_ids(
    size: tuple[str, int], footer: pq.FileMetaData, column: str, counter: RepeatCounter, skip_nulls: bool
) -> bool:
    """Feed one file's ids to ``counter``; False on a null id (unless skipped) or rows not the footer's.

    The file is opened with its footer already read (``_id_metadata``), and closed when done: an open
    reader keeps its last buffers (about 6 MB a file here).
    """
    uri, rows = size
    file = parquet_file(uri, footer)
    read = 0
    try:
        for batch in file.iter_batches(batch_size=ID_BATCH_ROWS, columns=[column], use_threads=False):
            values = batch.column(0)
            read += len(values)
            if values.null_count:
                if not skip_nulls:
                    return False
                values = values.drop_null()
            counter.add(values.to_numpy())
    finally:
        file.close()
    return read == rows
