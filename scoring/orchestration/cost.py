"""What a run will cost, estimated before its cluster is paid for; no Spark.

rows (the input's footers) / (rows per core-second x cores) -> the job's seconds; the cluster is paid
for that long plus its start-up, on every node of every instance group, at the on-demand prices of
``emr/prices.json`` (EC2 plus the EMR uplift). The rows per core-second are the median of the latest
published partitions of the same output (their manifests: input rows / duration / ``resources.cores``),
or ``DEFAULT_ROWS_PER_CORE_SECOND`` when none has the figures. The cores are the Spark task slots the
flavour gives (``task_slots``), which is what ``resources.cores`` (Spark's default parallelism) counts.

The estimate is a plain mapping (an XCom, the job's ``--cost-estimate``, the manifest's
``cost.estimate``) with at least ``job_seconds``, ``startup_seconds``, ``usd_per_hour`` and ``usd``;
a local run pays for no cluster, so its ``usd_per_hour`` and ``usd`` are None.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path

from scoring.dataset.destination import Destination, as_destination
from scoring.dataset.manifest import MANIFEST_FILE, Manifest
from scoring.dataset.storage import read_json
from scoring.errors import ScoringError
from scoring.model.kinds import ModelKind
from scoring.orchestration import emr

log = logging.getLogger(__name__)

# Rows per core-second when no earlier run of the output says better: the job (``ours_onnx``) on the
# 10,000,000-row benchmark, start-up included, on ``local[2]``: 89,657 rows/s in the slowest run so far,
# 92,445 in BENCHMARKS.md's Results (2026-12-03): about 44,800 per core, rounded down. A 100-tree GBT
# over 20 features; heavier models are slower.
DEFAULT_ROWS_PER_CORE_SECOND = 44_000.0
# How many of the latest published partitions the throughput is the median of.
EARLIER_RUNS = 5
PRICES_FILE = "prices.json"


class BudgetExceeded(ScoringError):
    """The run's estimated cost is over the ``max_cost_usd`` it was given."""


def load_prices(directory: Path | None = None) -> dict:
    """The price table, ``emr/prices.json`` (or ``SCORING_EMR_CONFIG_DIR``'s)."""
    path = (directory or emr.config_dir()) / PRICES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ScoringError(f"price table {path}: cannot read it: {e}") from e


def earlier_manifests(
    output: str | Destination, partition_column: str, date: dt.date, limit: int = EARLIER_RUNS
) -> list[Manifest]:
    """The manifests of the latest ``limit`` published partitions of ``output`` before ``date``, latest first.

    ``output`` is a directory root or the destination (a directory or an Iceberg table). A partition
    without a manifest, or with one that does not read as one, is passed over (the estimate only
    loses a figure); an output that does not exist yet (a directory, or a table its first run
    creates) has none. A catalog that cannot be opened fails here, before any cluster.
    """
    destination = as_destination(output, partition_column)
    found: list[Manifest] = []
    for day in destination.days_before(date):
        data = read_json(f"{day.uri}/{MANIFEST_FILE}")
        try:
            manifest = None if data is None else Manifest.from_json(data)
        except (KeyError, TypeError, ValueError) as e:
            log.warning("%s: its %s does not read as a manifest (%s); passed over", day.uri, MANIFEST_FILE, e)
            continue
        if manifest is not None:
            found.append(manifest)
        if len(found) == limit:
            break
    return found


def run_rows_per_core_second(manifest: Manifest) -> float | None:
    """An earlier run's throughput per core, or None when its manifest lacks the figures (older ones)."""
    cores, rows, seconds = manifest.resources.cores, manifest.counts.input, manifest.duration_seconds
    if not cores or not rows or seconds <= 0:
        return None
    return rows / seconds / cores


def throughput(manifests: Iterable[Manifest]) -> tuple[float, str]:
    """Rows per core-second: the median of the runs that have the figures, else the default.

    Returns:
        The figure, and where it comes from (``"3 earlier runs"`` or ``"default"``), for the log.
    """
    figures = [f for f in map(run_rows_per_core_second, manifests) if f is not None]
    if not figures:
        return DEFAULT_ROWS_PER_CORE_SECOND, "default"
    return statistics.median(figures), f"{len(figures)} earlier run{'s' * (len(figures) != 1)}"


