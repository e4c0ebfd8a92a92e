"""The row checks of the batch quarantine, in numpy: for online records and the batch job's Arrow pass.

Spark's scoring pass checks rows with Spark expressions (``scoring.batch.quarantine``); an online
request brings JSON values or tensors instead, and the Arrow pass (``scoring.batch.arrow_pass``) Arrow
batches read by pyarrow, so the same checks are written here in numpy, with the same reason codes
(``REASONS``) in the same order: for each feature in model order,
null, not castable, NaN, infinite, out of range. A record's reason is the first check it fails, as
the batch job would write it in ``reject_reason`` (``CODE:COLUMN``).

Casts follow the batch job's: text parses to numbers and booleans, integral numbers feed integer
features, and what the batch job refuses for a whole column (a number for a boolean or a text
feature, a fractional number for an integer feature) is ``not_castable`` for the one record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.model.signature import NUMPY_TYPES, Feature

# Reason codes of rejected rows, in the order the checks run; the batch quarantine writes the same.
REASONS = {
    "null_id": "an id column is null",
    "null_feature": "a feature is null",
    "not_castable": "a feature's value cannot be cast to the signature's type (bad text, overflow)",
    "nan_feature": "a feature is NaN",
    "infinite_feature": "a feature is +inf or -inf",
    "out_of_range": "a feature is outside the range the model declares",
    "duplicate_id": "another row has the same id; one row per id is scored",
}

_FLOATING = ("float", "double")
_INTEGER_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# Text Spark casts to a boolean (trimmed, any case).
_TRUE = frozenset({"t", "true", "y", "yes", "1"})
_FALSE = frozenset({"f", "false", "n", "no", "0"})
# What Spark's cast reads as a number: ASCII digits only (float() and int() also take other scripts'
# digits and "1_000"), "nan" without a sign. No nested quantifier: a long digit string is linear.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,19}", re.ASCII)
_NUMBER_TEXT = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity)|nan",
    re.IGNORECASE | re.ASCII,
)
# Spark trims ASCII whitespace and control characters (<= U+0020) around text it casts, nothing else.
_TRIMMED = "".join(chr(c) for c in range(33))


@dataclass(frozen=True)
class RowProblem:
    """Why one record cannot be scored.

    Attributes:
        row: The record's position in its request.
        reason: ``CODE:COLUMN``, as the batch job writes it in ``reject_reason``.
    """

    row: int
    reason: str

    @property
    def code(self) -> str:
        """The reason code, a key of ``REASONS``."""
        return self.reason.split(":", 1)[0]

    @property
    def field(self) -> str:
        """The feature the record failed on."""
        return self.reason.split(":", 1)[1]

    def describe(self) -> str:
        """One line naming the record, the field and the reason, never the value."""
        return f"record {self.row}: {self.reason} ({REASONS[self.code]})"


def typed_records(
    records: Sequence[Mapping[str, object]], features: Sequence[Feature]
) -> tuple[dict[str, np.ndarray], list[RowProblem]]:
    """The features of JSON-like records, cast to the signature's types, and the records that fail.

    A missing field is a null. Fields that are not features are ignored.

    Returns:
        One array per feature, in model order (a failed record's value is a placeholder; the
        predictors take them as ``pd.DataFrame(columns)``), and one problem per failed record, in
        record order.
    """
    columns = {f.name: [record.get(f.name) for record in records] for f in features}
    return typed_columns(columns, features, len(records))


def typed_columns(
    columns: Mapping[str, Sequence[object] | np.ndarray],
    features: Sequence[Feature],
    rows: int,
    nulls: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], list[RowProblem]]:
    """Like ``typed_records``, for values given column by column (tensors, an Arrow batch's columns).

    A feature missing from ``columns`` is null in every row.

    Args:
        columns: Each feature's values.
        features: The model's features, in model order.
        rows: Rows in all.
        nulls: For a feature whose values are a numpy array with placeholders where the value is
            null (an Arrow column's nulls filled), the mask of those rows.

    Returns:
        One array per feature, in model order (a failed row's value is a placeholder), and one
        problem per failed row, in row order.
    """
    # Per row, the index in `reasons` of the first check it failed (-1: none yet); earlier features
    # and earlier checks win, as in the batch job's coalesce.
    first = np.full(rows, -1, dtype=np.int64)
    reasons: list[str] = []
    typed = {}
    for feature in features:
        null = (nulls or {}).get(feature.name)
        values, checks = check_column(columns.get(feature.name, [None] * rows), feature, null)
        for failed, reason in checks:
            if failed is None or not failed.any():  # the common case, and the cheap test
                continue
            hit = failed & (first < 0)
            if hit.any():
                first[hit] = len(reasons)
                reasons.append(reason)
        typed[feature.name] = values
    problems = [RowProblem(int(i), reasons[first[i]]) for i in np.flatnonzero(first >= 0)]
    return typed, problems


def scorable_rows(frame: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    """The rows of ``frame`` the batch job would score, their features cast, in model order.

    For samples read with pyarrow (the pre-flight, ``scoring convert``'s parity check): the rows the
    job would reject are left out rather than named.
    """
    columns = {f.name: _values(frame[f.name]) for f in features}
    typed, problems = typed_columns(columns, features, len(frame))
    keep = np.ones(len(frame), dtype=bool)
    keep[[p.row for p in problems]] = False
    return pd.DataFrame({name: values[keep] for name, values in typed.items()})


def _values(column: pd.Series) -> np.ndarray | list:
    """A pandas column as the row checks take it: a numpy array, or Python values with None for nulls."""
    if column.dtype == object or isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
        return [None if pd.isna(v) else v for v in column.tolist()] if column.hasnans else column.tolist()
    return column.to_numpy()


def check_column(
    values: Sequence[object] | np.ndarray, feature: Feature, nulls: np.ndarray | None = None
) -> tuple[np.ndarray, list[tuple[np.ndarray | None, str]]]:
    """One feature's values cast to its numpy type, and its checks in the batch job's order.

    Args:
        values: The feature's values.
        feature: The feature.
        nulls: Where ``values`` is a numpy array holding placeholders for nulls, their mask: those
            rows fail the null check, which comes before every other.

    Returns:
        The typed values (a placeholder where a value fails), and (mask of the rows that fail, or
        None when none can, ``CODE:COLUMN``) for each check: null, not castable, NaN, infinite, out
        of range.

    Raises:
        ValueError: ``values`` is a multi-dimensional array.
    """
    values = _as_array(values, feature)
    if values.ndim != 1:
        raise ValueError(f"feature {feature.name!r}: expected one value per record")
    if values.dtype.kind in "fiu" and feature.type in _FLOATING:
        typed, null, bad = _narrowed(values, NUMPY_TYPES[feature.type]), None, None
    elif values.dtype.kind in "iu" and feature.type in _INTEGER_BOUNDS:
        low, high = _INTEGER_BOUNDS[feature.type]
        null, bad = None, (values < low) | (values > high)
        typed = np.where(bad, 0, values).astype(NUMPY_TYPES[feature.type])
    elif values.dtype.kind == "b" and feature.type == "boolean":
        typed, null, bad = values, None, None
    else:
        typed, null, bad = _cast_values(values, feature)
    if nulls is not None:
        null = nulls if null is None else null | nulls
    name = feature.name
    checks = [(null, f"null_feature:{name}"), (bad, f"not_castable:{name}")]
    if feature.type in _FLOATING:
        checks += [(np.isnan(typed), f"nan_feature:{name}"), (np.isinf(typed), f"infinite_feature:{name}")]
    if feature.type not in ("string", "boolean"):
        # Compared as doubles, as Spark widens a float column to compare it with a double bound.
        wide = typed.astype(np.float64, copy=False) if feature.type == "float" else typed
        if feature.min is not None:
            checks.append((wide < feature.min, f"out_of_range:{name}"))
        if feature.max is not None:
            checks.append((wide > feature.max, f"out_of_range:{name}"))
    return typed, checks


def _as_array(values: Sequence[object] | np.ndarray, feature: Feature) -> np.ndarray:
    """JSON values as an array: numbers of one kind in one conversion, anything else as objects."""
    if isinstance(values, np.ndarray):
        return values
    if len(values):
        kinds = {type(v) for v in values}
        if feature.type in _FLOATING and kinds <= {float, int}:
            try:
                return np.array(values, dtype=np.float64)
            except OverflowError:  # an integer beyond any double: the slow path calls it not castable
                pass
        if feature.type in _INTEGER_BOUNDS and kinds == {int} and all(-(2**63) <= v < 2**63 for v in values):
            return np.array(values, dtype=np.int64)
    # One object per record, even where a value is itself a list.
    return np.fromiter(values, dtype=object, count=len(values))


def _cast_values(values: np.ndarray, feature: Feature) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast value by value (JSON values of any type): typed values, null mask, not-castable mask."""
    cast = _CASTS[feature.type]
    null = np.zeros(len(values), dtype=bool)
    bad = np.zeros(len(values), dtype=bool)
    out = []
    for i, value in enumerate(values.tolist()):
        converted = None if value is None else cast(value, feature.type)
        if converted is None:
            (null if value is None else bad)[i] = True
            out.append(_PLACEHOLDER[feature.type])
        else:
            out.append(converted)
    dtype = NUMPY_TYPES[feature.type]
    if feature.type in _FLOATING:
        return _narrowed(np.array(out, dtype=np.float64), dtype), null, bad
    return np.array(out, dtype=dtype), null, bad


def _narrowed(values: np.ndarray, dtype: type) -> np.ndarray:
    if dtype is not np.float32 or values.dtype == np.float32:
        return values.astype(dtype, copy=False)
    # A double beyond float32's range becomes inf, as Spark's cast makes it.
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _as_float(value: object, _: str) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1024 else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(text := value.strip(_TRIMMED)):
        return float(text)
    return None


def _as_integer(value: object, kind: str) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip(_TRIMMED)
        value = int(text) if _INTEGER_TEXT.fullmatch(text) else None
    if not isinstance(value, int):
        return None
    low, high = _INTEGER_BOUNDS[kind]
    return value if low <= value <= high else None


def _as_boolean(value: object, _: str) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip(_TRIMMED).lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def _as_string(value: object, _: str) -> str | None:
    return value if isinstance(value, str) else None


_CASTS = {
    "float": _as_float,
    "double": _as_float,
    "integer": _as_integer,
    "long": _as_integer,
    "boolean": _as_boolean,
    "string": _as_string,
}
_PLACEHOLDER = {"float": 0.0, "double": 0.0, "integer": 0, "long": 0, "boolean": False, "string": ""}
