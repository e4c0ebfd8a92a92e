"""The benchmark's dataset: ``N`` rows of 20 float32 features and an int64 id, one date, 8 files.

Written with numpy and pyarrow in chunks, so that 10 million rows never need much memory, under
``WORKDIR/data/rows=N/date=2026-11-01/part-0000K.parquet`` (hive-partitioned, so the job's
``--partition-column date --date 2026-11-01`` reads it), and reused when a complete copy is there.

A way's written rows are counted from its output's parquet footers (``count_rows``), or for a way
that publishes to an Iceberg table, from a pyiceberg scan of the date (``count_table_rows``).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATE = dt.date(2026, 11, 1)
PARTITION_COLUMN = "date"
ID_COLUMN = "id"
FEATURES = tuple(f"f{i:02d}" for i in range(20))
FILES = 8
CHUNK_ROWS = 250_000


def schema() -> pa.Schema:
    """The input's schema: the id, then the features."""
    return pa.schema([(ID_COLUMN, pa.int64())] + [(name, pa.float32()) for name in FEATURES])


def features(rows: int, rng: np.random.Generator) -> np.ndarray:
    """A ``rows x 20`` float32 matrix of features (standard normal)."""
    return rng.standard_normal((rows, len(FEATURES)), dtype=np.float32)


def label(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A binary label, a simple noisy function of the features (used to train the models)."""
    logit = x[:, 0] + 0.8 * x[:, 1] - 0.6 * x[:, 2] + x[:, 3] * x[:, 4] + 0.5 * np.sin(3 * x[:, 5])
    return (logit + 0.5 * rng.standard_normal(len(x)) > 0).astype(np.int64)


def training_sample(rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a training sample, drawn like the dataset's rows."""
    rng = np.random.default_rng([seed, 1])
    x = features(rows, rng)
    return x, label(x, rng)


def partition_dir(root: Path) -> Path:
    """The directory of the date's partition under a dataset root."""
    return root / f"{PARTITION_COLUMN}={DATE.isoformat()}"


def ensure_dataset(workdir: Path, rows: int, seed: int = 0) -> Path:
    """The root of the ``rows``-row dataset in ``workdir``, generated unless a complete copy is there.

    Args:
        workdir: The benchmark's work directory.
        rows: Number of rows.
        seed: Random seed (combined with the file number).

    Returns:
        ``WORKDIR/data/rows=N``, the root to read with the date as a hive partition.
    """
    root = workdir / "data" / f"rows={rows}"
    if root.is_dir() and _complete(root, rows):
        return root
    shutil.rmtree(root, ignore_errors=True)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    directory = partition_dir(staging)
    directory.mkdir(parents=True)
    bounds = np.linspace(0, rows, FILES + 1).astype(np.int64)
    for k in range(FILES):
        with pq.ParquetWriter(directory / f"part-{k:05d}.parquet", schema()) as writer:
            for table in _chunks(int(bounds[k]), int(bounds[k + 1]), np.random.default_rng([seed, k])):
                writer.write_table(table)
    staging.rename(root)
    return root


def _chunks(start: int, stop: int, rng: np.random.Generator) -> Iterator[pa.Table]:
    for first in range(start, stop, CHUNK_ROWS):
        last = min(first + CHUNK_ROWS, stop)
        x = features(last - first, rng)
        columns = [pa.array(np.arange(first, last, dtype=np.int64))] + [
            pa.array(x[:, i]) for i in range(x.shape[1])
        ]
        yield pa.Table.from_arrays(columns, schema=schema())


def _complete(root: Path, rows: int) -> bool:
    files = sorted(partition_dir(root).glob("*.parquet"))
    return len(files) == FILES and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == rows


def parquet_files(root: Path) -> list[Path]:
    """The data files of a written dataset: ``*.parquet`` not under a ``_`` or ``.`` directory.

    Spark's ``_SUCCESS``, the job's ``_rejects/``, ``_staging/`` and ``_manifest.json``, and checksum
    files are not data.
    """
    return sorted(
        path
        for path in root.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
    )


def count_table_rows(
    catalog_name: str, properties: dict[str, str], identifier: str
) -> tuple[int, list[str], int]:
    """Rows of the date in an Iceberg table and in its rejects' table, with pyiceberg (a scan each).

    The scan's count reads the data files' record counts from the table's manifests (a file's rows
    are read only where the filter does not match it whole), as ``count_rows`` reads parquet footers.

    Args:
        catalog_name: The catalog's name (a SQL catalog keeps its tables under its name).
        properties: The catalog's pyiceberg properties.
        identifier: The scores table, ``NAMESPACE.TABLE``; its rejects are ``NAMESPACE.TABLE__rejects``.

    Returns:
        The scores' rows of the date (0 when there is no table), the table's column names, and the
        date's rejected rows (0 when there is no rejects' table).
    """
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import EqualTo

    catalog = load_catalog(catalog_name, **properties)
    try:
        counts = []
        for name in (identifier, f"{identifier}__rejects"):
            try:
                table = catalog.load_table(name)
            except NoSuchTableError:
                counts.append((0, []))
                continue
            scan = table.scan(row_filter=EqualTo(PARTITION_COLUMN, DATE.isoformat()))
            counts.append((scan.count(), [field.name for field in table.schema().fields]))
    finally:
        engine = getattr(catalog, "engine", None)  # a SQL catalog's connections: closed before deletion
        if engine is not None:
            engine.dispose()
    (rows, columns), (rejected, _) = counts
    return rows, columns, rejected


def count_rows(root: Path) -> tuple[int, list[str]]:
    """Rows and column names of the parquet files written under ``root``, from their footers.

    Returns:
        The total row count (0 when there are no files) and the first file's column names.
    """
    files = parquet_files(root)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    columns = pq.ParquetFile(files[0]).schema_arrow.names if files else []
    return rows, columns
