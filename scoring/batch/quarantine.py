"""Per-row input validation: which rows the model may score, and why the others may not.

A bad row is neither scored nor dropped: it goes to the rejects dataset with a machine-readable
``reject_reason`` of the form ``CODE:COLUMN``: the first check it fails, in the order of
``scoring.model.rows.REASONS`` and of the model's features. ``scoring.model.rows`` runs the same checks
on online records and in the Arrow pass (``scoring.batch.arrow_pass``). Everything here is a Spark
expression, evaluated with the scan of Spark's pass; no row crosses to Python to be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from scoring.columns import REJECT_REASON
from scoring.model.signature import Feature

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType, StructType


_FLOATING = ("float", "double")


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


def reject_reason(schema: StructType, features: Sequence[Feature], id_columns: Sequence[str]) -> Column:
    """The reason a row cannot be scored, or null when it can.

    Args:
        schema: The input's schema (features are checked against their source types).
        features: The model's features.
        id_columns: The columns that identify a row.
    """
    from pyspark.sql import functions as F

    checks: list[tuple[Column, str]] = [(F.col(c).isNull(), f"null_id:{c}") for c in id_columns]
    for feature in features:
        source = F.col(feature.name)
        typed = try_cast(feature)
        checks.append((source.isNull(), f"null_feature:{feature.name}"))
        if schema[feature.name].dataType != spark_type(feature.type):
            checks.append((typed.isNull(), f"not_castable:{feature.name}"))
        if feature.type in _FLOATING:
            checks.append((F.isnan(typed), f"nan_feature:{feature.name}"))
            checks.append((F.abs(typed) == F.lit(float("inf")), f"infinite_feature:{feature.name}"))
        if feature.min is not None:
            checks.append((typed < F.lit(feature.min), f"out_of_range:{feature.name}"))
        if feature.max is not None:
            checks.append((typed > F.lit(feature.max), f"out_of_range:{feature.name}"))
    # when() without otherwise() is null: coalesce picks the first check that fails.
    return F.coalesce(*(F.when(failed, F.lit(reason)) for failed, reason in checks))


def typed_features(features: Sequence[Feature]) -> list[Column]:
    """Each feature cast to the signature's type, in model order (null where it cannot be cast)."""
    return [try_cast(f).alias(f.name) for f in features]


def try_cast(feature: Feature) -> Column:
    """``feature`` cast to its signature type, null where the value does not cast.

    The SQL form, because ``Column.try_cast`` is Spark 4 only and EMR 7 runs Spark 3.5.
    """
    from pyspark.sql import functions as F

    name = feature.name.replace("`", "``")
    return F.expr(f"try_cast(`{name}` AS {spark_type(feature.type).simpleString()})")


def with_duplicates_marked(df: DataFrame, id_columns: Sequence[str], order: Sequence[str]) -> DataFrame:
    """Mark all but one valid row of each id as ``duplicate_id``.

    The row kept is the first in ``order`` (all carried columns), so that reruns keep the same row.
    This costs a shuffle of the input, which is why the job calls it only when duplicates exist.

    Args:
        df: Rows with a ``reject_reason`` column.
        id_columns: The columns that identify a row.
        order: Columns that order the rows of one id.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    valid = F.col(REJECT_REASON).isNull()
    window = Window.partitionBy(valid, *id_columns).orderBy(*[F.col(c).asc_nulls_first() for c in order])
    rank = F.row_number().over(window)
    duplicate = F.when(valid & (rank > 1), F.lit(f"duplicate_id:{','.join(id_columns)}"))
    return df.withColumn(REJECT_REASON, F.coalesce(F.col(REJECT_REASON), duplicate))


def ids_repeat(df: DataFrame, id_columns: Sequence[str]) -> bool:
    """Whether any id is on more than one row, valid or not: a shuffle of the id columns alone.

    It reads no feature, so it is the cheap answer for the common case of unique ids; when it says
    yes, ``duplicate_rows`` counts the valid rows that repeat an id exactly.
    """
    from pyspark.sql import functions as F

    # max() over the counts is one job; limit(1) on the repeats would make Spark scan in rounds.
    most = df.select(*id_columns).groupBy(*id_columns).count().agg(F.max("count")).first()[0]
    return bool(most and most > 1)


def duplicate_rows(df: DataFrame, id_columns: Sequence[str]) -> int:
    """How many valid rows repeat an id that an earlier valid row has (a shuffle of the ids only)."""
    from pyspark.sql import functions as F

    counts = df.where(F.col(REJECT_REASON).isNull()).groupBy(*id_columns).count()
    return counts.where(F.col("count") > 1).agg(F.sum(F.col("count") - 1)).first()[0] or 0