def task_slots(instance: Mapping, spark_defaults: Mapping[str, str]) -> int:
    """The Spark tasks one node runs at once: its vCPUs over ``spark.task.cpus``, fewer where GPUs bind.

    With GPU scheduling (``spark.executor.resource.gpu.amount``) a node runs as many executors as it
    has GPUs for, each of ``spark.executor.cores`` cores and as many tasks as its GPU share allows
    (``spark.task.resource.gpu.amount``): emr/gpu.json's g5.2xlarge has 8 vCPUs but 1 GPU, so 1
    executor of 4 tasks.
    """
    task_cpus = int(spark_defaults.get("spark.task.cpus", "1"))
    slots = int(instance["vcpus"]) // task_cpus
    gpus_per_executor = float(spark_defaults.get("spark.executor.resource.gpu.amount", "0"))
    if gpus_per_executor > 0:
        executors = int(instance.get("gpus", 0) // gpus_per_executor)
        per_executor = int(spark_defaults.get("spark.executor.cores", instance["vcpus"])) // task_cpus
        gpus_per_task = float(spark_defaults.get("spark.task.resource.gpu.amount", "0"))
        if gpus_per_task > 0:
            per_executor = min(per_executor, int(gpus_per_executor / gpus_per_task))
        slots = min(slots, executors * per_executor)
    return slots


def job_flow(flavour: str, core_nodes: int | None) -> dict:
    """The flavour's cluster as ``create_cluster`` will request it (the same JSON, the same core count)."""
    return emr.job_flow_config(
        flavour, key="estimate", log_uri="", bootstrap_uri="", wheel_uri="", core_instance_count=core_nodes
    )


def spark_defaults(request: Mapping) -> dict[str, str]:
    """The ``spark-defaults`` properties of a job-flow request."""
    for configuration in request.get("Configurations", []):
        if configuration.get("Classification") == "spark-defaults":
            return dict(configuration.get("Properties", {}))
    return {}


def estimate_emr(
    rows: int,
    rows_per_core_second: float,
    throughput_from: str,
    request: Mapping,
    prices: Mapping,
    flavour: str,
) -> dict:
    """The estimate of a run on an EMR cluster.

    Args:
        rows: The input partition's rows (its footers).
        rows_per_core_second: The throughput per core (``throughput``).
        throughput_from: Where that figure comes from.
        request: The cluster's ``run_job_flow`` request (``job_flow``).
        prices: The price table (``load_prices``).
        flavour: The flavour's name, for the record.

    Raises:
        ScoringError: The price table has no price for one of the cluster's instance types.
    """
    table = prices["instance_types"]
    groups = []
    for group in request["Instances"]["InstanceGroups"]:
        kind = group["InstanceType"]
        if kind not in table:
            raise ScoringError(
                f"price table {PRICES_FILE} has no instance type {kind} (the {flavour} flavour's "
                f"{group['InstanceRole']} group): add its prices"
            )
        price = table[kind]
        groups.append(
            {
                "role": group["InstanceRole"],
                "instance_type": kind,
                "count": int(group["InstanceCount"]),
                "ec2_usd_per_hour": price["ec2_usd_per_hour"],
                "emr_usd_per_hour": price["emr_usd_per_hour"],
                "usd_per_node_hour": price["ec2_usd_per_hour"] + price["emr_usd_per_hour"],
            }
        )
    defaults = spark_defaults(request)
    cores = sum(
        task_slots(table[g["instance_type"]], defaults) * g["count"] for g in groups if g["role"] == "CORE"
    )
    return _estimate(
        rows,
        rows_per_core_second,
        throughput_from,
        cores,
        compute="emr",
        flavour=flavour,
        startup_seconds=float(prices.get("startup_seconds", 0)),
        groups=groups,
        price_table={k: prices.get(k) for k in ("as_of", "region", "market", "currency")},
    )


def estimate_local(rows: int, rows_per_core_second: float, throughput_from: str, cores: int) -> dict:
    """The estimate of a run on the Airflow worker (``local[N]``): its duration; no cluster is paid for."""
    return _estimate(rows, rows_per_core_second, throughput_from, cores, compute="local")


def _estimate(
    rows: int,
    rows_per_core_second: float,
    throughput_from: str,
    cores: int,
    *,
    compute: str,
    flavour: str | None = None,
    startup_seconds: float = 0.0,
    groups: list[dict] | None = None,
    price_table: dict | None = None,
) -> dict:
    """The estimate's mapping: the job's seconds on ``cores``, and with instance groups, their price."""
    job_seconds = rows / (rows_per_core_second * cores)
    hours = (job_seconds + startup_seconds) / 3600
    usd_per_hour = sum(g["usd_per_node_hour"] * g["count"] for g in groups) if groups else None
    return {
        "compute": compute,
        "flavour": flavour,
        "rows": rows,
        "rows_per_core_second": rows_per_core_second,
        "throughput_from": throughput_from,
        "cores": cores,
        "job_seconds": job_seconds,
        "core_hours": cores * job_seconds / 3600,
        "startup_seconds": startup_seconds,
        "node_hours": sum(g["count"] for g in groups) * hours if groups else None,
        "groups": groups or [],
        "usd_per_hour": usd_per_hour,
        "usd": None if usd_per_hour is None else usd_per_hour * hours,
        "price_table": price_table,
    }


def local_cores(master: str) -> int:
    """The cores a local master scores with: ``local`` 1, ``local[N]`` or ``local[N,F]`` N, ``local[*]`` all.

    Another master (a standalone cluster) counts as this machine's cores: a guess, not a measure.
    """
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if match and match[1] is None:
        return 1
    if match and match[1] != "*":
        return max(int(match[1]), 1)
    return os.cpu_count() or 1


def summary(estimate: Mapping) -> str:
    """The estimate in one line, for the log."""
    head = (
        f"cost estimate: {estimate['rows']:,} rows at {estimate['rows_per_core_second']:,.0f} rows/core-s "
        f"({estimate['throughput_from']}) on {estimate['cores']} cores -> {estimate['job_seconds']:,.0f} s "
        f"of scoring ({estimate['core_hours']:.3f} core-hours)"
    )
    if estimate.get("usd") is None:
        return f"{head}; {estimate['compute']}: no cluster is paid for"
    groups = " + ".join(
        f"{g['count']} x {g['instance_type']} ${g['usd_per_node_hour']:.3f}/h" for g in estimate["groups"]
    )
    prices = estimate["price_table"] or {}
    return (
        f"{head}; {estimate['flavour']} cluster {groups} = ${estimate['usd_per_hour']:.3f}/h for "
        f"{estimate['startup_seconds']:,.0f} s start-up + the job = {estimate['node_hours']:.2f} node-hours "
        f"-> ${estimate['usd']:.2f} (on-demand, {prices.get('region')}, prices as of {prices.get('as_of')})"
    )


def check_budget(estimate: Mapping, max_cost_usd: float | None) -> None:
    """Fail when the estimate is over the budget; a run with no price (local) or no budget passes.

    Raises:
        BudgetExceeded: ``estimate["usd"]`` exceeds ``max_cost_usd``.
    """
    if max_cost_usd is None or estimate.get("usd") is None:
        return
    if estimate["usd"] > max_cost_usd:
        raise BudgetExceeded(
            f"the {estimate.get('flavour')} cluster's estimated cost ${estimate['usd']:.2f} exceeds "
            f"the param max_cost_usd (${max_cost_usd:.2f}); no cluster was created"
        )


def gpu_warning(
    kinds: Mapping[str, Mapping], uris: Mapping[str, str], gpu: Mapping, cpu: Mapping | None
) -> str | None:
    """Why the GPU flavour cannot pay off for these models, or None when one of them can use a GPU.

    Args:
        kinds: Each model's kind (``ModelKind.to_json``), by name in the run's lineup.
        uris: Each model's pinned reference, by the same names.
        gpu: The GPU flavour's estimate.
        cpu: The CPU flavour's estimate of the same run, for the comparison; None when unknown.
    """
    reasons = [ModelKind.from_json(kinds[name]).cpu_only_reason(uris.get(name, name)) for name in kinds]
    if not reasons or any(reason is None for reason in reasons):
        return None
    message = f"the gpu flavour cannot pay off: {'; '.join(reasons)}"
    if cpu is not None and cpu.get("usd") is not None:
        message += f"; the cpu flavour would cost ${cpu['usd']:.2f} instead of ${gpu['usd']:.2f}"
    return message
