"""The daily DAG: integrity, a local run on real Spark, and EMR runs against moto's server."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pendulum
import pyarrow.fs as pafs
import pytest

from scoring import demo
from scoring.batch.job import run_job
from scoring.cli import build_parser, config_from_args
from scoring.dataset.publish import REJECTS_DIR
from scoring.dataset.storage import filesystem
from scoring.orchestration import cost, emr

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "daily_batch_scoring"
BUCKET = "scoring-dag-test"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata DB, set before Airflow is imported."""
    home = tmp_path_factory.mktemp("airflow")
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:8080/execution/",
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(airflow):
    return airflow.dags[DAG_ID]


def test_dagbag_imports_every_dag_with_owner_retries_tags_and_doc(airflow):
    assert airflow.import_errors == {}
    assert list(airflow.dags) == [DAG_ID]
    for dag_id, dag in airflow.dags.items():
        assert dag.default_args.get("owner", "airflow") != "airflow", (
            f"{dag_id} in {dag.fileloc} has no owner"
        )
        assert (dag.default_args.get("retries") or 0) >= 1, f"{dag_id} in {dag.fileloc} has no retries"
        assert dag.tags, f"{dag_id} in {dag.fileloc} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} in {dag.fileloc} has no documentation"


def test_teardown_always_terminates_the_cluster(dag):
    terminate = dag.get_task("terminate_cluster")
    assert terminate.is_teardown
    assert "create_cluster" in terminate.upstream_task_ids
    assert dag.get_task("create_cluster").is_setup


# Every run sets these: dag.test() keeps an earlier run's conf in the DAG's params.
CHAMPION_ALONE = {
    "model_uri": f"models:/{demo.MODEL_NAME}@champion",
    "challengers": {},
    "ensemble": {},
    "ab_split": {},
    "ab_salt": None,
    "decision_threshold": 0.5,
}


def run_dag(dag, date: dt.date, **conf):
    run = dag.test(
        logical_date=pendulum.datetime(date.year, date.month, date.day, tz="UTC"),
        run_conf={**CHAMPION_ALONE, **conf},
    )
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_lineup_params_are_typed_and_default_to_the_champion_alone(dag):
    from scoring.orchestration import tasks

    lineup = {name: value for name, value in CHAMPION_ALONE.items() if name != "model_uri"}
    assert {name: tasks.default_params()[name] for name in lineup} == lineup
    schemas = {name: dag.params.get_param(name).schema for name in lineup}
    assert {schemas[name]["type"] for name in ("challengers", "ensemble", "ab_split")} == {"object"}
    assert schemas["challengers"]["additionalProperties"] == {"type": "string"}
    assert schemas["ab_salt"]["type"] == ["null", "string"]
    assert schemas["decision_threshold"]["type"] == "number"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"ab_split": {"champion": 1, "plain": 1}}, "ab_split needs ab_salt"),
        ({"ab_salt": "exp-1"}, "ab_salt without ab_split"),
        ({"ensemble": {"champion": 1}}, "ensemble needs two models or more"),
        ({"challengers": {"Plain": "models:/m/1"}}, "challenger name 'Plain' must be a lower-case"),
    ],
)
def test_a_lineup_error_names_the_params(conf, message):
    from scoring.lineup import LineupError
    from scoring.orchestration import tasks

    params = {**CHAMPION_ALONE, "challengers": {"plain": "models:/m/1"}, **conf}
    with pytest.raises(LineupError, match=f"^lineup params: {message}"):
        tasks.lineup_from_params(params)


def test_local_run_scores_real_data_end_to_end(dag, registry, input_dir, tmp_path, caplog):
    run, states = run_dag(
        dag,
        dt.date(2026, 11, 1),
        compute="local",
        local_master="local[2]",
        input=str(input_dir),
        output=str(tmp_path / "out"),
    )

    assert run.state == "success", states
    assert states["run_local"] == "success" and states["validate_output"] == "success"
    assert states["create_cluster"] == "skipped" and states["terminate_cluster"] == "skipped"
    import pandas as pd

    scored = pd.read_parquet(tmp_path / "out" / "date=2026-11-01")
    assert len(scored) > 0 and set(scored["model_version"]) == {registry["onnx"]}
    assert (tmp_path / "out" / "date=2026-11-01" / "_SUCCESS").exists()
    # validate_output writes the report again, with the DAG's validation in it.
    report = tmp_path / "out" / "date=2026-11-01" / "_report.html"
    assert caplog.text.count(f"report: {report}") == 2, "the job, then validate_output"
    assert 'data-figure="verdict">VALID<' in report.read_text()
    # The pre-flight's estimate (local: a duration, no price) beside what the run took.
    manifest = json.loads((tmp_path / "out" / "date=2026-11-01" / "_manifest.json").read_text())
    assert manifest["cost"]["estimate"]["compute"] == "local" and manifest["cost"]["estimate"]["usd"] is None
    assert manifest["cost"]["estimate"]["rows"] == manifest["counts"]["input"]
    assert manifest["cost"]["actual_job_seconds"] > 0


