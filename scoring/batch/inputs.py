"""Reading the input partition with Spark, and the pass that counts its rows per file and reject reason.

The input's columns are checked against the model's signature by ``scoring.model.schema``, on the
schema only and before any row is scored: a job that cannot succeed fails in seconds with one line,
and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scoring.batch.quarantine import REJECT_REASON
from scoring.dataset.storage import filesystem
from scoring.errors import InputError

if TYPE_CHECKING:
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
class InputScan:
    """What one pass over the input found.

    Attributes:
        rows: Rows in the partition.
        reasons: Rows per reject reason (valid rows are not counted here).
        files: Files that held rows.
        skipped: Unreadable files skipped (only with ``--skip-corrupt-files``).
    """

    rows: int
    reasons: dict[str, int]
    files: int
    skipped: list[str]


def scan_files(checked: DataFrame, where: str, partition_dir: str | None) -> InputScan:
    """Count rows per file and reject reason in one pass, and find the files Spark skipped.

    Args:
        checked: The input with its ``reject_reason`` column.
        where: The input path, for messages.
        partition_dir: ``COLUMN=VALUE`` when the input is partitioned and only that partition is read.

    Raises:
        InputError: A file is not readable parquet (and corrupt files are not being skipped).
    """
    from pyspark.sql import functions as F

    try:
        rows = checked.groupBy(F.input_file_name().alias("file"), REJECT_REASON).count().collect()
    except Exception as e:  # Py4JJavaError or a captured Spark error: both only say it in the text
        if not _unreadable_file(e):
            raise
        raise unreadable_input(e, where) from e
    reasons: dict[str, int] = {}
    for row in rows:
        if row[REJECT_REASON] is not None:
            reasons[row[REJECT_REASON]] = reasons.get(row[REJECT_REASON], 0) + row["count"]
    read = {row["file"] for row in rows}
    listed = [f for f in checked.inputFiles() if partition_dir is None or f"/{partition_dir}/" in f]
    skipped = [f for f in listed if f not in read and not _is_readable_empty_parquet(f)]
    return InputScan(sum(row["count"] for row in rows), reasons, len(read), sorted(skipped))


def unreadable_input(error: Exception, where: str) -> InputError:
    """The one-line error for a corrupt or truncated input file, naming the file."""
    file = _unreadable_file(error) or where
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


def _is_readable_empty_parquet(uri: str) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = filesystem(uri.replace("file:///", "/", 1).replace("file:/", "/", 1))
    try:
        return pq.ParquetFile(path, filesystem=fs).metadata.num_rows == 0
    except (OSError, pa.ArrowException):  # not parquet, or unreadable
        return False


def column_types(schema: StructType) -> dict[str, str]:
    """Column name to Spark type name (``double``, ``bigint``, ``decimal(10,2)``, ...)."""
    return {f.name: f.dataType.simpleString() for f in schema.fields}
