"""The daily DAG's task logic: each task is a function here, the DAG file only wires them.

Tasks read what one run needs from the DAG run's ``params`` and score the partition of the run's
logical date, never the wall clock's. The run's models besides the champion (challengers, an ensemble,
an A/B split: ``scoring.lineup``) come from the params ``challengers``, ``ensemble``, ``ab_split``,
``ab_salt`` and ``decision_threshold``, read in one place (``lineup_from_params``); ``validate_model``
pins every model, and later tasks take the pinned lineup from its XCom, never from the params.
Where the run publishes (the ``output`` directory, or the Iceberg ``table`` in ``catalog``) is read in
one place too (``destination_fields``): the job's flags and every task that reads the output
(``preflight``'s cost estimate, ``validate_output``, ``maintain_table``) go through it. On EMR the
table's catalog is Glue (``catalog_environment``).
Airflow, pandas, pyarrow and MLflow are imported inside the functions: the scheduler parses the DAG
file often, and this module is all it imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from scoring import PROJECT_ROOT
from scoring.config import ENGINES, PSI_THRESHOLD, SCORES, JobConfig
from scoring.errors import ModelError, ScoringError
from scoring.lineup import DECISION_THRESHOLD, Lineup, LineupError
from scoring.orchestration import emr

if TYPE_CHECKING:
    from scoring.dataset.destination import Destination

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPUTES = ("local", "emr")

# The params' JSON schemas beyond their defaults (the DAG file hands them to Airflow's ``Param``): the
# trigger form offers the choices and refuses a value of the wrong kind before any task runs.
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "output": {
        "type": "string",
        "description": "root of the date-partitioned output directory (a path or s3://); not written "
        "when table is set (on EMR its bucket then holds the Glue warehouse, unless glue_warehouse says)",
    },
    "table": {
        "type": ["null", "string"],
        "pattern": r"^[^.\s]+(\.[^.\s]+)+$",
        "description": "an Apache Iceberg table, NAMESPACE.TABLE, to publish to instead of output: each "
        "date replaced in one catalog commit, rejects in TABLE__rejects; null: the output directory",
    },
    "catalog": {
        "type": ["null", "string"],
        "description": "the pyiceberg catalog holding table, configured on this worker as pyiceberg's "
        "users configure one (PYICEBERG_CATALOG__NAME__* variables, .pyiceberg.yaml); null: pyiceberg's "
        "default name (an embedded SQLite catalog in ./warehouse when nothing configures it). On EMR it "
        "is Glue, configured by the DAG for the step and for the tasks that read the table (letters and "
        "digits only)",
    },
    "glue_warehouse": {
        "type": ["null", "string"],
        "pattern": "^s3://",
        "description": "on EMR with table: where the Glue catalog puts tables a run creates "
        "(s3://BUCKET/PREFIX); null: s3://<output's bucket>/iceberg",
    },
    "maintain_older_than_days": {
        "type": ["null", "number"],
        "minimum": 1,
        "description": "with table: after validate_output passes, expire the scores' and rejects' "
        "snapshots older than this many days and remove files no kept snapshot references (scoring "
        "maintain); at least a day, so that a run still writing keeps its files; null: no maintenance",
    },
    "compute": {"enum": list(COMPUTES)},
    "scores": {"enum": list(SCORES)},
    "engine": {
        "enum": list(ENGINES),
        "description": "the job's --engine: auto (the Arrow pass wherever it applies), arrow or spark",
    },
    "challengers": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "models scored beside the champion, name -> model reference "
        "(columns challenger_NAME_*); an alias is pinned by validate_model",
    },
    "ensemble": {
        "type": "object",
        "additionalProperties": {"type": "number"},
        "description": "a weighted mean of these models, name (champion or a challenger) -> weight",
    },
    "ab_split": {
        "type": "object",
        "additionalProperties": {"type": "number"},
        "description": "an A/B split over these models, name (champion or a challenger) -> share",
    },
    "ab_salt": {
        "type": ["null", "string"],
        "description": "the A/B experiment's id (required with ab_split)",
    },
    "decision_threshold": {
        "type": "number",
        "description": "where a probability becomes a positive decision, for the share a challenger flips",
    },
    "max_cost_usd": {
        "type": ["null", "number"],
        "description": "fail the run at preflight, before any cluster exists, when the EMR cluster's "
        "estimated cost (on-demand, emr/prices.json) is over this many dollars; null: no limit; a local "
        "run pays for no cluster and is not limited",
    },
}

# The job's flags in a lineup's messages, and the params that set them in the DAG.
_PARAM_OF_FLAG = {
    "--ab-salt": "ab_salt",
    "--ab": "ab_split",
    "ab.split": "ab_split",
    "--ensemble": "ensemble",
    "--decision-threshold": "decision_threshold",
}


def default_params() -> dict[str, Any]:
    """The DAG's params and their defaults, from the environment (a laptop's defaults when unset)."""
    env = os.environ.get
    return {
        "model_uri": env("SCORING_MODEL_URI", "models:/credit-risk@champion"),
        "input": env("SCORING_INPUT", str(PROJECT_ROOT / "demo-workdir" / "input")),
        "output": env("SCORING_OUTPUT", str(PROJECT_ROOT / "demo-workdir" / "output")),
        # An Iceberg table instead of the output directory (see destination_fields), in a pyiceberg catalog.
        "table": env("SCORING_TABLE") or None,
        "catalog": env("SCORING_CATALOG") or None,
        # On EMR, the Glue catalog's warehouse (None: in the output's bucket, emr.default_warehouse).
        "glue_warehouse": env("SCORING_GLUE_WAREHOUSE") or None,
        # Table maintenance after the run validates (None: none).
        "maintain_older_than_days": _number_or_none(env("SCORING_MAINTAIN_OLDER_THAN_DAYS")),
        "id_column": env("SCORING_ID_COLUMN", "customer_id"),
        "keep_columns": env("SCORING_KEEP_COLUMNS", ""),
        "scores": env("SCORING_SCORES", JobConfig.scores),
        "engine": env("SCORING_ENGINE", JobConfig.engine),
        "partition_column": JobConfig.partition_column,
        "compute": env("SCORING_COMPUTE", "local"),
        "local_master": env("SCORING_LOCAL_MASTER", "local[*]"),
        "max_model_age_days": float(env("SCORING_MAX_MODEL_AGE_DAYS", "90")),
        "max_reject_fraction": JobConfig.max_reject_fraction,
        "psi_threshold": PSI_THRESHOLD,
        "emr_flavour": env("SCORING_EMR_FLAVOUR", "gpu"),
        "emr_core_nodes": int(env("SCORING_EMR_CORE_NODES", "2")),
        "artifacts_uri": env("SCORING_ARTIFACTS_URI", "s3://scoring-artifacts/staging"),
        "emr_log_uri": env("SCORING_EMR_LOG_URI", "s3://scoring-artifacts/emr-logs"),
        "aws_conn_id": env("SCORING_AWS_CONN_ID", "aws_default"),
        "step_poll_seconds": float(env("SCORING_STEP_POLL_SECONDS", "30")),
        "terminate_stale": False,
        # The most an EMR run may cost by the pre-flight's estimate (None: no limit).
        "max_cost_usd": None,
        # The run's lineup (see lineup_from_params): the champion alone by default.
        "challengers": {},
        "ensemble": {},
        "ab_split": {},
        "ab_salt": None,
        "decision_threshold": DECISION_THRESHOLD,
    }


def _number_or_none(value: str | None) -> float | None:
    """A number from an environment variable; None when it is unset or empty."""
    return None if value in (None, "") else float(value)


def destination_fields(params: Mapping[str, Any]) -> dict[str, str | None]:
    """Where the run publishes, as ``JobConfig``'s ``output``, ``table`` and ``catalog``: the one place.

    With ``table`` set the run publishes to the table, and ``output`` is not the job's. On EMR the
    catalog is always named (``emr.DEFAULT_CATALOG`` when the param is null), so that the job on the
    cluster and the tasks on this worker configure and open the same one.
    """
    table = params["table"] or None
    catalog = params["catalog"] or None
    if table and catalog is None and params["compute"] == "emr":
        catalog = emr.DEFAULT_CATALOG
    return {"output": None if table else params["output"], "table": table, "catalog": catalog}


def destination(params: Mapping[str, Any]) -> Destination:
    """The run's output as readers see it (``scoring.dataset.destination``): the directory or the table."""
    from scoring.dataset.destination import Destination

    fields = destination_fields(params)
    return Destination(
        directory=fields["output"],
        table=fields["table"],
        catalog=fields["catalog"],
        partition_column=params["partition_column"],
    )