def test_local_run_scores_challengers_pinned_by_validate_model(dag, registry, input_dir, tmp_path):
    import pandas as pd

    sklearn = f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"
    run, states = run_dag(
        dag,
        dt.date(2026, 11, 1),
        compute="local",
        local_master="local[2]",
        input=str(input_dir),
        output=str(tmp_path / "out"),
        # One challenger by version, one by alias: validate_model pins the alias.
        challengers={"plain": sklearn, "aliased": f"models:/{demo.MODEL_NAME}@sklearn"},
        ensemble={"champion": 3, "plain": 1},
    )

    assert run.state == "success", states
    pinned = run.get_task_instance("validate_model").xcom_pull(task_ids="validate_model")
    assert pinned["lineup"]["challengers"] == {"plain": sklearn, "aliased": sklearn}
    assert pinned["challengers"]["aliased"]["version"] == registry["sklearn"]
    partition = tmp_path / "out" / "date=2026-11-01"
    scored = pd.read_parquet(partition)
    for column in ("challenger_plain_probability", "challenger_aliased_probability", "ensemble_probability"):
        assert scored[column].between(0, 1).all(), column
    # The ONNX champion and its sklearn original agree.
    assert (scored["challenger_plain_probability"] - scored["probability"]).abs().max() < 1e-4
    manifest = json.loads((partition / "_manifest.json").read_text())
    challengers = {c["name"]: c["model"] for c in manifest["challengers"]}
    assert list(challengers) == ["plain", "aliased"]
    for model in challengers.values():
        # The job received the pinned reference, never the alias.
        assert (model["uri"], model["pinned_uri"], model["version"]) == (
            sklearn,
            sklearn,
            registry["sklearn"],
        )
    assert manifest["ensemble"]["weights"] == {"champion": 0.75, "plain": 0.25}


class FakeEmr(threading.Thread):
    """Plays EMR's part, which moto does not: runs each step's command, then sets its state.

    The step's flags go through the real ``scoring score`` parser and the real job runs on the test's
    Spark with local copies of the S3 input, and without a registry (``MLFLOW_TRACKING_URI`` unset, as
    on a cluster): it scores the model staged on S3. Its output is uploaded where the step would have
    written it. ``fail=True`` writes a stderr log to the cluster's log URI and fails the step.
    """

    def __init__(self, spark, local_input: Path, work: Path, fail: bool = False) -> None:
        super().__init__(daemon=True)
        self.spark, self.local_input, self.work, self.fail = spark, local_input, work, fail
        self.done = threading.Event()
        self.steps: list[list[str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from moto.emr.models import emr_backends

        backend = emr_backends["123456789012"]["us-east-1"]
        while not self.done.wait(0.2):
            for cluster in list(backend.clusters.values()):
                for step in cluster.steps:
                    if step.state == "RUNNING" and step.args not in self.steps:
                        self.steps.append(step.args)
                        try:
                            step.state = self.execute(cluster, step)
                        except BaseException as e:  # reported by the test, not lost in this thread
                            self.error = e
                            step.state = "FAILED"

    def execute(self, cluster, step) -> str:
        assert step.args[:3] == ["spark-submit", "--deploy-mode", "client"]
        config = config_from_args(build_parser().parse_args(["score", *step.args[4:]]))
        if self.fail:
            log = "\n".join(
                ["starting", "error: input s3://scoring-dag-test/input: something upstream broke"]
            )
            bucket, _, prefix = cluster.log_uri.removeprefix("s3://").partition("/")
            key = f"{prefix.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz"
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=gzip.compress(log.encode()))
            return "FAILED"
        local = dataclasses.replace(config, input=str(self.local_input), output=str(self.work / "out"))
        with no_registry():
            run_job(local, self.spark)
        partition = f"{config.partition_column}={config.partition_value}"
        fs, root = filesystem(config.output)
        for relative in (partition, f"{REJECTS_DIR}/{partition}"):
            if (self.work / "out" / relative).exists():
                pafs.copy_files(
                    str(self.work / "out" / relative), f"{root}/{relative}", destination_filesystem=fs
                )
        return "COMPLETED"


@contextlib.contextmanager
def no_registry():
    """No MLflow registry for this process while the block runs, as on an EMR node."""
    saved = {name: os.environ.pop(name, None) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})


