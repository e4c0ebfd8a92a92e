"""Reading the input partition with Spark, and counting its rows from the parquet footers.

The input's columns are checked against the model's signature by ``scoring.model.schema``, on the
schema only and before any row is scored: a job that cannot succeed fails in seconds with one line,
and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from scoring.dataset.storage import filesystem
from scoring.errors import InputError
from scoring.model.signature import Feature

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.parquet as pq
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


def read_input(spark: SparkSession, path: str, partition_column: str, date: dt.date) -> DataFrame:
    """Read the input parquet, keeping only ``date``'s partition when the input is partitioned by it.

    Filtering on a partition column prunes the other partitions' directories: they are never listed
    file by file nor read.

    Raises:
        InputError: The path does not exist, holds no parquet, or its partition column has a type
            that cannot hold a date.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    try:
        df = spark.read.parquet(path)
    except AnalysisException as e:
        # getCondition is Spark 4's name for Spark 3.5's getErrorClass (EMR 7 runs Spark 3.5).
        condition = (getattr(e, "getCondition", None) or e.getErrorClass)() or ""
        if condition.startswith("PATH_NOT_FOUND"):
            raise InputError(f"input path not found: {path}") from e
        if condition.startswith("UNABLE_TO_INFER_SCHEMA"):
            raise InputError(f"input is empty: no parquet files under {path}") from e
        raise InputError(f"cannot read input {path}: {condition or 'unreadable parquet'}") from e
    except Exception as e:  # Py4JJavaError or a captured Spark error: both only say it in the text
        if not _unreadable_file(e):
            raise
        raise unreadable_input(e, path) from e
    if partition_column not in df.columns:
        return df
    column_type = df.schema[partition_column].dataType
    if isinstance(column_type, T.DateType):
        value = F.lit(date)
    elif isinstance(column_type, T.StringType):
        value = F.lit(date.isoformat())
    else:
        raise InputError(
            f"input {path}: column {partition_column!r} has type {column_type.simpleString()}; "
            "expected a date or a YYYY-MM-DD string"
        )
    return df.where(F.col(partition_column) == value)


@dataclass(frozen=True)
class InputFiles:
    """The input partition's files, as their parquet footers describe them.

    Attributes:
        sizes: Each readable file that holds rows, as Spark names it, with its rows.
        skipped: Unreadable files skipped (only with ``--skip-corrupt-files``).
    """

    sizes: tuple[tuple[str, int], ...]
    skipped: list[str]

    @property
    def rows(self) -> int:
        """Rows in the partition (the readable files' footers summed)."""
        return sum(n for _, n in self.sizes)

    @property
    def files(self) -> int:
        """Readable files that hold rows."""
        return len(self.sizes)


# Footers are read on the driver, a few at a time: on an object store each is two small range reads.
FOOTER_THREADS = 16


def count_input(df: DataFrame, where: str, partition_dir: str | None, skip_corrupt: bool) -> InputFiles:
    """Count the input's rows from its parquet footers, without a pass over the data.

    Args:
        df: The input as read (its ``inputFiles()`` are the files Spark will scan).
        where: The input path, for messages.
        partition_dir: ``COLUMN=VALUE`` when the input is partitioned and only that partition is read.
        skip_corrupt: Skip files whose footer cannot be read instead of failing.

    Raises:
        InputError: A file is not readable parquet (and corrupt files are not being skipped).
    """
    listed = sorted(f for f in df.inputFiles() if partition_dir is None or f"/{partition_dir}/" in f)
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, max(len(listed), 1))) as pool:
        counts = list(pool.map(_footer_rows, listed))
    unreadable = [f for f, n in zip(listed, counts, strict=True) if n is None]
    if unreadable and not skip_corrupt:
        raise unreadable_input_file(unreadable[0])
    sizes = tuple((f, n) for f, n in zip(listed, counts, strict=True) if n)
    return InputFiles(sizes, unreadable)


@contextmanager
def spark_read_errors(where: str) -> Iterator[None]:
    """Turn the error for an unreadable input file (Spark's, or a local worker's) inside into one line.

    The footers are checked before the job starts (``count_input``); this catches a file whose
    footer reads but whose data does not.
    """
    try:
        yield
    except Exception as e:  # Py4JJavaError or a captured Spark error: both only say it in the text
        if not _unreadable_file(e):
            raise
        raise unreadable_input(e, where) from e


