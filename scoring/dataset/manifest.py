"""The ``_manifest.json`` written beside each partition: what model scored what, and when."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scoring import __version__
from scoring.config import JobConfig
from scoring.dataset import quantiles
from scoring.model.output import OutputSpec
from scoring.model.resolve import ResolvedModel

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ScoredModel:
    """A model that scored the partition beside the champion: its name in the run, pin and output."""

    name: str
    model: ResolvedModel
    backend: str
    output: OutputSpec


def build_manifest(
    *,
    config: JobConfig,
    model: ResolvedModel,
    backend: str,
    output: OutputSpec,
    run_id: str,
    output_path: str,
    rejects_path: str,
    input_rows: int,
    input_files: int,
    skipped_files: list[str],
    files: list[tuple[str, int]],
    reject_files: list[tuple[str, int]],
    reject_reasons: dict[str, int],
    columns: list[tuple[str, str]],
    started_at: dt.datetime,
    finished_at: dt.datetime,
    spark_version: str | None,
    cores: int | None = None,
    engine: str | None = None,
    executor: str | None = None,
    challengers: Sequence[ScoredModel] = (),
    agreement: Mapping[str, dict] | None = None,
    variant_rows: Mapping[str, int] | None = None,
) -> dict:
    """The manifest of one published partition.

    Args:
        config: The job's arguments.
        model: The pinned model.
        backend: The backend that scored (``pyfunc`` or ``onnx``).
        output: The model's output: its columns, how each was computed, the classes.
        run_id: The run's unique id.
        output_path: Where the scores are: the output's root, or a table run's directory.
        rejects_path: Where the rejects are likewise.
        input_rows: Rows read from the input partition.
        input_files: Input files that held rows.
        skipped_files: Unreadable input files that were skipped.
        files: The partition's parquet files (relative names) and their row counts.
        reject_files: The rejects' parquet files and their row counts.
        reject_reasons: Rejected rows per reason.
        columns: The output's columns and Spark SQL types.
        started_at: When the run started (UTC).
        finished_at: When the data was written (UTC).
        spark_version: Version of Spark that ran the job; None when no Spark ran (``executor``
            ``local``).
        cores: The cores the pass scored with (Spark's default parallelism, or the local workers):
            with the duration, the throughput per core that later runs' cost estimates start from.
        engine: How the scoring pass read the input: ``arrow`` (Python tasks read the files) or
            ``spark`` (Spark's scan and UDF).
        executor: What ran the pass's tasks: ``local`` (worker processes of the machine, no JVM:
            ``scoring.batch.local``) or ``spark``.
        challengers: The models scored beside the champion, in the run's order.
        agreement: Each challenger's agreement with the champion (``scoring.batch.agreement``).
        variant_rows: Rows each A/B variant received, under an A/B split.
    """
    lineup = config.lineup
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run_id,
        "partition": {"column": config.partition_column, "value": config.partition_value},
        "model": _model_json(model, backend, output, config.scores),
        "challengers": [
            {
                "name": c.name,
                "model": _model_json(c.model, c.backend, c.output, config.scores),
                "agreement": (agreement or {}).get(c.name),
            }
            for c in challengers
        ],
        "ensemble": {"weights": dict(lineup.ensemble)} if lineup.ensemble else None,
        "ab": {"salt": lineup.ab_salt, "split": dict(lineup.ab), "rows": dict(variant_rows or {})}
        if lineup.ab
        else None,
        "decision_threshold": lineup.decision_threshold,
        "input": {
            "path": config.input,
            "rows": input_rows,
            "files": input_files,
            "skipped_files": skipped_files,
        },
        "counts": {
            "input": input_rows,
            "scored": sum(rows for _, rows in files),
            "rejected": sum(rows for _, rows in reject_files),
        },
        "rejects": {
            "path": rejects_path,
            "rows": sum(rows for _, rows in reject_files),
            "by_reason": dict(sorted(reject_reasons.items())),
            "files": [{"name": name, "rows": rows} for name, rows in reject_files],
        },
        "output": {
            "path": output_path,
            "table": config.table,
            "rows": sum(rows for _, rows in files),
            "files": [{"name": name, "rows": rows} for name, rows in files],
            "columns": [{"name": name, "type": dtype} for name, dtype in columns],
        },
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "resources": {"cores": cores, "engine": engine, "executor": executor},
        # How the validator and the report compute this partition's drift (``scoring.dataset.quantiles``).
        "drift": {
            "psi_bins": f"deciles of the earlier partition, {quantiles.METHOD}",
            "rank_error": quantiles.RANK_ERROR,
        },
        "cost": _cost_json(config.cost_estimate, (finished_at - started_at).total_seconds()),
        "arguments": config.to_json(),
        "package_version": __version__,
        "spark_version": spark_version,
    }


def _model_json(model: ResolvedModel, backend: str, output: OutputSpec, requested: str) -> dict:
    return {
        "uri": model.uri,
        "pinned_uri": model.pinned_uri,
        "name": model.name,
        "version": model.version,
        "run_id": model.run_id,
        "backend": backend,
        "features": [{"name": f.name, "type": f.type} for f in model.features],
        "scores": {"requested": requested, **output.to_json()},
    }


def _cost_json(estimate: Mapping | None, seconds: float) -> dict | None:
    """The pre-flight's estimate beside what the run took, so that the estimate's error is visible.

    ``actual_usd`` prices the run's actual duration (plus the estimate's start-up) at the estimate's
    hourly rate: the same cluster for as long as it really scored.
    """
    if estimate is None:
        return None
    cost = {"estimate": dict(estimate), "actual_job_seconds": round(seconds, 3)}
    if estimate.get("job_seconds"):
        cost["job_seconds_ratio"] = round(seconds / estimate["job_seconds"], 4)
    if estimate.get("usd_per_hour") is not None:
        hours = (estimate.get("startup_seconds", 0) + seconds) / 3600
        cost["actual_usd"] = round(estimate["usd_per_hour"] * hours, 4)
    return cost


def duration_seconds(manifest: dict) -> float:
    """How long the run took, from its start to its data being written."""
    finished = dt.datetime.fromisoformat(manifest["finished_at"])
    return (finished - dt.datetime.fromisoformat(manifest["started_at"])).total_seconds()


def rows_per_second(manifest: dict) -> float:
    """The run's throughput: input rows (scored or rejected) per second of its duration."""
    return manifest["counts"]["input"] / max(duration_seconds(manifest), 1e-9)


