"""Running the scoring job on EMR: cluster and step definitions as data, and idempotent control.

Every cluster and step carries an idempotency key (one per DAG run and date). A retried or cleared
Airflow task looks for the cluster or step of its key before starting one, so a retry never pays for a
second cluster nor scores a date twice.

A run that publishes to an Iceberg table (``--table``) finds its catalog in Glue: the step's
environment configures pyiceberg's catalog of the run for it (``glue_catalog``, ``catalog_environment``),
and the Airflow tasks that read the table apply the same configuration while they read it.

Cost-relevant choices (see ``emr/*.json``): on-demand core nodes (a spot reclaim mid-write only costs
a retried task, so spot is a reasonable edit), one step at a time, ``KeepJobFlowAliveWhenNoSteps`` so
that the DAG's teardown owns the cluster's life, and an idle auto-termination timeout as the second
safety net when the teardown itself cannot run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from scoring import PROJECT_ROOT
from scoring.config import JobConfig
from scoring.errors import ScoringError

log = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "scoring:idempotency-key"
DAG_TAG = "dag_id"
RUN_TAG = "run_id"
FLAVOURS = ("cpu", "gpu")
ALIVE_CLUSTER_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
REUSABLE_STEP_STATES = ("PENDING", "RUNNING", "COMPLETED")
FAILED_STEP_STATES = ("CANCEL_PENDING", "CANCELLED", "FAILED", "INTERRUPTED")
# pyiceberg's name of the catalog used when none is named; the DAG names it explicitly on EMR, so that
# the job on the cluster and the tasks reading the table on the Airflow worker mean the same catalog.
DEFAULT_CATALOG = "default"
# The Glue catalog's warehouse (where tables created by a run get their location) when none is given:
# this folder of the output's bucket.
WAREHOUSE_FOLDER = "iceberg"
# A catalog name pyiceberg's environment variables can carry: they read ``_`` as ``-``, and a shell
# exports no name with ``-`` (YARN sets executors' variables with ``export``).
_CATALOG_NAME = re.compile(r"[A-Za-z0-9]+")


class StepFailed(ScoringError):
    """The EMR step ended in a state other than COMPLETED."""


def config_dir() -> Path:
    """Where the job-flow JSON and the bootstrap script are: ``SCORING_EMR_CONFIG_DIR`` or ``emr/``."""
    return Path(os.environ.get("SCORING_EMR_CONFIG_DIR", PROJECT_ROOT / "emr"))


def idempotency_key(dag_id: str, run_id: str, date: str) -> str:
    """The key of one DAG run's work on one date, short and safe for EMR names and tags."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{date}".encode()).hexdigest()[:10]
    return f"{key_prefix(dag_id)}{date}.{digest}"