def catalog_environment(params: Mapping[str, Any]) -> dict[str, str]:
    """The variables configuring pyiceberg's catalog of an EMR run's table; none for other runs.

    On EMR the table's catalog is Glue (``emr.glue_catalog``) in the AWS connection's region, its
    warehouse the param ``glue_warehouse`` or a folder of the output's bucket. The step's job gets
    these variables, and the tasks that read the table set them while they do (``catalog_configured``).
    A local run uses the worker's own pyiceberg configuration.

    Raises:
        ScoringError: No warehouse on S3 (``output`` is not on S3 and ``glue_warehouse`` is null), or a
            catalog name that environment variables cannot carry.
    """
    fields = destination_fields(params)
    if params["compute"] != "emr" or not fields["table"]:
        return {}
    warehouse = params["glue_warehouse"] or emr.default_warehouse(params["output"])
    region = emr_client(params).meta.region_name
    return emr.catalog_environment(str(fields["catalog"]), emr.glue_catalog(warehouse, region))


@contextlib.contextmanager
def catalog_configured(params: Mapping[str, Any]) -> Iterator[None]:
    """While the block runs, this process opens the run's catalog as the job does (an EMR run's Glue).

    The variables of ``catalog_environment`` are set for the block and restored after it; whatever
    else configures the catalog here (credentials, endpoints) stays.
    """
    environment = catalog_environment(params)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def lineup_from_params(params: Mapping[str, Any]) -> Lineup:
    """The run's lineup, from its params: the one place the DAG reads them.

    Args:
        params: The DAG run's params: ``challengers`` (name -> model reference), ``ensemble``
            (name -> weight), ``ab_split`` (name -> share), ``ab_salt`` and ``decision_threshold``.

    Returns:
        The lineup, its references as the params give them (``validate_model`` pins them).

    Raises:
        LineupError: The params do not make a lineup (an unknown model named, a split without its
            salt, ...); the message names the params.
    """
    split, salt = params.get("ab_split") or {}, params.get("ab_salt")
    try:
        return Lineup.from_mapping(
            {
                "challengers": params.get("challengers") or {},
                "ensemble": params.get("ensemble") or {},
                "ab": {"split": split, "salt": salt} if split or salt is not None else {},
                "decision_threshold": params.get("decision_threshold", DECISION_THRESHOLD),
            }
        )
    except LineupError as e:
        message = re.sub("|".join(map(re.escape, _PARAM_OF_FLAG)), lambda m: _PARAM_OF_FLAG[m[0]], str(e))
        raise LineupError(f"lineup params: {message}") from e


