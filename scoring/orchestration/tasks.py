"""The daily DAG's task logic: each task is a function here, the DAG file only wires them.

Tasks read what one run needs from the DAG run's ``params`` and score the partition of the run's
logical date, never the wall clock's. Airflow, pandas, pyarrow and MLflow are imported inside the
functions: the scheduler parses the DAG file often, and this module is all it imports.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scoring import PROJECT_ROOT
from scoring.config import JobConfig
from scoring.errors import ScoringError
from scoring.orchestration import emr

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPUTES = ("local", "emr")


def default_params() -> dict[str, Any]:
    """The DAG's params and their defaults, from the environment (a laptop's defaults when unset)."""
    env = os.environ.get
    return {
        "model_uri": env("SCORING_MODEL_URI", "models:/credit-risk@champion"),
        "input": env("SCORING_INPUT", str(PROJECT_ROOT / "demo-workdir" / "input")),
        "output": env("SCORING_OUTPUT", str(PROJECT_ROOT / "demo-workdir" / "output")),
        "id_column": env("SCORING_ID_COLUMN", "customer_id"),
        "keep_columns": env("SCORING_KEEP_COLUMNS", ""),
        "scores": env("SCORING_SCORES", "auto"),
        "partition_column": "date",
        "compute": env("SCORING_COMPUTE", "local"),
        "local_master": env("SCORING_LOCAL_MASTER", "local[*]"),
        "max_model_age_days": float(env("SCORING_MAX_MODEL_AGE_DAYS", "90")),
        "max_reject_fraction": 0.01,
        "psi_threshold": 0.2,
        "emr_flavour": env("SCORING_EMR_FLAVOUR", "gpu"),
        "emr_core_nodes": int(env("SCORING_EMR_CORE_NODES", "2")),
        "artifacts_uri": env("SCORING_ARTIFACTS_URI", "s3://scoring-artifacts/staging"),
        "emr_log_uri": env("SCORING_EMR_LOG_URI", "s3://scoring-artifacts/emr-logs"),
        "aws_conn_id": env("SCORING_AWS_CONN_ID", "aws_default"),
        "step_poll_seconds": float(env("SCORING_STEP_POLL_SECONDS", "30")),
        "terminate_stale": False,
    }


def partition_date(context: dict) -> dt.date:
    """The partition a run scores: its logical date, in UTC.

    For a scheduled run that is its data interval's start (the run after midnight scores the day
    that ended); ``airflow dags test daily_batch_scoring 2026-11-01`` scores 2026-11-01. A manual run
    without a logical date scores its data interval's start.
    """
    moment = context.get("logical_date") or context["data_interval_start"]
    return moment.astimezone(dt.UTC).date()


def job_config(params: dict, date: dt.date, model_uri: str) -> JobConfig:
    """The scoring job's configuration for one run (the same flags locally and on EMR)."""
    keep = tuple(c for c in params["keep_columns"].split(",") if c)
    return JobConfig(
        model_uri=model_uri,
        input=params["input"],
        output=params["output"],
        date=date,
        id_columns=tuple(params["id_column"].split(",")),
        partition_column=params["partition_column"],
        keep_columns=keep,
        scores=params["scores"],
        max_reject_fraction=float(params["max_reject_fraction"]),
    )


def run_key(context: dict) -> str:
    """The idempotency key of this DAG run's work on its date."""
    return emr.idempotency_key(context["dag"].dag_id, context["run_id"], partition_date(context).isoformat())


def fail_fast(function: Callable[..., T]) -> Callable[..., T]:
    """Turn an expected failure (a ``ScoringError``) into a task failure that is not retried.

    Retrying a bad alias, a bad input or a failed step's wait only delays the alert; unexpected
    errors (a throttled API, a lost connection) keep the DAG's retries.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return function(*args, **kwargs)
        except ScoringError as e:
            raise AirflowFailException(str(e)) from e

    return wrapper


@fail_fast
def validate_model() -> dict:
    """Task: the alias resolves, the version is recent enough and has a signature; pin it."""
    from airflow.sdk import get_current_context

    from scoring.orchestration.preflight import check_model

    context = get_current_context()
    params = context["params"]
    pinned = check_model(params["model_uri"], params["max_model_age_days"], context["data_interval_end"])
    log.info("model %s pinned to %s", params["model_uri"], pinned["pinned_uri"])
    return pinned


@fail_fast
def preflight(model: dict) -> dict:
    """Task: the input partition's footers match the signature, and a sample scores locally."""
    from airflow.sdk import get_current_context

    from scoring.orchestration.preflight import check_input

    context = get_current_context()
    config = job_config(context["params"], partition_date(context), model["pinned_uri"])
    found = check_input(
        config.model_uri,
        config.input,
        config.date,
        config.partition_column,
        (*config.id_columns, *config.keep_columns),
        scores=config.scores,
    )
    log.info(
        "pre-flight: %s rows in %s files; the model's output: %s",
        found["rows"],
        found["files"],
        found["output"],
    )
    return found


@fail_fast
def choose_compute() -> str:
    """Branch: the task id that starts the chosen compute."""
    from airflow.sdk import get_current_context

    compute = get_current_context()["params"]["compute"]
    if compute not in COMPUTES:
        raise ScoringError(f"param compute must be one of {', '.join(COMPUTES)}, not {compute!r}")
    return "run_local" if compute == "local" else "stage_artifacts"


