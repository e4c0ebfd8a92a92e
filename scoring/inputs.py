"""Reading the input partition and checking its columns against the model's signature.

Every check here looks at the schema only, on the driver, before any row is scored: a job that cannot
succeed fails in seconds with one line, and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scoring.errors import InputError
from scoring.models import Feature

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

# Type names are Spark's simpleString, without parameters: the same names for a Spark schema and for
# a parquet footer read with pyarrow (see scoring.preflight).
_INTEGRAL = ("tinyint", "smallint", "int", "bigint")
_NUMERIC = (*_INTEGRAL, "float", "double", "decimal")
_TEXT = ("string", "varchar", "char")

# Which input column types each signature type accepts. Text is cast row by row, and a row whose
# value does not parse is rejected (see scoring.quarantine). Casts that would change a value's
# meaning for every row (a float to an integer, a number to a boolean) are refused outright.
_ACCEPTS = {
    "double": (*_NUMERIC, *_TEXT),
    "float": (*_NUMERIC, *_TEXT),
    "long": (*_INTEGRAL, *_TEXT),
    "integer": (*_INTEGRAL, *_TEXT),
    "boolean": ("boolean", *_TEXT),
    "string": _TEXT,
}


def spark_type(mlflow_type: str) -> DataType:
    """The Spark SQL type of an MLflow column type."""
    from pyspark.sql import types as T

    return {
        "boolean": T.BooleanType(),
        "integer": T.IntegerType(),
        "long": T.LongType(),
        "float": T.FloatType(),
        "double": T.DoubleType(),
        "string": T.StringType(),
    }[mlflow_type]


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

    from scoring.quarantine import REJECT_REASON

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

    from scoring.publish import filesystem

    fs, path = filesystem(uri.replace("file:///", "/", 1).replace("file:/", "/", 1))
    try:
        return pq.ParquetFile(path, filesystem=fs).metadata.num_rows == 0
    except (OSError, pa.ArrowException):  # not parquet, or unreadable
        return False


def column_types(schema: StructType) -> dict[str, str]:
    """Column name to Spark type name (``double``, ``bigint``, ``decimal(10,2)``, ...)."""
    return {f.name: f.dataType.simpleString() for f in schema.fields}


def arrow_column_types(schema) -> dict[str, str]:
    """Column name to Spark type name, for a pyarrow schema (a parquet footer)."""
    return {f.name: arrow_type_name(f.type) for f in schema}


def arrow_type_name(dtype) -> str:
    """Spark's simpleString for a pyarrow type, as Spark would read it from parquet."""
    import pyarrow as pa

    if pa.types.is_dictionary(dtype):
        return arrow_type_name(dtype.value_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"array<{arrow_type_name(dtype.value_type)}>"
    if pa.types.is_decimal(dtype):
        return f"decimal({dtype.precision},{dtype.scale})"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    names = {
        pa.int64(): "bigint", pa.int32(): "int", pa.int16(): "smallint", pa.int8(): "tinyint",
        pa.float64(): "double", pa.float32(): "float", pa.bool_(): "boolean", pa.string(): "string",
        pa.large_string(): "string", pa.date32(): "date", pa.binary(): "binary",
    }  # fmt: skip
    return names.get(dtype, str(dtype))


def check_columns(
    columns: Mapping[str, str],
    features: Sequence[Feature],
    carried: Sequence[str],
    where: str,
) -> None:
    """Check that the input has every feature with a castable type, and every carried column.

    Args:
        columns: The input's columns and their Spark type names (see ``column_types``).
        features: The model's features.
        carried: Id and keep columns that the output copies from the input.
        where: The input's path, for messages.

    Raises:
        InputError: A column is missing, or a feature's type cannot be cast to the signature's.
    """
    for name in [f.name for f in features] + list(carried):
        if name not in columns:
            raise InputError(_missing_message(name, columns, where))
    for feature in features:
        source = columns[feature.name]
        if source.split("(")[0] not in _ACCEPTS[feature.type]:
            raise InputError(
                f"input {where}: feature {feature.name!r} has type {source}, "
                f"which cannot be cast to the model's {feature.type}"
            )


def _missing_message(name: str, fields: Mapping[str, str], where: str) -> str:
    other_case = [f for f in fields if f.lower() == name.lower()]
    hint = f" (found {other_case[0]!r}: column names are case-sensitive)" if other_case else ""
    return f"input {where}: column {name!r} is missing{hint}"
