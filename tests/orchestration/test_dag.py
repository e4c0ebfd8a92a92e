"""The daily DAG: integrity, local runs on real Spark, and EMR runs against moto's server.

Each path publishes to the output directory and to an Iceberg table: locally in a SQL catalog, on
EMR (moto) in the Glue catalog with the table's files on S3.
"""

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
from test_emr import step_parts

from scoring import demo
from scoring.batch.job import run_job
from scoring.cli import build_parser, config_from_args
from scoring.dataset.catalog import open_catalog
from scoring.dataset.publish import REJECTS_DIR
from scoring.dataset.publisher import TablePublisher
from scoring.dataset.storage import filesystem
from scoring.dataset.table import open_tables, rejects_identifier
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
# And these: the output directory, no table, no maintenance.
DIRECTORY_OUTPUT = {"table": None, "catalog": None, "glue_warehouse": None, "maintain_older_than_days": None}
TABLE = "dagtest.scores"  # a database of its own: the README's Glue snippet makes a plain analytics.scores


def run_dag(dag, date: dt.date, **conf):
    run = dag.test(
        logical_date=pendulum.datetime(date.year, date.month, date.day, tz="UTC"),
        run_conf={**CHAMPION_ALONE, **DIRECTORY_OUTPUT, **conf},
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
    assert states["maintain_table"] == "skipped"  # a directory has no snapshots to expire
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


def test_table_params_are_typed_and_default_to_the_output_directory(dag):
    from scoring.orchestration import tasks

    defaults = tasks.default_params()
    assert {name: defaults[name] for name in DIRECTORY_OUTPUT} == DIRECTORY_OUTPUT
    for name in ("output", *DIRECTORY_OUTPUT):
        assert dag.params.get_param(name).description, name
    table = dag.params.get_param("table")
    table.resolve(TABLE)
    with pytest.raises(Exception, match="does not match"):
        table.resolve("scores")  # no namespace
    with pytest.raises(Exception, match="less than the minimum"):
        dag.params.get_param("maintain_older_than_days").resolve(0.5)


@pytest.fixture
def sql_catalog(tmp_path, monkeypatch) -> str:
    """A SQL catalog on SQLite, configured by pyiceberg's variables (the job's subprocess inherits them)."""
    root = tmp_path / "catalog"
    root.mkdir()
    monkeypatch.setenv("PYICEBERG_CATALOG__DAGLOCAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__DAGLOCAL__URI", f"sqlite:///{root}/catalog.db")
    monkeypatch.setenv("PYICEBERG_CATALOG__DAGLOCAL__WAREHOUSE", f"file://{root}/warehouse")
    return "daglocal"


def date_rows(catalog: str, identifier: str, date: dt.date):
    from pyiceberg.expressions import EqualTo

    table = open_catalog(catalog).load_table(identifier)
    return table.scan(row_filter=EqualTo("date", date.isoformat())).to_arrow()


def test_local_run_publishes_to_a_table_validates_it_and_maintains_it(
    dag, registry, input_dir, sql_catalog, tmp_path, caplog
):
    date = dt.date(2026, 11, 1)
    run, states = run_dag(
        dag,
        date,
        compute="local",
        local_master="local[2]",
        input=str(input_dir),
        output=str(tmp_path / "out"),
        table=TABLE,
        catalog=sql_catalog,
        maintain_older_than_days=1,
    )

    assert run.state == "success", states
    assert states["run_local"] == "success" and states["validate_output"] == "success"
    assert states["maintain_table"] == "success"
    assert not (tmp_path / "out").exists()  # the table instead of the directory
    validation = run.get_task_instance("validate_output").xcom_pull(task_ids="validate_output")
    assert validation["ok"] and {c["status"] for c in validation["checks"]} == {"ok"}
    published = next(c for c in validation["checks"] if c["name"] == "published")
    assert f"of table {TABLE}" in published["detail"]
    scores = date_rows(sql_catalog, TABLE, date)
    rejects = date_rows(sql_catalog, rejects_identifier(TABLE), date)
    summary = open_catalog(sql_catalog).load_table(TABLE).current_snapshot().summary
    assert scores.num_rows == int(summary["scoring.rows-scored"]) > 0
    assert scores.num_rows + rejects.num_rows == int(summary["scoring.rows-input"])
    assert set(scores["model_version"].to_pylist()) == {registry["onnx"]}
    # validate_output wrote the report again, beside the manifest in the run's directory of the table.
    run_dir = summary["scoring.manifest"].rsplit("/", 1)[0]
    assert caplog.text.count(f"report: {run_dir}/_report.html") == 2, "the job, then validate_output"
    # With nothing older than a day: nothing expired, nothing removed, both tables looked at.
    lines = run.get_task_instance("maintain_table").xcom_pull(task_ids="maintain_table")
    assert lines == [
        f"{TABLE}: 0 snapshots expired, 0 unreferenced files removed",
        f"{rejects_identifier(TABLE)}: 0 snapshots expired, 0 unreferenced files removed",
    ]


class FakeEmr(threading.Thread):
    """Plays EMR's part, which moto does not: runs each step's command, then sets its state.

    The step's flags go through the real ``scoring score`` parser and the real job runs on the test's
    Spark with local copies of the S3 input, and without a registry (``MLFLOW_TRACKING_URI`` unset, as
    on a cluster): it scores the model staged on S3. Its output is uploaded where the step would have
    written it; a table's version is published into the step's catalog (``publish_to_table``).
    ``fail=True`` writes a stderr log to the cluster's log URI and fails the step.
    """

    def __init__(self, spark, local_input: Path, work: Path, fail: bool = False) -> None:
        super().__init__(daemon=True)
        self.spark, self.local_input, self.work, self.fail = spark, local_input, work, fail
        self.done = threading.Event()
        self.steps: list[list[str]] = []
        self.environments: list[dict[str, str]] = []
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
        environment, confs, _, flags = step_parts(step.args)
        # The executors get what the driver gets.
        assert confs == {f"spark.executorEnv.{name}": value for name, value in environment.items()}
        self.environments.append(environment)
        config = config_from_args(build_parser().parse_args(["score", *flags]))
        if self.fail:
            log = "\n".join(
                ["starting", "error: input s3://scoring-dag-test/input: something upstream broke"]
            )
            bucket, _, prefix = cluster.log_uri.removeprefix("s3://").partition("/")
            key = f"{prefix.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz"
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=gzip.compress(log.encode()))
            return "FAILED"
        if config.table:
            self.publish_to_table(config, environment)
            return "COMPLETED"
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

    def publish_to_table(self, config, environment: dict[str, str]) -> None:
        """Score into a local SQL catalog, then publish that version into the step's catalog, as on EMR.

        Local Spark cannot write to S3, so the real job writes its files and commits in a stand-in
        catalog here; their copies then go under the step's table's location (Glue on moto, S3) and
        ``TablePublisher`` commits them there with the run's manifest: what the job on the cluster
        does, with the step's variables as the only configuration of the catalog beyond moto's.
        """
        stand_in = {
            "PYICEBERG_CATALOG__FAKEEMR__TYPE": "sql",
            "PYICEBERG_CATALOG__FAKEEMR__URI": f"sqlite:///{self.work}/stand-in.db",
            "PYICEBERG_CATALOG__FAKEEMR__WAREHOUSE": f"file://{self.work}/stand-in",
        }
        local = dataclasses.replace(config, input=str(self.local_input), catalog="fakeemr")
        with no_registry(), environment_set({**stand_in, **environment}):
            manifest = run_job(local, self.spark)
            _, scores, rejects = open_tables("fakeemr", str(config.table))
            publisher = TablePublisher(config, scores.schema().as_arrow(), rejects.schema().as_arrow())
            publisher.prepare()
            published = False
            try:
                copies = (
                    (manifest.output, publisher.output_path),
                    (manifest.rejects, publisher.rejects_path),
                )
                for part, target in copies:
                    source_fs, source = filesystem(part.path)
                    target_fs, target_path = filesystem(target)
                    for file in part.files:
                        pafs.copy_files(
                            f"{source}/{file.name}",
                            f"{target_path}/{file.name}",
                            source_filesystem=source_fs,
                            destination_filesystem=target_fs,
                        )
                publisher.publish(
                    dataclasses.replace(
                        manifest,
                        run_id=publisher.location.run_id,
                        output=dataclasses.replace(manifest.output, path=publisher.output_path),
                        rejects=dataclasses.replace(manifest.rejects, path=publisher.rejects_path),
                    )
                )
                published = True
            finally:
                publisher.finish(published)


