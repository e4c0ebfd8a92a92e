"""Several models in one pass: champion and challengers, a weighted ensemble, an A/B split.

On the test session's Spark and SQLite registry: the champion is the demo's ONNX version, one challenger
a custom ``mlflow.pyfunc`` model (pyfunc flavor only, on a subset of the features), one a scikit-learn
model logged the ordinary way (a signature and nothing else).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import DATE, run_score
from scipy import stats

from scoring import demo
from scoring.cli import main
from scoring.dataset.validate import validate_partition

PYFUNC_FEATURES = ["debt_ratio", "utilization", "late_payments"]
AB_ROWS = 10_000


class ShareOfRisk:
    """A pyfunc model (``mlflow.pyfunc.PythonModel``): a fixed logistic score of three features."""

    def predict(self, context, model_input, params=None):
        x = model_input[PYFUNC_FEATURES].to_numpy(dtype=np.float64)
        p = 1 / (1 + np.exp(-(-2.0 + 2.5 * x[:, 0] + 1.8 * x[:, 1] + 0.7 * x[:, 2])))
        return pd.DataFrame({"0": 1 - p, "1": p})


@pytest.fixture(scope="module")
def challengers(registry) -> dict[str, str]:
    """Two challengers in the registry: a custom pyfunc and an ordinary scikit-learn model."""
    import cloudpickle
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    train = demo.make_customers(2_000, DATE, seed=5)
    features = train[list(demo.FEATURE_TYPES)]
    plain = LogisticRegression(max_iter=2_000).fit(features, train["defaulted"])

    # Pickled by value, so Spark's Python workers need not import this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    python_model = type("ShareOfRiskModel", (ShareOfRisk, mlflow.pyfunc.PythonModel), {})()
    with mlflow.start_run(run_name="lineup-challengers"):
        pyfunc = mlflow.pyfunc.log_model(
            name="pyfunc",
            python_model=python_model,
            signature=infer_signature(features[PYFUNC_FEATURES], python_model.predict(None, features)),
            registered_model_name="risk-pyfunc",
        )
        ordinary = mlflow.sklearn.log_model(
            plain,
            name="plain",
            signature=infer_signature(features, plain.predict(features)),
            registered_model_name="risk-plain",
        )
    return {
        "custom": f"models:/risk-pyfunc/{pyfunc.registered_model_version}",
        "plain": f"models:/risk-plain/{ordinary.registered_model_version}",
    }


@pytest.fixture(scope="module")
def champion(registry) -> str:
    return f"models:/{demo.MODEL_NAME}/{registry['onnx']}"


def partition(output) -> tuple[pd.DataFrame, dict]:
    where = output / f"date={DATE}"
    frame = pd.read_parquet(where).sort_values("customer_id").reset_index(drop=True)
    return frame, json.loads((where / "_manifest.json").read_text())


@pytest.fixture(scope="module")
def one_pass(spark, champion, challengers, input_dir, tmp_path_factory) -> tuple[pd.DataFrame, dict]:
    """The champion, both challengers and an ensemble of all three, in one job."""
    output = tmp_path_factory.mktemp("one-pass")
    code = run_score(
        champion, input_dir, output,
        "--challenger", f"custom={challengers['custom']}",
        "--challenger", f"plain={challengers['plain']}",
        "--ensemble", "champion=2,custom=1,plain=1",
        "--decision-threshold", "0.3",
    )  # fmt: skip
    assert code == 0
    return partition(output)


def test_one_pass_equals_each_model_alone(spark, one_pass, champion, challengers, input_dir, tmp_path):
    frame, manifest = one_pass
    for name, uri, prefix in (
        ("champion", champion, ""),
        ("custom", challengers["custom"], "challenger_custom_"),
        ("plain", challengers["plain"], "challenger_plain_"),
    ):
        assert run_score(uri, input_dir, tmp_path / name) == 0
        alone, _ = partition(tmp_path / name)
        assert alone["customer_id"].tolist() == frame["customer_id"].tolist()
        np.testing.assert_allclose(frame[f"{prefix}probability"], alone["probability"], rtol=0, atol=1e-9)
        assert (frame[f"{prefix}prediction"] == alone["prediction"]).all(), name
    assert manifest["model"]["backend"] == "onnx"
    assert [(c["name"], c["model"]["name"], c["model"]["backend"]) for c in manifest["challengers"]] == [
        ("custom", "risk-pyfunc", "pyfunc"),
        ("plain", "risk-plain", "pyfunc"),
    ]
    assert (frame["model_version"] == manifest["model"]["version"]).all()


def test_the_ensemble_is_the_weighted_mean(one_pass):
    frame, manifest = one_pass
    assert manifest["ensemble"] == {"weights": {"champion": 0.5, "custom": 0.25, "plain": 0.25}}
    want = (
        0.5 * frame["probability"]
        + 0.25 * frame["challenger_custom_probability"]
        + 0.25 * frame["challenger_plain_probability"]
    )
    np.testing.assert_allclose(frame["ensemble_probability"], want, rtol=0, atol=1e-12)


def test_agreement_in_the_manifest_equals_pandas_and_scipy(one_pass):
    frame, manifest = one_pass
    champion = frame["probability"].to_numpy()
    for challenger in manifest["challengers"]:
        other = frame[f"challenger_{challenger['name']}_probability"].to_numpy()
        diff = np.abs(champion - other)
        got = challenger["agreement"]
        assert got["rows"] == len(frame)
        assert got["pearson"] == pytest.approx(np.corrcoef(champion, other)[0, 1], abs=1e-9)
        assert got["spearman"] == pytest.approx(stats.spearmanr(champion, other).statistic, abs=1e-9)
        assert got["mean_abs_diff"] == pytest.approx(diff.mean(), abs=1e-12)
        # The smallest difference no more than 1 % of the rows exceed (exact at this size).
        assert got["p99_abs_diff"] == pytest.approx(np.quantile(diff, 0.99, method="inverted_cdf"), abs=1e-15)
        flips = ((champion >= 0.3) != (other >= 0.3)).mean()
        assert got["flip_share"] == pytest.approx(flips, abs=1e-12)
        assert 0 < got["flip_share"] < 1  # the threshold was applied: the figure is informative
    assert manifest["decision_threshold"] == 0.3


def test_validate_checks_the_challenger_columns(one_pass, input_dir, tmp_path):
    _, manifest = one_pass
    root = manifest["output"]["path"]
    report = validate_partition(root, DATE)
    assert report.ok, report.summary()
    names = {c.name for c in report.checks}
    assert "challenger columns" in names, names


@pytest.fixture(scope="module")
def ab_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab-input")
    demo.write_partitioned(demo.make_customers(AB_ROWS, DATE, seed=9), root, DATE, files=2)
    return root


def test_ab_split_serves_each_rows_variant(spark, champion, challengers, ab_input, tmp_path):
    code = run_score(
        champion, ab_input, tmp_path,
        "--challenger", f"plain={challengers['plain']}",
        "--ab", "champion=0.9,plain=0.1", "--ab-salt", "experiment-42",
    )  # fmt: skip
    assert code == 0
    frame, manifest = partition(tmp_path)
    from scoring.model.variants import assign_variants, variant_key

    keys = [variant_key([i]) for i in frame["customer_id"]]
    want = assign_variants(keys, [("champion", 0.9), ("plain", 0.1)], "experiment-42")
    assert (frame["variant"].to_numpy() == want).all()
    treated = frame["variant"] == "plain"
    assert abs(treated.mean() - 0.1) < 0.01
    served = np.where(treated, frame["challenger_plain_probability"], np.nan)
    np.testing.assert_array_equal(frame["probability"][treated], served[treated])
    plain_version = manifest["challengers"][0]["model"]["version"]
    assert (frame["model_version"][treated] == plain_version).all()
    assert (frame["model_version"][~treated] == manifest["model"]["version"]).all()
    assert manifest["ab"] == {
        "salt": "experiment-42",
        "split": {"champion": 0.9, "plain": 0.1},
        "rows": {"champion": int((~treated).sum()), "plain": int(treated.sum())},
    }
    # Under the split, agreement is measured on the champion's own rows.
    assert manifest["challengers"][0]["agreement"]["rows"] == int((~treated).sum())
    report = validate_partition(str(tmp_path), DATE)
    assert report.ok, report.summary()

    # A split the data does not follow: caught, unless the tolerance allows it.
    path = tmp_path / f"date={DATE}" / "_manifest.json"
    path.write_text(
        json.dumps({**manifest, "ab": {**manifest["ab"], "split": {"champion": 0.5, "plain": 0.5}}})
    )
    checks = {c.name: c for c in validate_partition(str(tmp_path), DATE).checks}
    assert checks["variant shares"].status == "fail" and "champion" in checks["variant shares"].detail
    validate = ["validate", "--output", str(tmp_path), "--date", DATE.isoformat()]
    assert main(validate) == 1 and main([*validate, "--variant-tolerance", "0.5"]) == 0


def test_an_ensemble_of_different_classes_is_refused_in_one_line(
    spark, champion, input_dir, tmp_path, capsys, registry
):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    train = demo.make_customers(500, DATE, seed=2)
    features = train[list(demo.FEATURE_TYPES)]
    bands = np.array(["low", "mid", "high"])[train["late_payments"].clip(0, 2)]
    tree = LogisticRegression(max_iter=200).fit(features, bands)
    with mlflow.start_run(run_name="three-classes"):
        info = mlflow.sklearn.log_model(
            tree, name="tree", signature=infer_signature(features, tree.predict(features)),
            registered_model_name="risk-bands",
        )  # fmt: skip
    code = run_score(
        champion, input_dir, tmp_path,
        "--challenger", f"bands=models:/risk-bands/{info.registered_model_version}",
        "--ensemble", "champion=1,bands=1",
    )  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1
    assert "'champion' and 'bands' cannot be combined" in errors[0], errors
    assert not (tmp_path / f"date={DATE}").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--challenger", "Bad-Name=models:/x/1"], "must be a lower-case identifier"),
        (["--challenger", "champion=models:/x/1"], "'champion' cannot name a challenger"),
        (["--ensemble", "champion=1,nobody=1"], "--ensemble: no model named 'nobody'"),
        (["--ab", "champion=0.5,x=0.5"], "--ab: no model named 'x'"),
        (["--challenger", "x=models:/credit-risk/1", "--ab", "champion=0.5,x=0.5"], "--ab needs --ab-salt"),
        (["--challenger", "x=models:/credit-risk@nowhere"], "challenger 'x':"),
    ],
)
def test_a_bad_lineup_is_one_line_and_exit_1(
    spark, champion, input_dir, tmp_path, capsys, registry, flags, message
):
    code = run_score(champion, input_dir, tmp_path, *flags)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and message in errors[0], errors


def test_above_the_exact_bound_spark_aggregates_and_spearman_ranks_a_seeded_sample(
    spark, champion, challengers, input_dir, tmp_path, monkeypatch
):
    from scoring.batch import agreement

    monkeypatch.setattr(agreement, "EXACT_ROWS", 100)  # 400 rows: the path of a big partition
    code = run_score(
        champion, input_dir, tmp_path, "--challenger", f"plain={challengers['plain']}",
        "--ab", "champion=0.7,plain=0.3", "--ab-salt", "s",
    )  # fmt: skip
    assert code == 0
    frame, manifest = partition(tmp_path)
    own = frame[frame["variant"] == "champion"]
    champion_scores, other = own["probability"].to_numpy(), own["challenger_plain_probability"].to_numpy()
    got = manifest["challengers"][0]["agreement"]
    diff = np.abs(champion_scores - other)
    assert got["rows"] == len(own)
    assert got["pearson"] == pytest.approx(np.corrcoef(champion_scores, other)[0, 1], abs=1e-9)
    assert got["mean_abs_diff"] == pytest.approx(diff.mean(), abs=1e-12)
    assert got["p99_abs_diff"] == pytest.approx(np.quantile(diff, 0.99, method="inverted_cdf"), abs=1e-15)
    assert got["flip_share"] == pytest.approx(((champion_scores >= 0.5) != (other >= 0.5)).mean(), abs=1e-12)
    # Spearman on the job's seeded sample: the same sample, drawn again from the same files.
    written = spark.read.parquet(str(tmp_path / f"date={DATE}")).where("variant = 'champion'")
    sample = (
        written.select("challenger_plain_probability", "probability")
        .sample(fraction=100 / len(frame), seed=agreement.SAMPLE_SEED)
        .toPandas()
    )
    assert got["spearman_rows"] == len(sample) < len(own)
    want = stats.spearmanr(sample["probability"], sample["challenger_plain_probability"]).statistic
    assert got["spearman"] == pytest.approx(want, abs=1e-9)
    assert manifest["ab"]["rows"] == frame["variant"].value_counts().to_dict()


def test_multiclass_and_label_agreement_from_the_written_columns():
    import pyarrow as pa

    from scoring.batch.agreement import exact_agreement
    from scoring.lineup import Lineup
    from scoring.model.output import OutputSpec

    three = OutputSpec("string", "multiclass", classes=("a", "b", "c"))
    labels = OutputSpec("string", None)
    table = pa.table(
        {
            "prediction": ["a", "b", "c", "a"],
            "probability": [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]],
            "challenger_m_prediction": ["a", "c", "c", "b"],
            "challenger_m_probability": [[0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]],
            "challenger_l_prediction": ["a", "b", "b", "b"],
        }
    )
    lineup = Lineup(challengers=(("m", "x"), ("l", "y")))
    figures = exact_agreement(table, lineup, {"champion": three, "m": three, "l": labels})
    m = figures["m"]
    assert m["rows"] == 4 and m["flip_share"] == 0.5
    assert m["mean_abs_diff"] == pytest.approx((0.1 + 0.4 + 0.0 + 0.2) / 4)
    assert m["p99_abs_diff"] == pytest.approx(0.4) and m["pearson"] is None and m["spearman"] is None
    assert figures["l"]["flip_share"] == 0.5 and figures["l"]["mean_abs_diff"] is None
