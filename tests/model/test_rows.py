"""The online row checks: the batch quarantine's reasons, in its order, for JSON values and tensors."""

from __future__ import annotations

import math

import numpy as np

from scoring.model.rows import REASONS, typed_columns, typed_records
from scoring.model.signature import Feature

FEATURES = (
    Feature("age", "integer", 18, 120),
    Feature("income", "double", 0, None),
    Feature("ratio", "float", 0, 1),
    Feature("lines", "long"),
    Feature("active", "boolean"),
    Feature("region", "string"),
)
GOOD = {"age": 40, "income": 1000.5, "ratio": 0.5, "lines": 3, "active": True, "region": "north"}


def _reason(**changes) -> str | None:
    _, problems = typed_records([{**GOOD, **changes}], FEATURES)
    return problems[0].reason if problems else None


def test_good_values_cast_to_the_signature_types():
    columns, problems = typed_records(
        [GOOD, {**GOOD, "age": "41", "income": " 2e3 ", "lines": 4.0, "active": "no", "extra": 1}], FEATURES
    )
    assert problems == []
    assert list(columns) == [f.name for f in FEATURES]
    dtypes = [str(c.dtype) for c in columns.values()]
    assert dtypes == ["int32", "float64", "float32", "int64", "bool", "object"]
    assert [c[1] for c in columns.values()] == [41, 2000.0, np.float32(0.5), 4, False, "north"]


def test_each_bad_value_gets_the_batch_reason():
    assert _reason(age=None) == "null_feature:age"
    assert _reason(age="forty") == "not_castable:age"
    assert _reason(age=40.5) == "not_castable:age"
    assert _reason(age=True) == "not_castable:age"
    assert _reason(age=2**31) == "not_castable:age"
    assert _reason(lines=2**63) == "not_castable:lines"
    assert _reason(income="1_000") == "not_castable:income"
    assert _reason(income=[1]) == "not_castable:income"
    assert _reason(income=math.nan) == "nan_feature:income"
    assert _reason(income="NaN") == "nan_feature:income"
    assert _reason(income=-math.inf) == "infinite_feature:income"
    assert _reason(ratio=1e40) == "infinite_feature:ratio"  # beyond float32, as Spark's cast makes it
    assert _reason(income=-0.01) == "out_of_range:income"
    assert _reason(age=121) == "out_of_range:age"
    assert _reason(active=1) == "not_castable:active"
    assert _reason(region=5) == "not_castable:region"
    assert _reason(active="maybe") == "not_castable:active"
    assert _reason(age="\u0661\u0662") == "not_castable:age"  # Arabic-Indic digits: Spark reads ASCII only
    assert _reason(income="\u00a01") == "not_castable:income"  # Spark trims <= U+0020 only
    assert _reason(income="+nan") == "not_castable:income"
    assert _reason(income=10**400) == "not_castable:income"
    assert _reason(income="1" * 100_000 + "x") == "not_castable:income"  # and in linear time
    assert _reason(lines="9" * 5_000) == "not_castable:lines"
    assert {p.split(":")[0] for p in REASONS} >= {"null_feature", "not_castable", "out_of_range"}


def test_a_float_feature_is_compared_with_its_bounds_as_a_double():
    # float32(0.1) is 0.100000001: above a maximum of 0.1 for Spark, which widens the float to compare.
    _, problems = typed_records([{"x": 0.1}, {"x": 0.0999}], (Feature("x", "float", None, 0.1),))
    assert [(p.row, p.reason) for p in problems] == [(0, "out_of_range:x")]


def test_the_first_failed_check_in_model_order_wins():
    assert _reason(age=None, income=math.nan) == "null_feature:age"
    assert _reason(income=math.nan, ratio=None) == "nan_feature:income"
    record = dict(GOOD)
    del record["region"]
    _, problems = typed_records([GOOD, record, {**GOOD, "age": 5}], FEATURES)
    assert [(p.row, p.reason) for p in problems] == [(1, "null_feature:region"), (2, "out_of_range:age")]
    assert (
        problems[1].describe()
        == "record 2: out_of_range:age (a feature is outside the range the model declares)"
    )


def test_tensors_take_the_fast_path_and_the_same_checks():
    columns = {
        "age": np.array([40, 5], dtype=np.int64),
        "income": np.array([1.0, np.inf]),
        "ratio": np.array([0.5, 0.5], dtype=np.float32),
        "lines": np.array([1, 2]),
        "active": np.array([True, False]),
        "region": np.array(["a", "b"], dtype=object),
    }
    typed, problems = typed_columns(columns, FEATURES, 2)
    assert [(p.row, p.reason) for p in problems] == [(1, "out_of_range:age")]
    assert typed["income"].dtype == np.float64 and typed["age"].dtype == np.int32
    _, problems = typed_columns({k: v for k, v in columns.items() if k != "lines"}, FEATURES, 2)
    assert [(p.row, p.reason) for p in problems] == [(0, "null_feature:lines"), (1, "out_of_range:age")]