def upload_input(local_input: Path) -> str:
    fs, _ = filesystem(f"s3://{BUCKET}/input")
    pafs.copy_files(str(local_input), f"{BUCKET}/input", destination_filesystem=fs)
    return f"s3://{BUCKET}/input"


def emr_conf(date: dt.date, **overrides) -> dict:
    return {
        "compute": "emr",
        "emr_flavour": "gpu",
        "input": f"s3://{BUCKET}/input",
        "output": f"s3://{BUCKET}/output",
        "artifacts_uri": f"s3://{BUCKET}/artifacts",
        "emr_log_uri": f"s3://{BUCKET}/logs/",
        "step_poll_seconds": 0.2,
        "terminate_stale": False,  # explicit: dag.test() keeps an earlier run's conf in the DAG's params
        "max_cost_usd": None,
        **overrides,
    }


def run_dag_on_fake_emr(dag, date: dt.date, fake: FakeEmr, **overrides):
    fake.start()
    try:
        result = run_dag(dag, date, **emr_conf(date, **overrides))
    finally:
        fake.done.set()
        fake.join()
    assert fake.error is None, fake.error
    return result


@pytest.fixture(scope="module")
def bucket(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def clusters_for(date: dt.date) -> list[dict]:
    client = boto3.client("emr")
    found = []
    for summary in client.list_clusters()["Clusters"]:
        cluster = client.describe_cluster(ClusterId=summary["Id"])["Cluster"]
        if {"Key": "date", "Value": date.isoformat()} in cluster.get("Tags", []):
            found.append(cluster)
    return found


def test_emr_run_creates_the_gpu_cluster_runs_the_step_validates_s3_and_terminates(
    dag, spark, registry, bucket, aws, tmp_path
):
    date = dt.date(2026, 11, 5)
    demo.write_partitioned(demo.make_customers(300, date, seed=3), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    fake = FakeEmr(spark, tmp_path / "in", tmp_path)
    created_before = aws.faults.calls["RunJobFlow"]
    # A challenger by alias: pinned by validate_model, staged beside the champion, scored from S3.
    challengers = {"plain": f"models:/{demo.MODEL_NAME}@sklearn"}
    run, states = run_dag_on_fake_emr(dag, date, fake, challengers=challengers)

    assert run.state == "success", states
    assert aws.faults.calls["RunJobFlow"] - created_before == 1
    assert states["run_local"] == "skipped"
    (cluster,) = clusters_for(date)
    assert cluster["Status"]["State"] == "TERMINATED"
    groups = boto3.client("emr").list_instance_groups(ClusterId=cluster["Id"])["InstanceGroups"]
    assert {g["InstanceGroupType"]: g["InstanceType"] for g in groups}["CORE"].startswith(("g5.", "g6."))
    assert "yarn-site" in [c["Classification"] for c in cluster["Configurations"]]
    key = next(t["Value"] for t in cluster["Tags"] if t["Key"] == emr.IDEMPOTENCY_TAG)
    (args,) = fake.steps
    assert args[3] == f"s3://{BUCKET}/artifacts/0.1.0/{key}/score.py"
    staged_model = f"s3://{BUCKET}/artifacts/0.1.0/{key}/model"
    assert args[args.index("--model-uri") + 1] == staged_model
    assert args[args.index("--date") + 1] == date.isoformat()
    staged_challenger = f"s3://{BUCKET}/artifacts/0.1.0/{key}/challengers/plain"
    assert args[args.index("--challenger") + 1] == f"plain={staged_challenger}"
    s3 = boto3.client("s3")
    staged = {
        o["Key"].rsplit("/", 1)[-1]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")["Contents"]
    }
    assert {"score.py", "bootstrap.sh", "requirements-node.txt"} <= staged
    assert any(name.endswith(".whl") for name in staged)
    model_files = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/0.1.0/{key}/model/")["Contents"]
    assert {"MLmodel", "registered_model.json"} <= {o["Key"].rsplit("/", 1)[-1] for o in model_files}
    challenger_files = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/0.1.0/{key}/challengers/plain/")
    assert {"MLmodel", "registered_model.json"} <= {
        o["Key"].rsplit("/", 1)[-1] for o in challenger_files["Contents"]
    }
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"output/date={date}/_manifest.json")["Body"].read()
    )
    assert manifest["counts"]["scored"] == 300
    # Scored from the staged copy with no registry, and still named by the registry's version.
    assert manifest["model"]["uri"] == staged_model
    assert manifest["model"]["pinned_uri"] == f"models:/{demo.MODEL_NAME}/{registry['onnx']}"
    assert manifest["model"]["version"] == registry["onnx"]
    (challenger,) = manifest["challengers"]
    assert challenger["name"] == "plain" and challenger["model"]["uri"] == staged_challenger
    assert challenger["model"]["pinned_uri"] == f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"
    assert challenger["model"]["version"] == registry["sklearn"]
    # The cost was estimated before the cluster was created, and kept beside the run's duration.
    times = {ti.task_id: ti for ti in run.get_task_instances()}
    assert times["preflight"].end_date <= times["create_cluster"].start_date
    estimate = manifest["cost"]["estimate"]
    expected = cost.estimate_emr(
        300, cost.DEFAULT_ROWS_PER_CORE_SECOND, "default", cost.job_flow("gpu", 2), cost.load_prices(), "gpu"
    )
    assert estimate == expected  # through XCom, the step's flag and the manifest, unchanged
    assert manifest["cost"]["actual_job_seconds"] > 0 and manifest["cost"]["actual_usd"] > 0