def key_prefix(dag_id: str) -> str:
    """What the idempotency keys of every run of ``dag_id`` start with."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', dag_id)[:60]}."


def job_flow_config(
    flavour: str,
    *,
    key: str,
    log_uri: str,
    bootstrap_uri: str,
    wheel_uri: str,
    idle_timeout_s: int = 3600,
    core_instance_count: int | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A fresh ``run_job_flow`` request for ``flavour``, from ``emr/<flavour>.json``.

    Args:
        flavour: ``cpu`` or ``gpu``.
        key: The idempotency key (tag and name).
        log_uri: S3 prefix for the cluster's logs (step stderr is read back from there).
        bootstrap_uri: S3 URI of ``bootstrap.sh``.
        wheel_uri: S3 URI of the scoring wheel the bootstrap installs.
        idle_timeout_s: Auto-termination after this long idle: the safety net behind the teardown.
        core_instance_count: Core nodes, overriding the JSON's.
        tags: More tags (team, cost centre).
    """
    if flavour not in FLAVOURS:
        raise ScoringError(f"unknown EMR flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
    config = json.loads((config_dir() / f"{flavour}.json").read_text())
    if core_instance_count is not None:
        for group in config["Instances"]["InstanceGroups"]:
            if group["InstanceRole"] == "CORE":
                group["InstanceCount"] = core_instance_count
    all_tags = {"application": "scoring", "flavour": flavour, **(tags or {}), IDEMPOTENCY_TAG: key}
    return {
        **config,
        "Name": cluster_name(key),
        "LogUri": log_uri,
        "BootstrapActions": [
            {
                "Name": "install scoring",
                "ScriptBootstrapAction": {"Path": bootstrap_uri, "Args": [wheel_uri, flavour]},
            }
        ],
        "AutoTerminationPolicy": {"IdleTimeout": idle_timeout_s},
        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
    }


def glue_catalog(warehouse: str, region: str | None = None) -> dict[str, str]:
    """The pyiceberg properties of the Glue catalog that holds an EMR run's table.

    Credentials are left to boto3's default chain (the nodes' instance profile: EMR's EC2 role needs
    Glue's table and database actions, and S3 access to the warehouse). S3's region is left out:
    pyiceberg asks the bucket for it.

    Args:
        warehouse: Where a table the run creates gets its location (``s3://BUCKET/PREFIX``), when its
            Glue database gives none.
        region: Glue's region: the cluster's. None: boto3's default.
    """
    return {"type": "glue", "warehouse": warehouse, **({"glue.region": region} if region else {})}


def default_warehouse(output: str) -> str:
    """The Glue warehouse of a run that names none: ``WAREHOUSE_FOLDER`` in ``output``'s bucket.

    Raises:
        ScoringError: ``output`` is not an ``s3://`` URI (nowhere on S3 to put the warehouse).
    """
    parsed = urlparse(output)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise ScoringError(
            f"output {output!r} is not on S3: give the Glue catalog's warehouse (s3://BUCKET/PREFIX)"
        )
    return f"s3://{parsed.netloc}/{WAREHOUSE_FOLDER}"


def catalog_environment(name: str, properties: Mapping[str, str]) -> dict[str, str]:
    """The ``PYICEBERG_CATALOG__<NAME>__<KEY>`` variables that configure catalog ``name`` with ``properties``.

    pyiceberg reads ``__`` in a key's variable as ``.`` and ``_`` as ``-``: ``glue.region`` is
    ``..._GLUE__REGION`` and ``s3.access-key-id`` is ``..._S3__ACCESS_KEY_ID``.

    Raises:
        ScoringError: The name is not letters and digits, or a key holds ``_`` (neither survives the
            variables' spelling).
    """
    if not _CATALOG_NAME.fullmatch(name):
        raise ScoringError(
            f"catalog {name!r}: an EMR run's catalog is configured by environment variables, so its "
            "name must be letters and digits only"
        )
    environment = {}
    for key, value in properties.items():
        if "_" in key:
            raise ScoringError(f"catalog {name!r}: property {key!r} cannot be set by pyiceberg's variables")
        spelled = key.replace(".", "__").replace("-", "_").upper()
        environment[f"PYICEBERG_CATALOG__{name.upper()}__{spelled}"] = str(value)
    return environment


def step_name(key: str) -> str:
    """The scoring step's name for a run's key."""
    return f"score {key}"


def scoring_step(
    key: str, job_uri: str, config: JobConfig, environment: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``command-runner.jar`` spark-submit step, with the job's usual flags.

    Client deploy mode: the driver runs on the primary node, so the step's stderr holds the job's
    own one-line error when it fails. ``ActionOnFailure=CONTINUE``: the DAG's teardown, not the step,
    ends the cluster, so that a failed step's logs can still be read back first.

    Args:
        key: The run's idempotency key (the step's name).
        job_uri: The staged ``jobs/score.py``.
        config: The job's configuration: its flags.
        environment: Variables the job sees (a table's catalog: ``catalog_environment``). The driver
            gets them through ``env`` before ``spark-submit`` (in client mode it is spark-submit's
            own child; ``spark.yarn.appMasterEnv.*`` would not reach it), the executors through
            ``spark.executorEnv.*``.
    """
    variables = sorted((environment or {}).items())
    launcher = ["env", *(f"{name}={value}" for name, value in variables)] if variables else []
    executors = [arg for name, value in variables for arg in ("--conf", f"spark.executorEnv.{name}={value}")]
    submit = ["spark-submit", "--deploy-mode", "client", *executors, job_uri, *config.to_cli_args()]
    return {
        "Name": step_name(key),
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [*launcher, *submit]},
    }


@dataclasses.dataclass(frozen=True)
class LiveCluster:
    """A cluster in a live state (it is paid for), with its tags."""

    id: str
    state: str
    created: dt.datetime
    tags: dict[str, str]

    @property
    def key(self) -> str | None:
        """The idempotency key of the run that created it."""
        return self.tags.get(IDEMPOTENCY_TAG)


def cluster_name(key: str) -> str:
    """The cluster name of a run's key (names filter ``ListClusters`` before its tags are read)."""
    return f"scoring {key}"


def live_clusters(emr: Any, name_prefix: str) -> list[LiveCluster]:
    """The live clusters whose name starts with ``name_prefix``, oldest first."""
    found = [
        LiveCluster(
            id=summary["Id"],
            state=summary["Status"]["State"],
            created=summary["Status"]["Timeline"]["CreationDateTime"],
            tags={
                t["Key"]: t["Value"]
                for t in emr.describe_cluster(ClusterId=summary["Id"])["Cluster"].get("Tags", [])
            },
        )
        for summary in _paginate(emr, "list_clusters", "Clusters", ClusterStates=ALIVE_CLUSTER_STATES)
        if summary["Name"].startswith(name_prefix)
    ]
    return sorted(found, key=lambda c: (c.created, c.id))


def run_clusters(emr: Any, key: str) -> list[LiveCluster]:
    """The live clusters carrying the run's idempotency tag, oldest first (more than one is a duplicate)."""
    return [c for c in live_clusters(emr, cluster_name(key)) if c.key == key]


def find_or_create_cluster(emr: Any, key: str, request: dict[str, Any]) -> str:
    """The id of the live cluster tagged with ``key``, or of a new one created from ``request``.

    EMR's ``RunJobFlow`` takes no idempotency token: when its answer is lost (a 5xx after the cluster
    was created), botocore sends it again and EMR creates a second cluster. So the run's clusters are
    listed again right after creating, and all but one are ended (``keep_one``).
    """
    found = run_clusters(emr, key)
    if not found:
        created = emr.run_job_flow(**request)["JobFlowId"]
        log.info("created cluster %s for %s", created, key)
        found = run_clusters(emr, key)
        if created not in {c.id for c in found}:  # not listed yet: it is still this run's cluster
            return created
    elif len(found) == 1:
        log.info("reusing cluster %s for %s", found[0].id, key)
    return keep_one(emr, key, found)


def keep_one(emr: Any, key: str, clusters: list[LiveCluster]) -> str:
    """Keep one of the run's live clusters and end the others; the id kept.

    The one kept is the oldest that holds this run's scoring step (a retry reuses that step), else
    the oldest.
    """
    if len(clusters) == 1:
        return clusters[0].id
    with_step = [c for c in clusters if _has_step(emr, c.id, step_name(key))]
    keeper = (with_step or clusters)[0]
    why = "it holds this run's step" if with_step else "the oldest"
    log.warning("%d live clusters carry %s: keeping %s (%s)", len(clusters), key, keeper.id, why)
    for cluster in clusters:
        if cluster.id != keeper.id:
            end_cluster(emr, cluster.id, f"duplicate of {keeper.id}")
    return keeper.id


def stale_clusters(
    emr: Any, dag_id: str, key: str, run_is_active: Callable[[str], bool]
) -> list[LiveCluster]:
    """Live clusters of earlier runs of ``dag_id`` whose run is over: their teardown never ran.

    Args:
        emr: The EMR client.
        dag_id: The DAG whose clusters to look at (its ``dag_id`` tag).
        key: This run's idempotency key: its own clusters are not stale.
        run_is_active: Whether the DAG run of a ``run_id`` is still queued or running; a cluster
            without a ``run_id`` tag counts as of a run that is over.
    """
    return [
        cluster
        for cluster in live_clusters(emr, cluster_name(key_prefix(dag_id)))
        if cluster.tags.get(DAG_TAG) == dag_id
        and cluster.key != key
        and not (RUN_TAG in cluster.tags and run_is_active(cluster.tags[RUN_TAG]))
    ]


def end_run_clusters(emr: Any, key: str, cluster_id: str | None) -> list[str]:
    """End the run's cluster and every other live cluster carrying its tag; the ids ended.

    Args:
        emr: The EMR client.
        key: The run's idempotency key.
        cluster_id: The id ``create_cluster`` returned, or None when it returned none (it failed
            or was killed after ``RunJobFlow``): then any cluster with the tag is an orphan.
    """
    ended = []
    if cluster_id is not None:
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        if state in ALIVE_CLUSTER_STATES:
            end_cluster(emr, cluster_id, "this run's cluster", logging.INFO)
            ended.append(cluster_id)
        else:
            log.info("cluster %s of %s is already %s", cluster_id, key, state)
    for cluster in run_clusters(emr, key):
        if cluster.id != cluster_id:
            why = f"duplicate of {cluster_id}" if cluster_id else "orphan of a failed create"
            end_cluster(emr, cluster.id, why)
            ended.append(cluster.id)
    if not ended:
        log.info("no live cluster carries %s", key)
    return ended


def find_or_add_step(emr: Any, cluster_id: str, step: dict[str, Any]) -> str:
    """The id of the cluster's pending, running or completed step named like ``step``, else a new one.

    A failed or cancelled step is not reused: retrying the task means running the step again.
    """
    for summary in _paginate(emr, "list_steps", "Steps", ClusterId=cluster_id):
        if summary["Name"] == step["Name"] and summary["Status"]["State"] in REUSABLE_STEP_STATES:
            log.info("reusing step %s (%s)", summary["Id"], summary["Status"]["State"])
            return summary["Id"]
    step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    log.info("added step %s to cluster %s", step_id, cluster_id)
    return step_id


def wait_for_step(
    emr: Any, s3: Any, cluster_id: str, step_id: str, poll_s: float = 30.0, timeout_s: float = 6 * 3600
) -> None:
    """Wait until the step completes.

    Raises:
        StepFailed: The step failed, was cancelled or interrupted (with its reason and the tail of
            its stderr), or did not finish within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]
        if state == "COMPLETED":
            return
        if state in FAILED_STEP_STATES:
            raise StepFailed(step_failure(emr, s3, cluster_id, step_id))
        if time.monotonic() > deadline:
            raise StepFailed(f"step {step_id} on {cluster_id} still {state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def step_failure(emr: Any, s3: Any, cluster_id: str, step_id: str, tail_lines: int = 30) -> str:
    """Why a step failed: its state, EMR's failure details and the tail of its stderr on S3."""
    status = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
    details = status.get("FailureDetails") or {}
    reason = "; ".join(filter(None, [details.get("Reason"), details.get("Message")])) or "no reason given"
    lines = [f"step {step_id} on {cluster_id} {status['State']}: {reason}"]
    tail = step_stderr_tail(emr, s3, cluster_id, step_id, tail_lines)
    lines += (
        [f"last lines of the step's stderr:\n{tail}"] if tail else ["(no step stderr in the log URI yet)"]
    )
    return "\n".join(lines)


def step_stderr_tail(emr: Any, s3: Any, cluster_id: str, step_id: str, lines: int = 30) -> str | None:
    """The last ``lines`` of ``LOG_URI/CLUSTER/steps/STEP/stderr.gz``, where EMR pushes step logs."""
    log_uri = emr.describe_cluster(ClusterId=cluster_id)["Cluster"].get("LogUri")
    if not log_uri:
        return None
    bucket, _, prefix = log_uri.replace("s3n://", "s3://").removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{cluster_id}/steps/{step_id}/stderr.gz".lstrip("/")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    text = gzip.decompress(body).decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def cancel_step(emr: Any, cluster_id: str, step_id: str) -> None:
    """Ask EMR to cancel a pending or running step (the task that waited for it was killed)."""
    emr.cancel_steps(ClusterId=cluster_id, StepIds=[step_id], StepCancellationOption="TERMINATE_PROCESS")
    log.info("cancelled step %s on %s", step_id, cluster_id)


def end_cluster(emr: Any, cluster_id: str, why: str, level: int = logging.WARNING) -> None:
    """Terminate the cluster, saying why in the log (terminating a terminated cluster is a no-op)."""
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    log.log(level, "terminating cluster %s: %s", cluster_id, why)


def _has_step(emr: Any, cluster_id: str, name: str) -> bool:
    steps = _paginate(emr, "list_steps", "Steps", ClusterId=cluster_id, StepStates=list(REUSABLE_STEP_STATES))
    return any(step["Name"] == name for step in steps)


def _paginate(client: Any, operation: str, field: str, **kwargs: Any) -> list[dict]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page[field]]