@fail_fast
def run_local(model: dict) -> None:
    """Task: the very same job through spark-submit on this worker, on ``local[*]``."""
    from airflow.sdk import get_current_context

    from scoring.batch.session import prepare_environment

    context = get_current_context()
    params = context["params"]
    config = job_config(params, partition_date(context), model["pinned_uri"])
    prepare_environment(params["local_master"])
    spark_submit = Path(sys.executable).with_name("spark-submit")
    command = [str(spark_submit), "--master", params["local_master"], "--conf", "spark.log.level=WARN",
               str(PROJECT_ROOT / "jobs" / "score.py"), *config.to_cli_args()]  # fmt: skip
    log.info("running %s", " ".join(command))
    # Airflow's task log captures what the job prints; keep its last lines for the error.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in process.stdout:
        log.info("%s", line.rstrip())
        tail = [*tail[-19:], line.rstrip()]
    if process.wait() != 0:
        errors = [line for line in tail if line.startswith("error: ")]
        raise ScoringError(f"the scoring job exited {process.returncode}: " + ("\n".join(errors or tail)))


@fail_fast
def stage(model: dict) -> dict:
    """Task: upload the wheel, the job, the bootstrap script and the pinned model under a per-run path."""
    from airflow.sdk import get_current_context

    from scoring.orchestration.artifacts import stage_artifacts

    context = get_current_context()
    return stage_artifacts(context["params"]["artifacts_uri"], run_key(context), model["pinned_uri"])


@fail_fast
def create_cluster(artifacts: dict) -> str:
    """Setup task: report clusters that earlier runs left alive, then find this run's cluster or create it."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    params = context["params"]
    dag_id, key = context["dag"].dag_id, run_key(context)
    client = emr_client(params)
    report_stale_clusters(client, context, end=bool(params["terminate_stale"]))
    request = emr.job_flow_config(
        params["emr_flavour"],
        key=key,
        log_uri=params["emr_log_uri"],
        bootstrap_uri=artifacts["bootstrap"],
        wheel_uri=artifacts["wheel"],
        core_instance_count=params["emr_core_nodes"],
        tags={
            emr.DAG_TAG: dag_id,
            emr.RUN_TAG: context["run_id"],
            "date": partition_date(context).isoformat(),
        },
    )
    return emr.find_or_create_cluster(client, key, request)


def report_stale_clusters(client: Any, context: dict, end: bool) -> list[str]:
    """Warn about live clusters of this DAG's earlier runs that are over; end them when ``end``.

    Such a cluster is paid for until its idle timeout: its run's teardown never ran (the scheduler
    died, the run was deleted). Clusters of runs still queued or running are left alone.
    """
    dag_id, ti = context["dag"].dag_id, context["ti"]

    def run_is_active(run_id: str) -> bool:
        return ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=["queued", "running"]) > 0

    stale = emr.stale_clusters(client, dag_id, run_key(context), run_is_active)
    for cluster in stale:
        log.warning(
            "cluster %s (%s) of an earlier run of %s is still alive: run %s, date %s, created %s; %s",
            cluster.id,
            cluster.state,
            dag_id,
            cluster.tags.get(emr.RUN_TAG, "unknown"),
            cluster.tags.get("date", "unknown"),
            cluster.created.isoformat(timespec="seconds"),
            "ending it (param terminate_stale)" if end else "set the param terminate_stale to end it",
        )
        if end:
            emr.end_cluster(
                client, cluster.id, f"stale: its run {cluster.tags.get(emr.RUN_TAG, '(unknown)')} is over"
            )
    return [cluster.id for cluster in stale]


@fail_fast
def add_step(cluster_id: str, artifacts: dict) -> str:
    """Task: find this run's scoring step on the cluster, or add it; it scores the staged model.

    The step's ``--model-uri`` is the model's staged copy, so the cluster needs no registry access;
    the copy's provenance record gives the manifest the registry's name, version and run id.
    """
    from airflow.sdk import get_current_context

    context = get_current_context()
    config = job_config(context["params"], partition_date(context), artifacts["model"])
    step = emr.scoring_step(run_key(context), artifacts["job"], config)
    return emr.find_or_add_step(emr_client(context["params"]), cluster_id, step)


def terminate_cluster(cluster_id: str | None) -> list[str]:
    """Teardown task: end every live cluster of this run, whatever happened before; the ids ended.

    ``cluster_id`` is None when ``create_cluster`` failed or was killed after EMR created a
    cluster: the run's idempotency tag still finds it. Duplicates (a lost ``RunJobFlow`` answer
    retried) are ended too, each logged with why.
    """
    from airflow.sdk import get_current_context

    context = get_current_context()
    return emr.end_run_clusters(emr_client(context["params"]), run_key(context), cluster_id)


@fail_fast
def validate_output() -> dict:
    """Task: check the published partition; fail the run when it is not valid."""
    from airflow.sdk import get_current_context

    from scoring.dataset.validate import validate_partition

    context = get_current_context()
    params = context["params"]
    report = validate_partition(
        params["output"], partition_date(context), params["partition_column"], float(params["psi_threshold"])
    )
    log.info("%s", report.summary())
    if not report.ok:
        raise ScoringError(f"output partition is not valid:\n{report.summary()}")
    return report.to_json()


def emr_client(params: dict) -> Any:
    """The EMR client of the DAG's AWS connection."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    return EmrHook(aws_conn_id=params["aws_conn_id"]).conn


def s3_client(params: dict) -> Any:
    """The S3 client of the DAG's AWS connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=params["aws_conn_id"]).get_conn()
