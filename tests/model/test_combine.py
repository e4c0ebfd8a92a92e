"""The lineup's parsing, the A/B hash and how several models' scores combine, without a job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from scoring.errors import ModelError
from scoring.lineup import Lineup, LineupError, format_pairs, parse_pairs
from scoring.model.combine import (
    blend,
    check_lineup,
    lineup_columns,
    lineup_values,
    pick_variant,
    union_features,
)
from scoring.model.output import OutputSpec, Scores
from scoring.model.signature import Feature
from scoring.model.variants import assign_variants, thresholds, variant_key

SPLIT = (("champion", 0.9), ("treatment", 0.1))
BINARY = OutputSpec("long", "binary", classes=(0, 1))


def test_weights_and_shares_are_normalised_and_round_trip():
    lineup = Lineup(
        challengers=(("a", "models:/a/1"), ("b", "models:/b/2")),
        ensemble=(("champion", 2.0), ("a", 1.0), ("b", 1.0)),
        ab=(("champion", 9.0), ("a", 1.0)),
        ab_salt="exp",
        decision_threshold=0.3,
    )
    assert lineup.ensemble == (("champion", 0.5), ("a", 0.25), ("b", 0.25))
    assert lineup.ab == (("champion", 0.9), ("a", 0.1))
    assert Lineup.from_mapping(lineup.to_json()) == lineup
    assert parse_pairs(format_pairs(lineup.ensemble), "--ensemble") == lineup.ensemble


def test_a_models_file_gives_the_champion_and_the_lineup(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "champion: models:/risk@champion\n"
        "challengers:\n  candidate: models:/risk@challenger\n"
        "ensemble: {champion: 3, candidate: 1}\n"
        "ab:\n  split: {champion: 0.5, candidate: 0.5}\n  salt: 42\n"
    )
    champion, lineup = Lineup.from_file(str(path))
    assert champion == "models:/risk@champion"
    assert lineup.challengers == (("candidate", "models:/risk@challenger"),)
    assert lineup.ensemble == (("champion", 0.75), ("candidate", 0.25))
    assert (lineup.ab, lineup.ab_salt) == ((("champion", 0.5), ("candidate", 0.5)), "42")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("challengers: [a, b]\n", "challengers must be a mapping"),
        ("ensemble: {champion: x, a: 1}\n", "'x' is not a number"),
        ("colour: red\n", "unknown key 'colour'"),
        ("ab: {split: {champion: 1, a: 1}}\nchallengers: {a: m}\n", "--ab needs --ab-salt"),
        ("ensemble: {champion: 0, a: 0}\nchallengers: {a: m}\n", "the values sum to zero"),
        ("[1, 2\n", "not YAML"),
    ],
)
def test_a_bad_models_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(LineupError) as error:
        Lineup.from_file(str(path))
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_the_same_id_and_salt_give_the_same_variant_in_any_process():
    keys = [variant_key([i]) for i in range(2_000)]
    here = assign_variants(keys, SPLIT, "exp-7").tolist()
    code = (
        "import json, sys; from scoring.model.variants import assign_variants, variant_key;"
        "print(json.dumps(assign_variants([variant_key([i]) for i in range(2000)],"
        " [('champion', 0.9), ('treatment', 0.1)], 'exp-7').tolist()))"
    )
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0 and json.loads(out.stdout) == here, out.stderr
    assert assign_variants(keys, SPLIT, "exp-8").tolist() != here  # another salt, another draw


def test_the_documented_rule_recomputed_in_spark_sql_gives_the_same_variants(spark):
    """The module's rule, as an analyst would write it in SQL, agrees row for row."""
    ids = list(range(5_000))
    bound = thresholds(SPLIT)[0]
    frame = spark.createDataFrame([(i,) for i in ids], "id long")
    frame.createOrReplaceTempView("ids")
    hashed = "conv(substr(sha2(concat('exp-7', char(31), CAST(id AS STRING)), 256), 1, 16), 16, 10)"
    rows = spark.sql(
        f"SELECT id, CASE WHEN CAST({hashed} AS DECIMAL(20, 0)) < {bound} THEN 'champion'"
        " ELSE 'treatment' END AS variant FROM ids ORDER BY id"
    ).collect()
    want = assign_variants([variant_key([i]) for i in ids], SPLIT, "exp-7").tolist()
    assert [r["variant"] for r in rows] == want
    assert abs(want.count("treatment") / len(ids) - 0.1) < 0.015