def test_failed_step_terminates_the_cluster_and_fails_the_run(dag, spark, registry, bucket, tmp_path, capsys):
    date = dt.date(2026, 11, 6)
    demo.write_partitioned(demo.make_customers(50, date, seed=4), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    run, states = run_dag_on_fake_emr(dag, date, FakeEmr(spark, tmp_path / "in", tmp_path, fail=True))

    assert run.state == "failed"
    assert states["wait_for_step"] == "failed"
    assert states["terminate_cluster"] == "success"
    assert states["validate_output"] == "upstream_failed"
    (cluster,) = clusters_for(date)
    assert cluster["Status"]["State"] == "TERMINATED"
    assert "something upstream broke" in capsys.readouterr().out  # the step's stderr, in the task log


def plant_stale_cluster(date: str) -> str:
    """A live cluster of an earlier run of the DAG whose teardown never ran (that run is not in the DB)."""
    run_id = f"scheduled__{date}T00:00:00+00:00"
    request = emr.job_flow_config(
        "cpu",
        key=emr.idempotency_key(DAG_ID, run_id, date),
        log_uri=f"s3://{BUCKET}/logs/",
        bootstrap_uri=f"s3://{BUCKET}/bootstrap.sh",
        wheel_uri=f"s3://{BUCKET}/scoring.whl",
        tags={emr.DAG_TAG: DAG_ID, emr.RUN_TAG: run_id, "date": date},
    )
    return boto3.client("emr").run_job_flow(**request)["JobFlowId"]


def cluster_state(cluster_id: str) -> str:
    return boto3.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


def test_a_lost_run_job_flow_answer_costs_no_second_cluster_and_stale_ones_are_ended(
    dag, spark, registry, bucket, aws, tmp_path, caplog
):
    """EMR created the cluster, its answer was lost (500) and botocore retried: two clusters existed."""
    date = dt.date(2026, 11, 8)
    demo.write_partitioned(demo.make_customers(60, date, seed=5), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    stale = plant_stale_cluster("2026-10-01")
    created_before = aws.faults.calls["RunJobFlow"]
    aws.faults.lose_next("RunJobFlow")
    fake = FakeEmr(spark, tmp_path / "in", tmp_path)
    run, states = run_dag_on_fake_emr(dag, date, fake, terminate_stale=True)

    assert run.state == "success", states
    assert aws.faults.calls["RunJobFlow"] - created_before == 2
    clusters = clusters_for(date)
    assert len(clusters) == 2 and {c["Status"]["State"] for c in clusters} == {"TERMINATED"}
    assert len(fake.steps) == 1  # one step, on the cluster kept
    kept = next(c["Id"] for c in clusters if boto3.client("emr").list_steps(ClusterId=c["Id"])["Steps"])
    duplicate = next(c["Id"] for c in clusters if c["Id"] != kept)
    log = caplog.text  # the tasks' log records
    assert f"terminating cluster {duplicate}: duplicate of {kept}" in log
    assert cluster_state(stale) == "TERMINATED"
    assert f"cluster {stale} (WAITING) of an earlier run of {DAG_ID} is still alive" in log
    assert f"terminating cluster {stale}: stale: its run scheduled__2026-10-01T00:00:00+00:00 is over" in log


def test_create_killed_after_run_job_flow_its_teardown_ends_the_orphan(
    dag, registry, bucket, tmp_path, monkeypatch, caplog
):
    """The kill arrives right after EMR answered: create_cluster returns no id and the run fails."""
    from airflow.sdk.exceptions import AirflowTaskTerminated

    from scoring.orchestration import tasks

    date = dt.date(2026, 11, 9)
    demo.write_partitioned(demo.make_customers(40, date, seed=6), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    stale = plant_stale_cluster("2026-10-02")
    real_client = tasks.emr_client

    def killed_after_run_job_flow(params):
        def kill(**_):
            raise AirflowTaskTerminated("killed by the test right after RunJobFlow")

        client = real_client(params)
        client.meta.events.register("after-call.emr.RunJobFlow", kill)
        return client

    monkeypatch.setattr(tasks, "emr_client", killed_after_run_job_flow)
    run, states = run_dag(dag, date, **emr_conf(date))

    assert run.state == "failed"
    assert states["create_cluster"] == "failed" and states["add_step"] == "upstream_failed"
    assert states["terminate_cluster"] == "success"
    (orphan,) = clusters_for(date)
    assert orphan["Status"]["State"] == "TERMINATED"
    log = caplog.text  # the tasks' log records
    assert f"terminating cluster {orphan['Id']}: orphan of a failed create" in log
    # Stale clusters are reported, and left alone unless the param terminate_stale says otherwise.
    assert f"cluster {stale} (WAITING) of an earlier run of {DAG_ID} is still alive" in log
    assert "set the param terminate_stale to end it" in log
    assert cluster_state(stale) == "WAITING"
    emr.end_cluster(boto3.client("emr"), stale, "test over")


def test_a_bad_lineup_fails_the_first_task_with_no_cluster_and_no_output(dag, registry, bucket, capsys):
    date = dt.date(2026, 11, 10)
    conf = emr_conf(
        date, challengers={"plain": f"models:/{demo.MODEL_NAME}/1"}, ensemble={"champion": 1, "ghost": 1}
    )
    run, states = run_dag(dag, date, **conf)

    assert run.state == "failed"
    assert states["validate_model"] == "failed"
    assert states["preflight"] == "upstream_failed"
    assert states["create_cluster"] in ("upstream_failed", "skipped")
    # The task's one-line error, in its log.
    assert "lineup params: ensemble: no model named 'ghost' in this run (models: champion, plain)" in (
        capsys.readouterr().out
    )
    assert clusters_for(date) == []
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"output/date={date}")


def test_bad_model_alias_creates_no_cluster(dag, registry, bucket):
    date = dt.date(2026, 11, 7)
    run, states = run_dag(dag, date, **emr_conf(date, model_uri=f"models:/{demo.MODEL_NAME}@retired"))

    assert run.state == "failed"
    assert states["validate_model"] == "failed"
    assert states["create_cluster"] in ("upstream_failed", "skipped")
    assert clusters_for(date) == []


def test_an_estimate_over_max_cost_usd_fails_the_preflight_with_no_cluster(
    dag, registry, bucket, aws, tmp_path, caplog, capsys
):
    date = dt.date(2026, 11, 11)
    demo.write_partitioned(demo.make_customers(120, date, seed=8), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    created_before = aws.faults.calls["RunJobFlow"]
    gpu = cost.estimate_emr(
        120, cost.DEFAULT_ROWS_PER_CORE_SECOND, "default", cost.job_flow("gpu", 2), cost.load_prices(), "gpu"
    )
    cpu = cost.estimate_emr(
        120, cost.DEFAULT_ROWS_PER_CORE_SECOND, "default", cost.job_flow("cpu", 2), cost.load_prices(), "cpu"
    )
    budget = round(gpu["usd"] / 2, 2)

    # An output of its own: with no earlier runs the estimate uses the documented default throughput.
    output = f"s3://{BUCKET}/output-over-budget"
    run, states = run_dag(dag, date, **emr_conf(date, output=output, max_cost_usd=budget))

    assert run.state == "failed"
    assert states["validate_model"] == "success" and states["preflight"] == "failed"
    assert states["create_cluster"] in ("upstream_failed", "skipped")
    assert aws.faults.calls["RunJobFlow"] == created_before and clusters_for(date) == []
    log = caplog.text + capsys.readouterr().out  # the tasks' log records, then the failure's traceback
    assert cost.summary(gpu) in log
    assert (
        f"the gpu cluster's estimated cost ${gpu['usd']:.2f} exceeds the param max_cost_usd "
        f"(${budget:.2f}); no cluster was created" in log
    )
    # The demo champion is a tree ensemble in ONNX: GPU nodes would pay GPU prices for CPU work.
    assert "the gpu flavour cannot pay off: " in log and "TreeEnsembleClassifier" in log
    assert f"the cpu flavour would cost ${cpu['usd']:.2f} instead of ${gpu['usd']:.2f}" in log
