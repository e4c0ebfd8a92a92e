"""Whether an input's columns can feed the model: type names and the casts the job accepts.

Type names are Spark's ``simpleString`` (``double``, ``bigint``, ``decimal(10,2)``), for a Spark schema
and for a parquet footer read with pyarrow alike, so that the job (on Spark) and the pre-flight and the
output validator (on pyarrow, without Spark) apply the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scoring.errors import InputError
from scoring.model.signature import Feature

# Type names without their parameters.
_INTEGRAL = ("tinyint", "smallint", "int", "bigint")
_NUMERIC = (*_INTEGRAL, "float", "double", "decimal")
_TEXT = ("string", "varchar", "char")

# Which input column types each signature type accepts. Text is cast row by row, and a row whose
# value does not parse is rejected (see scoring.batch.quarantine). Casts that would change a value's
# meaning for every row (a float to an integer, a number to a boolean) are refused outright.
_ACCEPTS = {
    "double": (*_NUMERIC, *_TEXT),
    "float": (*_NUMERIC, *_TEXT),
    "long": (*_INTEGRAL, *_TEXT),
    "integer": (*_INTEGRAL, *_TEXT),
    "boolean": ("boolean", *_TEXT),
    "string": _TEXT,
}


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
        columns: The input's columns and their Spark type names (``arrow_column_types`` of a footer,
            ``scoring.batch.inputs.column_types`` of a Spark schema).
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