def pinned_lineup(xcom: Mapping[str, Any]) -> Lineup:
    """The lineup an upstream task pinned (``validate_model``) or staged (``stage``), from its XCom."""
    return Lineup.from_mapping(xcom.get("lineup") or {})


def partition_date(context: dict) -> dt.date:
    """The partition a run scores: its logical date, in UTC.

    For a scheduled run that is its data interval's start (the run after midnight scores the day
    that ended); ``airflow dags test daily_batch_scoring 2026-11-01`` scores 2026-11-01. A manual run
    without a logical date scores its data interval's start.
    """
    moment = context.get("logical_date") or context["data_interval_start"]
    return moment.astimezone(dt.UTC).date()


def job_config(
    params: dict,
    date: dt.date,
    model_uri: str,
    lineup: Lineup | None = None,
    cost_estimate: Mapping[str, Any] | None = None,
) -> JobConfig:
    """The scoring job's configuration for one run (the same flags locally and on EMR).

    Args:
        params: The DAG run's params.
        date: The partition to score.
        model_uri: The champion's pinned (or staged) reference.
        lineup: The pinned (or staged) lineup; None for the champion alone.
        cost_estimate: The pre-flight's cost estimate (its XCom's ``estimate``), for the manifest.
    """
    keep = tuple(c for c in params["keep_columns"].split(",") if c)
    return JobConfig(
        model_uri=model_uri,
        lineup=lineup or Lineup(),
        input=params["input"],
        **destination_fields(params),
        date=date,
        id_columns=tuple(params["id_column"].split(",")),
        partition_column=params["partition_column"],
        keep_columns=keep,
        scores=params["scores"],
        max_reject_fraction=float(params["max_reject_fraction"]),
        engine=params.get("engine", JobConfig.engine),
        cost_estimate=cost_estimate,
    )