def summary(manifest: dict) -> str:
    """One line about a published partition, for people."""
    rows = manifest["counts"]["input"]
    partition = manifest["partition"]
    return (
        f"scored {manifest['counts']['scored']:,} of {rows:,} rows "
        f"({manifest['counts']['rejected']:,} rejected) for {partition['column']}={partition['value']} "
        f"with {manifest['model']['pinned_uri']} ({manifest['model']['backend']}) in "
        f"{duration_seconds(manifest):.1f} s ({rows_per_second(manifest):,.0f} rows/s) "
        f"-> {_published(manifest)}"
    ) + "".join(f"\n  {line}" for line in lineup_lines(manifest))


def _published(manifest: dict) -> str:
    """Where the partition was published: the table (and its snapshot), or the partition's directory."""
    output, partition = manifest["output"], manifest["partition"]
    if output.get("table"):
        snapshot = f", snapshot {output['snapshot_id']}" if output.get("snapshot_id") else ""
        return f"table {output['table']}{snapshot}"
    return f"{output['path'].rstrip('/')}/{partition['column']}={partition['value']}"


def lineup_lines(manifest: dict) -> list[str]:
    """One line per challenger (its agreement with the champion), the ensemble and the A/B split."""
    lines = []
    for challenger in manifest.get("challengers") or []:
        figures = challenger["agreement"] or {}
        shown = ", ".join(
            f"{name} {_figure(figures.get(name))}"
            for name in ("pearson", "spearman", "mean_abs_diff", "p99_abs_diff", "flip_share")
        )
        lines.append(
            f"challenger {challenger['name']} ({challenger['model']['pinned_uri']}) against the champion "
            f"on {figures.get('rows', 0):,} rows: {shown}"
        )
    if manifest.get("ensemble"):
        weights = ", ".join(f"{n} {w:.3g}" for n, w in manifest["ensemble"]["weights"].items())
        lines.append(f"ensemble: {weights}")
    if manifest.get("ab"):
        rows = manifest["ab"]["rows"]
        total = max(sum(rows.values()), 1)
        split = ", ".join(
            f"{n} {rows.get(n, 0):,} rows ({rows.get(n, 0) / total:.1%}, split {share:.1%})"
            for n, share in manifest["ab"]["split"].items()
        )
        lines.append(f"a/b (salt {manifest['ab']['salt']}): {split}")
    return lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
