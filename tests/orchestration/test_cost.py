"""The pre-flight's cost estimate: the price table, earlier runs' throughput, the budget, the GPU warning."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from scoring.dataset.manifest import MANIFEST_FILE, Manifest
from scoring.dataset.publish import SUCCESS_FILE
from scoring.model.kinds import ModelKind, estimator_tree_ensemble, onnx_tree_ensemble
from scoring.orchestration import cost

PRICES = cost.load_prices()


def node_usd_per_hour(instance_type: str) -> float:
    price = PRICES["instance_types"][instance_type]
    return price["ec2_usd_per_hour"] + price["emr_usd_per_hour"]


def test_the_price_table_is_dated_and_prices_every_instance_type_the_flavours_request():
    assert dt.date.fromisoformat(PRICES["as_of"]) and PRICES["region"] and PRICES["market"] == "ON_DEMAND"
    for flavour in ("cpu", "gpu"):
        for group in cost.job_flow(flavour, None)["Instances"]["InstanceGroups"]:
            price = PRICES["instance_types"][group["InstanceType"]]
            assert price["ec2_usd_per_hour"] > 0 and price["emr_usd_per_hour"] > 0 and price["vcpus"] > 0


def test_the_cpu_estimate_equals_the_hand_computation_from_the_table():
    request = cost.job_flow("cpu", 3)
    estimate = cost.estimate_emr(10_000_000, 2_000.0, "default", request, PRICES, "cpu")

    # emr/cpu.json: 1 m6i.xlarge primary, here 3 m6i.4xlarge core nodes of 16 vCPUs, one task each.
    cores = 3 * PRICES["instance_types"]["m6i.4xlarge"]["vcpus"]
    job_seconds = 10_000_000 / (2_000.0 * cores)
    hours = (job_seconds + PRICES["startup_seconds"]) / 3600
    usd_per_hour = node_usd_per_hour("m6i.xlarge") + 3 * node_usd_per_hour("m6i.4xlarge")
    assert estimate["cores"] == cores == 48
    assert estimate["job_seconds"] == pytest.approx(job_seconds)
    assert estimate["node_hours"] == pytest.approx(4 * hours)
    assert estimate["usd_per_hour"] == pytest.approx(usd_per_hour)
    assert estimate["usd"] == pytest.approx(usd_per_hour * hours)
    assert estimate["price_table"]["as_of"] == PRICES["as_of"]
    line = cost.summary(estimate)
    assert line.startswith("cost estimate: 10,000,000 rows at 2,000 rows/core-s (default) on 48 cores")
    assert f"-> ${usd_per_hour * hours:.2f} (on-demand, us-east-1, prices as of {PRICES['as_of']})" in line


def test_a_gpu_node_runs_as_many_tasks_as_its_gpu_shares():
    # emr/gpu.json: one executor per GPU, 4 cores each, a quarter of the GPU per task.
    request = cost.job_flow("gpu", None)
    estimate = cost.estimate_emr(1_000_000, 1_000.0, "default", request, PRICES, "gpu")
    nodes = next(g["count"] for g in estimate["groups"] if g["role"] == "CORE")
    assert estimate["cores"] == 4 * nodes
    assert estimate["job_seconds"] == pytest.approx(1_000_000 / (1_000.0 * 4 * nodes))


def test_an_instance_type_missing_from_the_table_is_named():
    request = cost.job_flow("cpu", 2)
    request["Instances"]["InstanceGroups"][1]["InstanceType"] = "x9.mega"
    with pytest.raises(cost.ScoringError, match=r"has no instance type x9\.mega \(the cpu flavour's CORE"):
        cost.estimate_emr(1, 1.0, "default", request, PRICES, "cpu")


def test_a_local_run_has_a_duration_and_no_price():
    estimate = cost.estimate_local(600_000, 50_000.0, "default", cost.local_cores("local[4]"))
    assert estimate["cores"] == 4 and estimate["job_seconds"] == pytest.approx(3.0)
    assert estimate["usd"] is None and estimate["usd_per_hour"] is None
    assert cost.summary(estimate).endswith("local: no cluster is paid for")
    assert [cost.local_cores(m) for m in ("local", "local[3]", "local[2,4]")] == [1, 3, 2]
    cost.check_budget(estimate, 0.0)  # nothing is paid for: no budget to exceed


def write_run(output, day: str, rows: int, seconds: float, cores: int, published: bool = True) -> None:
    partition = output / f"date={day}"
    partition.mkdir(parents=True)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    manifest = {
        "counts": {"input": rows},
        "resources": {"cores": cores},
        "started_at": start.isoformat(),
        "finished_at": (start + dt.timedelta(seconds=seconds)).isoformat(),
    }
    (partition / MANIFEST_FILE).write_text(json.dumps(manifest))
    if published:
        (partition / SUCCESS_FILE).write_text("")


def test_throughput_is_the_median_of_earlier_published_runs_per_core(tmp_path):
    write_run(tmp_path, "2026-11-01", rows=80_000, seconds=10, cores=2)  # 4,000 rows per core-second
    write_run(tmp_path, "2026-11-02", rows=60_000, seconds=10, cores=2)  # 3,000
    write_run(tmp_path, "2026-11-03", rows=100_000, seconds=10, cores=1)  # 10,000
    write_run(tmp_path, "2026-11-04", rows=1, seconds=1, cores=1, published=False)  # not published
    write_run(tmp_path, "2026-11-06", rows=1, seconds=1, cores=1)  # after the date scored

    manifests = cost.earlier_manifests(str(tmp_path), "date", dt.date(2026, 11, 5))
    assert [m.counts.input for m in manifests] == [100_000, 60_000, 80_000]  # latest first
    assert cost.throughput(manifests) == (4_000.0, "3 earlier runs")
    assert cost.throughput(cost.earlier_manifests(str(tmp_path), "date", dt.date(2026, 11, 1))) == (
        cost.DEFAULT_ROWS_PER_CORE_SECOND,
        "default",
    )
    # An older manifest without the figures is passed over.
    older = Manifest.from_json({"counts": {"input": 5}})
    assert cost.throughput([older]) == (cost.DEFAULT_ROWS_PER_CORE_SECOND, "default")


def test_over_budget_fails_with_the_figures_under_passes():
    estimate = cost.estimate_emr(10_000_000, 2_000.0, "default", cost.job_flow("cpu", 2), PRICES, "cpu")
    cost.check_budget(estimate, None)
    cost.check_budget(estimate, estimate["usd"] + 0.01)
    with pytest.raises(
        cost.BudgetExceeded, match=r"estimated cost \$\d+\.\d\d exceeds the param max_cost_usd"
    ):
        cost.check_budget(estimate, estimate["usd"] - 0.01)


def test_the_gpu_flavour_is_said_not_to_pay_off_for_tree_ensembles_only():
    gpu = cost.estimate_emr(1_000_000, 1_000.0, "default", cost.job_flow("gpu", None), PRICES, "gpu")
    cpu = cost.estimate_emr(1_000_000, 1_000.0, "default", cost.job_flow("cpu", None), PRICES, "cpu")
    tree = ModelKind("onnx", "TreeEnsembleClassifier").to_json()
    mlp = ModelKind("onnx", None).to_json()
    uris = {"champion": "models:/m/3", "plain": "models:/m/4"}

    warning = cost.gpu_warning({"champion": tree}, uris, gpu, cpu)
    assert warning == (
        "the gpu flavour cannot pay off: models:/m/3 is a tree ensemble (TreeEnsembleClassifier), which "
        f"ONNX Runtime runs on the CPU only; the cpu flavour would cost ${cpu['usd']:.2f} instead of "
        f"${gpu['usd']:.2f}"
    )
    pyfunc = ModelKind("pyfunc", None).to_json()
    assert "models:/m/4 is scored by pyfunc" in cost.gpu_warning(
        {"champion": tree, "plain": pyfunc}, uris, gpu, cpu
    )
    # One model that can use the GPU is enough for the GPU nodes to do work.
    assert cost.gpu_warning({"champion": tree, "plain": mlp}, uris, gpu, cpu) is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_tree_ensembles_are_told_from_graphs_and_estimators(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    trees = GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(x, y)
    mlp = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(4,), max_iter=50)).fit(x, y)
    for name, model in (("trees", trees), ("mlp", mlp)):
        (tmp_path / f"{name}.onnx").write_bytes(
            to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()
        )

    assert onnx_tree_ensemble(str(tmp_path / "trees.onnx")) == "TreeEnsembleClassifier"
    assert onnx_tree_ensemble(str(tmp_path / "mlp.onnx")) is None
    assert estimator_tree_ensemble(trees) == "GradientBoostingClassifier"
    assert estimator_tree_ensemble(make_pipeline(StandardScaler(), trees)) == "GradientBoostingClassifier"
    assert estimator_tree_ensemble(mlp) is None