def unreadable_input(error: Exception, where: str) -> InputError:
    """The one-line error for a Spark read error on a corrupt or truncated input file."""
    return unreadable_input_file(_unreadable_file(error) or where)


def unreadable_input_file(file: str) -> InputError:
    """The one-line error for an input file whose footer or data cannot be read."""
    return InputError(
        f"input file {file} is not readable parquet (corrupt or truncated); "
        "fix or remove it, or rerun with --skip-corrupt-files to skip it"
    )


def _unreadable_file(error: Exception) -> str | None:
    """The file a Spark read error names, when the error is an unreadable file."""
    match = re.search(r"FAILED_READ_FILE[^\n]*?reading file (\S+?)\.?\s", str(error))
    if match:
        return match.group(1)
    match = re.search(r"(\S+) is not a Parquet file", str(error))
    return match.group(1) if match else None


def _footer_rows(uri: str) -> int | None:
    """Rows in the parquet file at ``uri``, from its footer; None when it is not readable parquet."""
    footer = read_footer(uri)
    return None if footer is None else footer.num_rows


def read_footer(uri: str) -> pq.FileMetaData | None:
    """The footer of the parquet file at ``uri``; None when it is not readable parquet."""
    import pyarrow as pa

    try:
        return parquet_file(uri).metadata
    except (OSError, pa.ArrowException):  # not parquet, or unreadable
        return None


def parquet_file(uri: str, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    """The parquet file at ``uri``, named as Spark names it (``file:/``, ``s3a://``, ``s3://``), opened.

    Args:
        uri: The file, as Spark names it.
        metadata: Its footer, when already read: the file is opened without reading it again.

    Raises:
        OSError, pyarrow.ArrowException: The file cannot be opened or its footer is not parquet.
    """
    import pyarrow.parquet as pq

    # Spark names local files file:/..., and S3 objects s3a:// or s3:// (EMRFS); pyarrow knows s3://.
    location = unquote(re.sub(r"^file:/+", "/", uri)) if uri.startswith("file:") else uri
    location = re.sub(r"^s3[an]://", "s3://", location)
    fs, path = filesystem(location)
    return pq.ParquetFile(path, filesystem=fs, metadata=metadata)


# Rows the driver reads from the input's first file for its probe sample.
HEAD_ROWS = 1_000


def head_sample(
    sizes: Sequence[tuple[str, int]], features: Sequence[Feature], rows: int, read: int = HEAD_ROWS
) -> pd.DataFrame | None:
    """Up to ``rows`` scorable rows from the head of the input's first file, read by pyarrow.

    The rows are those the job would score, their features cast as its checks cast them
    (``scoring.model.rows.scorable_rows``): a sample for the driver to probe the model with, read in
    milliseconds where a Spark job over the partition takes seconds.

    Args:
        sizes: The input's files with their rows (``InputFiles.sizes``).
        features: The run's features, in model order.
        rows: Scorable rows wanted.
        read: Rows read from the head of the first file.

    Returns:
        The sample, or None when it is empty or the file cannot say: a feature missing from the first
        file (pyarrow's batches leave an unknown column out, silently), or a file pyarrow cannot
        read. Spark then samples instead.
    """
    import pyarrow as pa

    from scoring.model.rows import scorable_rows

    if not sizes:
        return None
    try:
        batches = parquet_file(sizes[0][0]).iter_batches(
            batch_size=read, columns=[f.name for f in features], use_threads=False
        )
        head = next(batches).to_pandas()
    except (OSError, pa.ArrowException, StopIteration):
        return None
    if any(f.name not in head.columns for f in features):
        return None
    sample = scorable_rows(head, features).head(rows)
    return None if sample.empty else sample


def column_types(schema: StructType) -> dict[str, str]:
    """Column name to Spark type name (``double``, ``bigint``, ``decimal(10,2)``, ...)."""
    return {f.name: f.dataType.simpleString() for f in schema.fields}
