"""Reading the input partition and checking its columns against the model's signature.

Every check here looks at the schema only, on the driver, before any row is scored: a job that cannot
succeed fails in seconds with one line, and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from scoring.errors import InputError
from scoring.models import Feature

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

_INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")
_NUMERIC = (*_INTEGRAL, "FloatType", "DoubleType", "DecimalType")

# Which input column types each signature type accepts. Casts that could silently change a value's
# meaning (a float to an integer, a string to a number, a number to a boolean) are refused.
_ACCEPTS = {
    "double": _NUMERIC,
    "float": _NUMERIC,
    "long": _INTEGRAL,
    "integer": _INTEGRAL,
    "boolean": ("BooleanType",),
    "string": ("StringType", "VarcharType", "CharType"),
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
        condition = e.getCondition() or ""
        if condition.startswith("PATH_NOT_FOUND"):
            raise InputError(f"input path not found: {path}") from e
        if condition.startswith("UNABLE_TO_INFER_SCHEMA"):
            raise InputError(f"input is empty: no parquet files under {path}") from e
        raise InputError(f"cannot read input {path}: {condition or 'unreadable parquet'}") from e
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


def check_columns(
    schema: StructType,
    features: Sequence[Feature],
    carried: Sequence[str],
    where: str,
) -> None:
    """Check that the input has every feature with a castable type, and every carried column.

    Args:
        schema: The input's schema.
        features: The model's features.
        carried: Id and keep columns that the output copies from the input.
        where: The input's path, for messages.

    Raises:
        InputError: A column is missing, or a feature's type cannot be cast to the signature's.
    """
    fields = {f.name: f for f in schema.fields}
    for name in [f.name for f in features] + list(carried):
        if name not in fields:
            raise InputError(_missing_message(name, fields, where))
    for feature in features:
        source = fields[feature.name].dataType
        if type(source).__name__ not in _ACCEPTS[feature.type]:
            raise InputError(
                f"input {where}: feature {feature.name!r} has type {source.simpleString()}, "
                f"which cannot be cast to the model's {feature.type}"
            )


def cast_features(features: Sequence[Feature]) -> list[Column]:
    """Columns that cast each feature to the type the model's signature declares, in model order."""
    from pyspark.sql import functions as F

    return [F.col(f.name).cast(spark_type(f.type)).alias(f.name) for f in features]


def _missing_message(name: str, fields: dict, where: str) -> str:
    other_case = [f for f in fields if f.lower() == name.lower()]
    hint = f" (found {other_case[0]!r}: column names are case-sensitive)" if other_case else ""
    return f"input {where}: column {name!r} is missing{hint}"
