"""EMR definitions and idempotent control, against moto's server (EMR never runs anything there)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import os

import boto3
import pytest
from botocore.stub import Stubber

from scoring.cli import build_parser, config_from_args
from scoring.config import JobConfig
from scoring.orchestration import emr

KEY = emr.idempotency_key("daily_batch_scoring", "scheduled__2026-11-01T00:00:00+00:00", "2026-11-01")
CONFIG = JobConfig(
    model_uri="models:/credit-risk/2",
    input="s3://data/customers",
    output="s3://data/scores",
    date=dt.date(2026, 11, 1),
    id_columns=("customer_id",),
    keep_columns=("region", "segment"),
    max_reject_fraction=0.02,
)


def request(flavour: str = "gpu", key: str = KEY) -> dict:
    return emr.job_flow_config(
        flavour,
        key=key,
        log_uri="s3://logs/emr/",
        bootstrap_uri="s3://artifacts/bootstrap.sh",
        wheel_uri="s3://artifacts/scoring-0.1.0-py3-none-any.whl",
        core_instance_count=3,
    )


def configuration(config: dict, classification: str) -> dict:
    return next(c for c in config["Configurations"] if c["Classification"] == classification)


def test_gpu_job_flow_schedules_gpus_on_yarn_and_spark():
    config = request("gpu")
    core = next(g for g in config["Instances"]["InstanceGroups"] if g["InstanceRole"] == "CORE")
    assert core["InstanceType"].startswith(("g5.", "g6.")) and core["InstanceCount"] == 3
    assert config["ReleaseLabel"].startswith("emr-7.")
    spark = configuration(config, "spark-defaults")["Properties"]
    assert spark["spark.executor.resource.gpu.amount"] == "1"
    assert float(spark["spark.task.resource.gpu.amount"]) <= 1
    assert spark["spark.executor.resource.gpu.discoveryScript"].endswith("getGpusResources.sh")
    assert (
        configuration(config, "yarn-site")["Properties"]["yarn.nodemanager.resource-plugins"] == "yarn.io/gpu"
    )
    assert config["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"][1] == "gpu"
    assert config["AutoTerminationPolicy"]["IdleTimeout"] > 0
    assert {"Key": emr.IDEMPOTENCY_TAG, "Value": KEY} in config["Tags"]
    assert config["LogUri"] == "s3://logs/emr/"


def test_cpu_job_flow_has_no_gpu_settings_and_configs_are_fresh():
    cpu = request("cpu")
    assert "yarn-site" not in [c["Classification"] for c in cpu["Configurations"]]
    cpu["Instances"]["InstanceGroups"][0]["InstanceType"] = "changed"
    assert request("cpu")["Instances"]["InstanceGroups"][0]["InstanceType"] != "changed"
    with pytest.raises(emr.ScoringError, match="unknown EMR flavour"):
        request("tpu")


def test_step_is_the_local_jobs_command_line():
    step = emr.scoring_step(KEY, "s3://artifacts/score.py", CONFIG)
    args = step["HadoopJarStep"]["Args"]
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert args[:4] == ["spark-submit", "--deploy-mode", "client", "s3://artifacts/score.py"]
    parsed = config_from_args(build_parser().parse_args(["score", *args[4:]]))
    assert parsed == CONFIG  # the very flags scoring score takes, and nothing lost
    assert KEY in step["Name"]


def test_the_dags_engine_param_reaches_the_steps_flags():
    from scoring.orchestration.tasks import default_params, job_config

    params = {**default_params(), "engine": "spark"}
    config = job_config(params, CONFIG.date, CONFIG.model_uri)
    args = emr.scoring_step(KEY, "s3://artifacts/score.py", config)["HadoopJarStep"]["Args"]
    assert args[args.index("--engine") + 1] == "spark"
    assert config_from_args(build_parser().parse_args(["score", *args[4:]])).engine == "spark"
    default = job_config(default_params(), CONFIG.date, CONFIG.model_uri)
    assert default.engine == "auto" and "--engine" not in default.to_cli_args()


TABLE_CONFIG = dataclasses.replace(CONFIG, output=None, table="analytics.scores", catalog="glue")


def step_parts(args: list[str]) -> tuple[dict[str, str], dict[str, str], str, list[str]]:
    """A step's ``env`` variables, spark-submit's ``--conf`` settings, the job's URI and the job's flags."""
    environment = {}
    if args[0] == "env":
        submit = args.index("spark-submit")
        environment = dict(arg.split("=", 1) for arg in args[1:submit])
        args = args[submit:]
    assert args[:3] == ["spark-submit", "--deploy-mode", "client"]
    rest, confs = args[3:], {}
    while rest[0] == "--conf":
        name, _, value = rest[1].partition("=")
        confs[name] = value
        rest = rest[2:]
    return environment, confs, rest[0], rest[1:]


def pyiceberg_sees(monkeypatch, environment: dict[str, str], name: str) -> dict[str, str] | None:
    """The catalog's properties pyiceberg reads from ``environment`` and nothing else."""
    from scoring.dataset.catalog import catalog_properties

    for variable in list(os.environ):
        if variable.upper().startswith("PYICEBERG_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("PYICEBERG_HOME", "/nonexistent")  # no .pyiceberg.yaml either
    monkeypatch.setenv("HOME", "/nonexistent")
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    return catalog_properties(name)[1]


def test_a_table_step_carries_its_flags_and_configures_the_glue_catalog_for_driver_and_executors(
    monkeypatch,
):
    environment = emr.catalog_environment("glue", emr.glue_catalog("s3://data/iceberg", "eu-west-1"))
    step = emr.scoring_step(KEY, "s3://artifacts/score.py", TABLE_CONFIG, environment)

    variables, confs, job, flags = step_parts(step["HadoopJarStep"]["Args"])
    assert variables == environment  # the driver's, set before spark-submit (client mode)
    assert confs == {f"spark.executorEnv.{name}": value for name, value in environment.items()}
    assert job == "s3://artifacts/score.py"
    assert flags[flags.index("--table") + 1] == "analytics.scores" and "--output" not in flags
    assert flags[flags.index("--catalog") + 1] == "glue"
    assert config_from_args(build_parser().parse_args(["score", *flags])) == TABLE_CONFIG
    # What pyiceberg on the node makes of those variables.
    assert pyiceberg_sees(monkeypatch, variables, "glue") == {
        "type": "glue",
        "warehouse": "s3://data/iceberg",
        "glue.region": "eu-west-1",
    }


def test_catalog_variables_spell_pyicebergs_keys_and_refuse_what_they_cannot_carry(monkeypatch):
    properties = {"type": "glue", "s3.access-key-id": "key", "glue.endpoint": "http://127.0.0.1:5000"}
    environment = emr.catalog_environment("Prod2", properties)
    assert "PYICEBERG_CATALOG__PROD2__S3__ACCESS_KEY_ID" in environment
    assert pyiceberg_sees(monkeypatch, environment, "prod2") == properties
    with pytest.raises(emr.ScoringError, match="letters and digits only"):
        emr.catalog_environment("glue_prod", properties)
    with pytest.raises(emr.ScoringError, match="'py_io' cannot be set"):
        emr.catalog_environment("glue", {"py_io": "x"})
    assert emr.scoring_step(KEY, "s3://a/score.py", CONFIG)["HadoopJarStep"]["Args"][0] == "spark-submit"


def test_the_dags_table_params_reach_the_job_and_name_a_glue_catalog_on_emr(monkeypatch):
    from scoring.orchestration import tasks

    # The AWS connection's region is Glue's.
    monkeypatch.setattr(tasks, "emr_client", lambda params: boto3.client("emr", region_name="eu-west-1"))
    params = {
        **tasks.default_params(),
        "compute": "emr",
        "output": "s3://data/scores/daily",
        "table": "analytics.scores",
    }
    config = tasks.job_config(params, CONFIG.date, CONFIG.model_uri)
    # The catalog is named on EMR: the job and the worker's tasks open the one the variables configure.
    assert (config.output, config.table, config.catalog) == (None, "analytics.scores", emr.DEFAULT_CATALOG)
    where = tasks.destination(params)
    assert (where.directory, where.table, where.catalog) == (None, "analytics.scores", "default")
    assert tasks.catalog_environment(params) == {
        "PYICEBERG_CATALOG__DEFAULT__TYPE": "glue",
        "PYICEBERG_CATALOG__DEFAULT__WAREHOUSE": "s3://data/iceberg",
        "PYICEBERG_CATALOG__DEFAULT__GLUE__REGION": "eu-west-1",
    }
    named = {**params, "catalog": "scores", "glue_warehouse": "s3://lake/warehouse"}
    assert tasks.catalog_environment(named) == {
        "PYICEBERG_CATALOG__SCORES__TYPE": "glue",
        "PYICEBERG_CATALOG__SCORES__WAREHOUSE": "s3://lake/warehouse",
        "PYICEBERG_CATALOG__SCORES__GLUE__REGION": "eu-west-1",
    }
    with pytest.raises(emr.ScoringError, match="is not on S3: give the Glue catalog's warehouse"):
        tasks.catalog_environment({**params, "output": "/data/scores"})
    # The tasks that read the table see the variables while they read, and not after.
    monkeypatch.delenv("PYICEBERG_CATALOG__DEFAULT__TYPE", raising=False)
    with tasks.catalog_configured(params):
        assert os.environ["PYICEBERG_CATALOG__DEFAULT__TYPE"] == "glue"
    assert "PYICEBERG_CATALOG__DEFAULT__TYPE" not in os.environ
    # Locally the worker's own configuration holds, and a catalog left null stays pyiceberg's default.
    local = {**params, "compute": "local"}
    assert tasks.job_config(local, CONFIG.date, CONFIG.model_uri).catalog is None
    assert tasks.catalog_environment(local) == {}
    # Without a table the run writes the output directory, as before.
    directory = tasks.job_config({**params, "table": None}, CONFIG.date, CONFIG.model_uri)
    assert (directory.output, directory.table, directory.catalog) == ("s3://data/scores/daily", None, None)
    assert tasks.catalog_environment({**params, "table": None}) == {}


def test_idempotency_key_is_per_run_and_date():
    other_run = emr.idempotency_key("daily_batch_scoring", "manual__2026-11-02", "2026-11-01")
    other_date = emr.idempotency_key(
        "daily_batch_scoring", "scheduled__2026-11-01T00:00:00+00:00", "2026-11-02"
    )
    assert len({KEY, other_run, other_date}) == 3
    assert (
        emr.idempotency_key("daily_batch_scoring", "scheduled__2026-11-01T00:00:00+00:00", "2026-11-01")
        == KEY
    )


def test_retried_tasks_find_their_cluster_and_step(aws):
    client = boto3.client("emr")
    first = emr.find_or_create_cluster(client, KEY, request())
    assert emr.find_or_create_cluster(client, KEY, request()) == first
    other_key = KEY.replace("2026-11-01", "2026-11-09")
    assert emr.find_or_create_cluster(client, other_key, request(key=other_key)) != first

    step = emr.scoring_step(KEY, "s3://artifacts/score.py", CONFIG)
    step_id = emr.find_or_add_step(client, first, step)
    assert emr.find_or_add_step(client, first, step) == step_id
    assert len(client.list_steps(ClusterId=first)["Steps"]) == 1

    assert emr.end_run_clusters(client, KEY, first) == [first]
    assert client.describe_cluster(ClusterId=first)["Cluster"]["Status"]["State"] == "TERMINATED"
    # a terminated cluster is not reused: the next attempt gets a new one
    assert emr.find_or_create_cluster(client, KEY, request()) != first


def alive(client, cluster_id: str) -> bool:
    return (
        client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        in emr.ALIVE_CLUSTER_STATES
    )


def test_a_lost_run_job_flow_answer_leaves_one_cluster_not_two(aws, caplog):
    """EMR creates a cluster, its answer is lost, botocore retries: the duplicate is ended at once."""
    client = boto3.client("emr")
    key = "lost-answer.2026-11-01.0123456789"
    calls = aws.faults.calls["RunJobFlow"]
    aws.faults.lose_next("RunJobFlow")

    with caplog.at_level("INFO", logger=emr.__name__):
        kept = emr.find_or_create_cluster(client, key, request(key=key))

    assert aws.faults.calls["RunJobFlow"] - calls == 2  # the lost answer, then botocore's retry
    assert [c.id for c in emr.run_clusters(client, key)] == [kept]
    (duplicate,) = {c["Id"] for c in client.list_clusters()["Clusters"] if c["Name"] == f"scoring {key}"} - {
        kept
    }
    assert not alive(client, duplicate)
    assert f"terminating cluster {duplicate}: duplicate of {kept}" in caplog.text
    assert emr.find_or_create_cluster(client, key, request(key=key)) == kept  # a retry reuses it
    emr.end_run_clusters(client, key, kept)


def test_the_duplicate_kept_is_the_one_holding_the_runs_step(aws):
    client = boto3.client("emr")
    key = "two-clusters.2026-11-01.0123456789"
    older = client.run_job_flow(**request(key=key))["JobFlowId"]
    newer = client.run_job_flow(**request(key=key))["JobFlowId"]
    emr.find_or_add_step(client, newer, emr.scoring_step(key, "s3://a/score.py", CONFIG))

    assert emr.find_or_create_cluster(client, key, request(key=key)) == newer
    assert not alive(client, older) and alive(client, newer)
    emr.end_run_clusters(client, key, newer)


def test_teardown_ends_orphans_and_duplicates_and_never_fails_on_a_cluster_already_gone(aws, caplog):
    client = boto3.client("emr")
    key = "teardown.2026-11-01.0123456789"
    other_key = "teardown.2026-11-02.0123456789"
    orphan = client.run_job_flow(**request(key=key))["JobFlowId"]
    other_run = client.run_job_flow(**request(key=other_key))["JobFlowId"]

    with caplog.at_level("INFO", logger=emr.__name__):
        assert emr.end_run_clusters(client, key, None) == [orphan]  # create_cluster returned no id
        assert f"terminating cluster {orphan}: orphan of a failed create" in caplog.text
        assert emr.end_run_clusters(client, key, orphan) == []  # already gone: nothing to do, no error
        assert f"cluster {orphan} of {key} is already TERMINATED" in caplog.text
    assert alive(client, other_run)  # another run's cluster is not this teardown's

    ours, duplicate = (client.run_job_flow(**request(key=key))["JobFlowId"] for _ in range(2))
    with caplog.at_level("INFO", logger=emr.__name__):
        assert emr.end_run_clusters(client, key, ours) == [ours, duplicate]
    assert f"terminating cluster {duplicate}: duplicate of {ours}" in caplog.text
    assert not alive(client, ours) and not alive(client, duplicate)
    emr.end_run_clusters(client, other_key, other_run)


def test_stale_clusters_are_earlier_runs_of_the_dag_that_are_over(aws):
    client = boto3.client("emr")
    dag_id = "stale_test_dag"

    def create(run_id: str, date: str, dag: str = dag_id, with_run_tag: bool = True) -> str:
        key = emr.idempotency_key(dag, run_id, date)
        tags = {emr.DAG_TAG: dag, **({emr.RUN_TAG: run_id} if with_run_tag else {})}
        return client.run_job_flow(
            **request(key=key)
            | {"Tags": [*request(key=key)["Tags"], *({"Key": k, "Value": v} for k, v in tags.items())]}
        )["JobFlowId"]

    over = create("scheduled__2026-10-30T00:00:00+00:00", "2026-10-30")
    untagged = create("manual__2026-10-29", "2026-10-29", with_run_tag=False)
    running = create("scheduled__2026-10-31T00:00:00+00:00", "2026-10-31")
    this_run = create("scheduled__2026-11-01T00:00:00+00:00", "2026-11-01")
    other_dag = create("scheduled__2026-10-30T00:00:00+00:00", "2026-10-30", dag="another_dag")
    key = emr.idempotency_key(dag_id, "scheduled__2026-11-01T00:00:00+00:00", "2026-11-01")

    stale = emr.stale_clusters(client, dag_id, key, lambda run_id: run_id.startswith("scheduled__2026-10-31"))

    assert {c.id for c in stale} == {over, untagged}
    assert {c.id: c.tags.get(emr.RUN_TAG) for c in stale}[over] == "scheduled__2026-10-30T00:00:00+00:00"
    for cluster in (over, untagged, running, this_run, other_dag):
        emr.end_cluster(client, cluster, "test over")


def test_failed_step_reports_its_stderr_tail_from_the_log_uri(aws):
    from moto.emr.models import emr_backends

    boto3.client("s3").create_bucket(Bucket="logs")
    client = boto3.client("emr")
    cluster = emr.find_or_create_cluster(client, "failing", request(key="failing"))
    step_id = emr.find_or_add_step(client, cluster, emr.scoring_step("failing", "s3://a/score.py", CONFIG))
    stderr = "\n".join([*(f"log line {i}" for i in range(50)), "error: input s3://data/customers: no rows"])
    boto3.client("s3").put_object(
        Bucket="logs", Key=f"emr/{cluster}/steps/{step_id}/stderr.gz", Body=gzip.compress(stderr.encode())
    )
    backend = emr_backends["123456789012"]["us-east-1"].clusters[cluster]
    next(s for s in backend.steps if s.id == step_id).state = "FAILED"

    with pytest.raises(emr.StepFailed) as failure:
        emr.wait_for_step(client, boto3.client("s3"), cluster, step_id, poll_s=0)

    message = str(failure.value)
    assert f"step {step_id} on {cluster} FAILED" in message
    assert message.rstrip().endswith("error: input s3://data/customers: no rows")
    assert "log line 21" in message and "log line 20" not in message  # the last 30 lines only


def test_killing_the_wait_cancels_the_step():
    """moto has no CancelSteps: botocore's stubber checks the request against the real API model."""
    client = boto3.client("emr", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response(
            "cancel_steps",
            {"CancelStepsInfoList": [{"StepId": "s-1", "Status": "SUBMITTED"}]},
            {"ClusterId": "j-1", "StepIds": ["s-1"], "StepCancellationOption": "TERMINATE_PROCESS"},
        )
        emr.cancel_step(client, "j-1", "s-1")
        stub.assert_no_pending_responses()
