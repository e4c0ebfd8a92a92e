"""Reading a published partition's scores: its files as one pyarrow dataset, a few columns a batch at a time.

What the validator (``scoring.dataset.validate``), the run report (``scoring.dataset.report``) and the
drift's reference read with, on whatever filesystem holds the output (a local disk, S3), without Spark.
Memory holds a few batches, whatever the partition's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from scoring.columns import PREDICTION, PROBABILITY
from scoring.dataset.destination import Day
from scoring.dataset.publish import staged_paths
from scoring.dataset.storage import filesystem
from scoring.errors import OutputError

# Rows read at a time: a batch of the columns a check needs is a few MB.
READ_BATCH_ROWS = 65_536


def score_name(schema: pa.Schema) -> str | None:
    """The score whose distribution is compared: the binary probability, else a numeric prediction."""
    if PROBABILITY in schema.names and not pa.types.is_list(schema.field(PROBABILITY).type):
        return PROBABILITY
    if PREDICTION in schema.names:
        kind = schema.field(PREDICTION).type
        if pa.types.is_floating(kind) or pa.types.is_integer(kind):
            return PREDICTION
    return None


def score_values(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A batch's score column as float64, a null as NaN."""
    return np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def partition_dataset(partition_uri: str, names: list[str]) -> ds.Dataset:
    """The partition's files (``staged_paths``) as one pyarrow dataset, on whatever filesystem holds them.

    Raises:
        OutputError: The first file, whose schema the dataset takes, is not readable parquet.
    """
    fs, path = filesystem(partition_uri)
    # No pre-buffering: it reads a file's column chunks ahead, a whole file at a time, and the job's
    # files grow with the rows; without it the reader holds a row group's columns (the job writes
    # about a million rows a row group).
    options = ds.ParquetFragmentScanOptions(pre_buffer=False)
    parquet = ds.ParquetFileFormat(default_fragment_scan_options=options)
    try:
        return ds.dataset([f"{path}/{name}" for name in names], filesystem=fs, format=parquet)
    except (OSError, pa.ArrowException) as e:
        raise OutputError(f"partition {partition_uri} is not readable parquet: {e}") from e


def partition_footers(dataset: ds.Dataset) -> list[pq.FileMetaData]:
    """Each file's footer, in the dataset's order, read once: its fragments keep it for the scan.

    Raises:
        OutputError: A file is not readable parquet.
    """
    footers = []
    for fragment in dataset.get_fragments():
        try:
            footers.append(fragment.metadata)
        except (OSError, pa.ArrowException) as e:
            raise OutputError(f"staged file {fragment.path} is not readable parquet: {e}") from e
    return footers


def read_batches(dataset: ds.Dataset, wanted: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """The ``wanted`` columns the dataset has, ``READ_BATCH_ROWS`` rows at a time.

    One file and one batch are read ahead at most: memory holds a few batches, whatever the
    partition's size.
    """
    wanted = set(wanted)
    return dataset.to_batches(
        columns=[c for c in dataset.schema.names if c in wanted],
        batch_size=READ_BATCH_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
    )


def day_files(day: Day) -> list[str]:
    """A published day's scores files, relative to its directory: the table's, or those listed there."""
    return list(day.files) if day.files is not None else staged_paths(day.uri)


def partition_batches(day: Day, wanted: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """A day's ``wanted`` columns a batch at a time (``read_batches``); none when it has no files."""
    names = day_files(day)
    return read_batches(partition_dataset(day.uri, names), wanted) if names else iter(())


@dataclass(frozen=True)
class ScoreColumn:
    """A published day's score column (``score_name``), read a batch at a time as often as needed."""

    dataset: ds.Dataset
    name: str

    @classmethod
    def of(cls, day: Day) -> ScoreColumn | None:
        """The day's score column; None when it has no files or no numeric score column."""
        names = day_files(day)
        dataset = partition_dataset(day.uri, names) if names else None
        name = score_name(dataset.schema) if dataset else None
        return cls(dataset, name) if name else None

    def rows(self) -> int:
        """The rows its footers count."""
        return sum(footer.num_rows for footer in partition_footers(self.dataset))

    def batches(self) -> Iterator[np.ndarray]:
        """One read of the column, a batch at a time (``score_values``)."""
        return (score_values(batch, self.name) for batch in read_batches(self.dataset, [self.name]))