def test_shares_move_only_the_rows_at_the_border():
    keys = [variant_key([i]) for i in range(5_000)]
    before = assign_variants(keys, (("a", 0.5), ("b", 0.5)), "s")
    after = assign_variants(keys, (("a", 0.6), ("b", 0.4)), "s")
    moved = before != after
    assert set(before[moved]) == {"b"} and set(after[moved]) == {"a"}  # b -> a only


def test_integer_ids_hash_alike_from_numpy_and_json():
    assert variant_key([np.int64(7)]) == variant_key([7]) == "7"
    assert variant_key(["a", 3]) == "a\x1f3"


def test_union_of_features_intersects_ranges_and_refuses_two_types():
    union = union_features(
        {
            "champion": (Feature("age", "integer", 18, 120), Feature("income", "double", 0)),
            "x": (Feature("income", "double", 10, 1e6), Feature("tenure", "integer")),
        }
    )
    assert union == (
        Feature("age", "integer", 18, 120),
        Feature("income", "double", 10, 1e6),
        Feature("tenure", "integer"),
    )
    with pytest.raises(ModelError, match="'income' is double for model 'champion' but float for model 'x'"):
        union_features({"champion": (Feature("income", "double"),), "x": (Feature("income", "float"),)})


def _scores(p: list[float]) -> Scores:
    probability = np.array(p)
    return Scores((probability >= 0.5).astype(np.int64), probability, classes=(0, 1))


def test_columns_values_ensemble_and_variants_of_one_batch():
    lineup = Lineup(
        challengers=(("x", "models:/x/1"),),
        ensemble=(("champion", 3.0), ("x", 1.0)),
        ab=(("champion", 0.5), ("x", 0.5)),
        ab_salt="s",
    )
    outputs = {"champion": BINARY, "x": BINARY}
    scores = {"champion": _scores([0.1, 0.9, 0.4, 0.6]), "x": _scores([0.3, 0.2, 0.8, 0.7])}
    keys = [variant_key([i]) for i in range(4)]
    columns = [(c.name, c.type) for c in lineup_columns(lineup, outputs)]
    assert columns == [
        ("prediction", "long"),
        ("probability", "double"),
        ("challenger_x_prediction", "long"),
        ("challenger_x_probability", "double"),
        ("ensemble_probability", "double"),
        ("variant", "string"),
    ]
    values = lineup_values(lineup, outputs, scores, keys)
    np.testing.assert_allclose(values["ensemble_probability"], [0.15, 0.725, 0.5, 0.625])
    variants = assign_variants(keys, lineup.ab, "s")
    assert (values["variant"] == variants).all()
    want = np.where(variants == "x", scores["x"].probability, scores["champion"].probability)
    np.testing.assert_array_equal(values["probability"], want)
    np.testing.assert_array_equal(pick_variant(variants, scores).probability, want)
    np.testing.assert_allclose(blend(lineup, outputs, scores), values["ensemble_probability"])


def test_a_regressors_ensemble_averages_its_values():
    regressor = OutputSpec("double", None)
    lineup = Lineup(challengers=(("x", "m"),), ensemble=(("champion", 1.0), ("x", 1.0)))
    scores = {"champion": Scores(np.array([1.0, 3.0]), None), "x": Scores(np.array([3.0, 5.0]), None)}
    outputs = {"champion": regressor, "x": regressor}
    assert [c.name for c in lineup_columns(lineup, outputs)][-1] == "ensemble_prediction"
    np.testing.assert_allclose(lineup_values(lineup, outputs, scores)["ensemble_prediction"], [2.0, 4.0])


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            OutputSpec("string", "multiclass", classes=("a", "b", "c")),
            "binary probabilities against multiclass",
        ),
        (OutputSpec("long", "binary", classes=(1, 2)), "classes [0, 1] against [1, 2]"),
        (OutputSpec("double", None), "binary probabilities against double predictions"),
    ],
)
def test_models_that_cannot_be_combined_are_refused(other, message):
    for lineup in (
        Lineup(challengers=(("x", "m"),), ensemble=(("champion", 1.0), ("x", 1.0))),
        Lineup(challengers=(("x", "m"),), ab=(("champion", 0.5), ("x", 0.5)), ab_salt="s"),
    ):
        with pytest.raises(ModelError) as error:
            check_lineup(lineup, {"champion": BINARY, "x": other})
        assert "'champion'" in str(error.value) and "'x'" in str(error.value)
    with pytest.raises(ModelError, match=re.escape(message)):
        check_lineup(Lineup(challengers=(("x", "m"),), ensemble=(("champion", 1.0), ("x", 1.0))),
                     {"champion": BINARY, "x": other})  # fmt: skip