@contextlib.contextmanager
def environment_set(variables: dict[str, str]):
    """These variables set while the block runs, then as they were."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    assert fake.environments == [{}]  # a directory's run configures no catalog
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


def test_emr_run_publishes_to_a_glue_table_on_s3_validates_and_maintains_it(
    dag, spark, registry, bucket, aws, tmp_path, monkeypatch
):
    date = dt.date(2026, 11, 12)
    demo.write_partitioned(demo.make_customers(300, date, seed=9), tmp_path / "in", date)
    upload_input(tmp_path / "in")
    # What this worker adds to the DAG's Glue configuration of the catalog: moto's endpoints and keys
    # (pyiceberg's S3 FileIO ignores AWS_ENDPOINT_URL). The catalog param is left null: "default".
    for key, value in {
        "S3__ENDPOINT": aws.endpoint,
        "S3__REGION": "us-east-1",
        "S3__ACCESS_KEY_ID": "testing",
        "S3__SECRET_ACCESS_KEY": "testing",
        "GLUE__ENDPOINT": aws.endpoint,
        "GLUE__ACCESS_KEY_ID": "testing",
        "GLUE__SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__DEFAULT__{key}", value)
    fake = FakeEmr(spark, tmp_path / "in", tmp_path)
    run, states = run_dag_on_fake_emr(dag, date, fake, table=TABLE, maintain_older_than_days=1)

    assert run.state == "success", states
    assert states["validate_output"] == "success" and states["maintain_table"] == "success"
    assert states["terminate_cluster"] == "success"
    # The step: the table's flags, and the variables that make its catalog Glue, in the connection's
    # region, its warehouse in the output's bucket.
    (args,) = fake.steps
    _, _, _, flags = step_parts(args)
    assert flags[flags.index("--table") + 1] == TABLE and "--output" not in flags
    assert flags[flags.index("--catalog") + 1] == emr.DEFAULT_CATALOG
    assert fake.environments == [
        {
            "PYICEBERG_CATALOG__DEFAULT__TYPE": "glue",
            "PYICEBERG_CATALOG__DEFAULT__WAREHOUSE": f"s3://{BUCKET}/iceberg",
            "PYICEBERG_CATALOG__DEFAULT__GLUE__REGION": "us-east-1",
        }
    ]
    # Glue holds the tables, their files on S3 under the warehouse; nothing went to the directory.
    glue = boto3.client("glue")
    for name in ("scores", "scores__rejects"):
        found = glue.get_table(DatabaseName="dagtest", Name=name)["Table"]
        assert found["Parameters"]["table_type"].upper() == "ICEBERG"
        assert found["StorageDescriptor"]["Location"] == f"s3://{BUCKET}/iceberg/dagtest.db/{name}"
    s3 = boto3.client("s3")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"output/date={date}")
    data = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"iceberg/dagtest.db/scores/data/date={date}/")
    assert any(o["Key"].endswith(".parquet") for o in data["Contents"])
    # validate_output read the Glue table's version of the date, and wrote the report beside it.
    validation = run.get_task_instance("validate_output").xcom_pull(task_ids="validate_output")
    assert validation["ok"], validation
    assert validation["partition"].startswith(
        f"s3://{BUCKET}/iceberg/dagtest.db/scores/data/date={date}/run-"
    )
    assert any(o["Key"].endswith("/_report.html") for o in data["Contents"])
    glue_variables = fake.environments[0]
    for name, value in glue_variables.items():
        monkeypatch.setenv(name, value)
    scores = date_rows(emr.DEFAULT_CATALOG, TABLE, date)
    summary = open_catalog(emr.DEFAULT_CATALOG).load_table(TABLE).current_snapshot().summary
    rejected = int(summary["scoring.rows-rejected"])
    assert scores.num_rows == int(summary["scoring.rows-scored"]) == 300 - rejected
    assert set(scores["model_version"].to_pylist()) == {registry["onnx"]}
    lines = run.get_task_instance("maintain_table").xcom_pull(task_ids="maintain_table")
    assert lines == [
        f"{TABLE}: 0 snapshots expired, 0 unreferenced files removed",
        f"{rejects_identifier(TABLE)}: 0 snapshots expired, 0 unreferenced files removed",
    ]