def run_job_config(
    context: dict, model_uri: str, lineup_xcom: Mapping[str, Any], checked: Mapping[str, Any] | None = None
) -> JobConfig:
    """The scoring job's configuration for the task's run: its params, its date, the models given.

    Args:
        context: The task's Airflow context.
        model_uri: The champion's pinned (or staged) reference.
        lineup_xcom: The XCom of the task that pinned (``validate_model``) or staged (``stage``) the lineup.
        checked: The pre-flight's XCom, whose ``estimate`` goes to the job; None: no estimate.
    """
    return job_config(
        context["params"],
        partition_date(context),
        model_uri,
        pinned_lineup(lineup_xcom),
        (checked or {}).get("estimate"),
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
    """Task: the run's lineup makes sense, and every model is recent enough and has a signature; pin them.

    The champion and each challenger are checked alike; an alias becomes a version here, and every later
    task scores the versions pinned here, even if an alias moves.

    Returns:
        The champion's pinned reference (``pinned_uri``, ``name``, ``version``, ``created_at``), with
        ``challengers`` (each challenger's, by name) and ``lineup`` (the lineup with the challengers'
        pinned references, as ``Lineup.to_json``; ``pinned_lineup`` reads it back).
    """
    from airflow.sdk import get_current_context

    from scoring.orchestration.preflight import check_model

    context = get_current_context()
    params = context["params"]
    lineup = lineup_from_params(params)  # before the registry is asked: a bad lineup fails at once
    as_of, max_age = context["data_interval_end"], params["max_model_age_days"]
    pinned = check_model(params["model_uri"], max_age, as_of)
    log.info("model %s pinned to %s", params["model_uri"], pinned["pinned_uri"])
    challengers = {}
    for name, uri in lineup.challengers:
        try:
            challengers[name] = check_model(uri, max_age, as_of)
        except ModelError as e:
            raise ModelError(f"challenger {name!r}: {e}") from e
        log.info("challenger %s %s pinned to %s", name, uri, challengers[name]["pinned_uri"])
    pinned_challengers = tuple((name, challengers[name]["pinned_uri"]) for name, _ in lineup.challengers)
    lineup = dataclasses.replace(lineup, challengers=pinned_challengers)
    return {**pinned, "challengers": challengers, "lineup": lineup.to_json()}


@fail_fast
def preflight(model: dict) -> dict:
    """Task: the input matches every model's signature, a sample scores with each, the cost is estimated.

    The input's footers are checked against every signature, and a sample scored locally with each.
    The sample's outputs are combined as the job would (``scoring.model.combine.check_lineup``): an
    ensemble or an A/B split of models whose scores do not combine fails here, before any cluster.
    So does an EMR run whose estimated cost is over the param ``max_cost_usd`` (``cost_estimate``).

    Returns:
        What ``check_input`` found, with ``estimate``: the cost estimate, which the job copies into
        the manifest beside the run's actual duration.
    """
    from airflow.sdk import get_current_context

    from scoring.orchestration.preflight import check_input

    context = get_current_context()
    config = run_job_config(context, model["pinned_uri"], model)
    found = check_input(
        config.model_uri,
        config.input,
        config.date,
        config.partition_column,
        (*config.id_columns, *config.keep_columns),
        scores=config.scores,
        lineup=config.lineup,
    )
    log.info(
        "pre-flight: %s rows in %s files; the model's output: %s%s",
        found["rows"],
        found["files"],
        found["output"],
        "".join(f"; challenger {name}'s: {shape}" for name, shape in found.get("challengers", {}).items()),
    )
    with catalog_configured(context["params"]):
        estimate = cost_estimate(context["params"], config, found)
    return {**found, "estimate": estimate}


def cost_estimate(params: Mapping[str, Any], config: JobConfig, found: Mapping[str, Any]) -> dict:
    """The run's cost estimate for its compute, logged in one line; fails when over ``max_cost_usd``.

    On EMR it prices the flavour's cluster with ``emr_core_nodes`` core nodes; on the GPU flavour it
    also warns when no model of the run can use a GPU (a tree ensemble, a pyfunc model), with what
    the CPU flavour would cost. A local run gets its duration on the local master's cores and no price:
    ``max_cost_usd`` limits EMR runs only. The throughput comes from the run's earlier dates, in its
    output directory or its table (``cost.earlier_manifests``; the caller configures an EMR run's
    catalog: ``catalog_configured``).

    Args:
        params: The DAG run's params.
        config: The job's configuration (its output, date and pinned lineup).
        found: What ``check_input`` found: the input's ``rows`` and each model's ``kinds``.

    Raises:
        BudgetExceeded: An EMR run's estimate is over ``max_cost_usd``.
    """
    from scoring.dataset.destination import destination_of
    from scoring.orchestration import cost

    rate, source = cost.throughput(
        cost.earlier_manifests(destination_of(config), config.partition_column, config.date)
    )
    budget = params.get("max_cost_usd")
    if params["compute"] != "emr":
        estimate = cost.estimate_local(found["rows"], rate, source, cost.local_cores(params["local_master"]))
        log.info("%s", cost.summary(estimate))
        if budget is not None:
            log.info(
                "param max_cost_usd (%s) limits EMR runs only: this %s run pays for no cluster",
                budget,
                params["compute"],
            )
        return estimate
    prices = cost.load_prices()

    def on(flavour: str) -> dict:
        request = cost.job_flow(flavour, params["emr_core_nodes"])
        return cost.estimate_emr(found["rows"], rate, source, request, prices, flavour)

    estimate = on(params["emr_flavour"])
    log.info("%s", cost.summary(estimate))
    if params["emr_flavour"] == "gpu":
        uris = {name: config.lineup.uri(name, config.model_uri) for name in config.lineup.names}
        warning = cost.gpu_warning(found.get("kinds", {}), uris, estimate, on("cpu"))
        if warning:
            log.warning("%s", warning)
    cost.check_budget(estimate, None if budget is None else float(budget))
    return estimate


@fail_fast
def choose_compute() -> str:
    """Branch: the task id that starts the chosen compute."""
    from airflow.sdk import get_current_context

    compute = get_current_context()["params"]["compute"]
    if compute not in COMPUTES:
        raise ScoringError(f"param compute must be one of {', '.join(COMPUTES)}, not {compute!r}")
    return "run_local" if compute == "local" else "stage_artifacts"


@fail_fast
def run_local(model: dict, checked: dict | None = None) -> None:
    """Task: the very same job through spark-submit on this worker, on ``local[*]``.

    ``checked`` is the pre-flight's XCom: its cost estimate goes to the job, and so to the manifest.
    """
    from airflow.sdk import get_current_context

    from scoring.batch.session import prepare_environment

    context = get_current_context()
    params = context["params"]
    config = run_job_config(context, model["pinned_uri"], model, checked)
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
    """Task: upload the wheel, the job, the bootstrap script and the pinned models under a per-run path.

    Returns:
        The staged URIs (``scoring.orchestration.artifacts.stage_artifacts``), with ``lineup``: the
        pinned lineup with each challenger's reference replaced by its staged copy.
    """
    from airflow.sdk import get_current_context

    from scoring.orchestration.artifacts import stage_artifacts

    context = get_current_context()
    lineup = pinned_lineup(model)
    artifacts = stage_artifacts(
        context["params"]["artifacts_uri"], run_key(context), model["pinned_uri"], dict(lineup.challengers)
    )
    staged = artifacts.get("challengers", {})
    lineup = dataclasses.replace(lineup, challengers=tuple((n, staged[n]) for n, _ in lineup.challengers))
    return {**artifacts, "lineup": lineup.to_json()}


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
def add_step(cluster_id: str, artifacts: dict, checked: dict | None = None) -> str:
    """Task: find this run's scoring step on the cluster, or add it; it scores the staged models.

    The step's ``--model-uri`` and ``--challenger NAME=URI`` are the models' staged copies, so the
    cluster needs no registry access; each copy's provenance record gives the manifest the registry's
    name, version and run id. ``checked`` is the pre-flight's XCom: its cost estimate goes to the job.
    With ``table`` set the step carries ``--table`` and ``--catalog``, and the variables that make
    that catalog Glue (``catalog_environment``).
    """
    from airflow.sdk import get_current_context

    context = get_current_context()
    params = context["params"]
    config = run_job_config(context, artifacts["model"], artifacts, checked)
    step = emr.scoring_step(run_key(context), artifacts["job"], config, catalog_environment(params))
    return emr.find_or_add_step(emr_client(params), cluster_id, step)


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
    """Task: check the published partition and write its report; fail the run when it is not valid.

    The partition is the date in the output directory, or the table's current version of the date
    (``destination``; an EMR run's table read through its Glue catalog).
    """
    from airflow.sdk import get_current_context

    from scoring.dataset.report import write_report_or_warn
    from scoring.dataset.validate import validate_partition

    context = get_current_context()
    params = context["params"]
    date = partition_date(context)
    where = destination(params)
    with catalog_configured(params):
        report = validate_partition(where, date, params["partition_column"], float(params["psi_threshold"]))
        log.info("%s", report.summary())
        # The job wrote the report already; this one carries the DAG's drift threshold, and is written
        # before a failed validation is raised, since that is when somebody opens it.
        write_report_or_warn(where, date, params["partition_column"], validation=report)
    if not report.ok:
        raise ScoringError(f"output partition is not valid:\n{report.summary()}")
    return report.to_json()


@fail_fast
def maintain_table() -> list[str]:
    """Task: after the day validated, expire the table's old snapshots and remove unreferenced files.

    Runs ``scoring.dataset.table.maintain`` on the scores and the rejects tables with the horizon
    ``maintain_older_than_days`` (as ``scoring maintain --older-than``): the current version of every
    date, and every file a kept snapshot references, stay. Skipped without that param or ``table``.

    Returns:
        One line per table: what was expired and removed.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    context = get_current_context()
    params = context["params"]
    days = params["maintain_older_than_days"]
    where = destination(params)
    if days is None or where.table is None:
        why = "the output is a directory" if where.table is None else "no maintain_older_than_days"
        raise AirflowSkipException(f"no table maintenance: {why}")

    from scoring.dataset.table import maintain, open_tables

    with catalog_configured(params):
        _, scores, rejects = open_tables(where.catalog, where.table)
        horizon = dt.timedelta(days=float(days))
        lines = [maintain(table, horizon).line() for table in (scores, rejects) if table is not None]
    for line in lines:
        log.info("%s", line)
    return lines


def emr_client(params: dict) -> Any:
    """The EMR client of the DAG's AWS connection."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    return EmrHook(aws_conn_id=params["aws_conn_id"]).conn


def s3_client(params: dict) -> Any:
    """The S3 client of the DAG's AWS connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=params["aws_conn_id"]).get_conn()
