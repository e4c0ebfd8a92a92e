"""The ``_manifest.json`` written beside each partition: what model scored what, and when.

``Manifest`` is the one form every reader uses (the validator, the report, the table's snapshot
summary, the backfill's skip, the cost history): a frozen dataclass whose ``to_json`` is the file's
JSON and whose ``from_json`` reads it back, older manifests included (a key an older version lacks
takes its default; the validator says which keys a published partition must have).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scoring import __version__
from scoring.dataset import quantiles
from scoring.dataset.storage import read_json
from scoring.lineup import DECISION_THRESHOLD

if TYPE_CHECKING:  # the publishers and the Arrow pass's workers read MANIFEST_FILE: no pandas for them
    from scoring.config import JobConfig
    from scoring.model.output import OutputSpec
    from scoring.model.resolve import ResolvedModel

MANIFEST_VERSION = 1
MANIFEST_FILE = "_manifest.json"


@dataclass(frozen=True)
class Column:
    """A named column and its type: a feature's (the signature's) or the output's (Spark SQL's)."""

    name: str
    type: str

    @classmethod
    def from_json(cls, data: Mapping) -> Column:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        return cls(data["name"], data["type"])


@dataclass(frozen=True)
class DataFile:
    """A parquet file of the partition (its name relative to its directory) and its rows."""

    name: str
    rows: int

    @classmethod
    def from_json(cls, data: Mapping) -> DataFile:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        return cls(data["name"], data["rows"])


@dataclass(frozen=True)
class Partition:
    """The partition a run published: ``column=value``."""

    column: str = "date"
    value: str = ""

    def __str__(self) -> str:
        return f"{self.column}={self.value}"


@dataclass(frozen=True)
class ModelRecord:
    """A model as the manifest records it: the reference, its pin, the backend, features and scores.

    Attributes:
        scores: What was asked (``requested``) and what the model gave (``OutputSpec.to_json``).
    """

    uri: str = ""
    pinned_uri: str = ""
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    backend: str = ""
    features: tuple[Column, ...] = ()
    scores: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: ResolvedModel, backend: str, output: OutputSpec, requested: str) -> ModelRecord:
        """The record of a resolved model that scored with ``backend``."""
        features = tuple(Column(f.name, f.type) for f in model.features)
        scores = {"requested": requested, **output.to_json()}
        return cls(
            model.uri, model.pinned_uri, model.name, model.version, model.run_id, backend, features, scores
        )

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        return {
            "uri": self.uri,
            "pinned_uri": self.pinned_uri,
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "backend": self.backend,
            "features": [dataclasses.asdict(f) for f in self.features],
            "scores": dict(self.scores),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> ModelRecord:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        features = tuple(Column.from_json(f) for f in data.get("features") or ())
        return cls(
            data.get("uri", ""), data.get("pinned_uri", ""), data.get("name"), data.get("version"),
            data.get("run_id"), data.get("backend", ""), features, data.get("scores") or {},
        )  # fmt: skip


@dataclass(frozen=True)
class Challenger:
    """A model scored beside the champion, and its agreement figures (``scoring.batch.agreement``)."""

    name: str
    model: ModelRecord
    agreement: Mapping[str, Any] | None = None

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        agreement = None if self.agreement is None else dict(self.agreement)
        return {"name": self.name, "model": self.model.to_json(), "agreement": agreement}

    @classmethod
    def from_json(cls, data: Mapping) -> Challenger:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        return cls(data["name"], ModelRecord.from_json(data.get("model") or {}), data.get("agreement"))


@dataclass(frozen=True)
class ABSplit:
    """An A/B split: the experiment's salt, each variant's share, the rows each received."""

    salt: str | None
    split: Mapping[str, float]
    rows: Mapping[str, int]

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        return {"salt": self.salt, "split": dict(self.split), "rows": dict(self.rows)}

    @classmethod
    def from_json(cls, data: Mapping) -> ABSplit:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        return cls(data.get("salt"), data.get("split") or {}, data.get("rows") or {})


@dataclass(frozen=True)
class InputRecord:
    """The input partition: where, its rows and the files that held them, the files skipped."""

    path: str = ""
    rows: int = 0
    files: int = 0
    skipped_files: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        return {
            "path": self.path,
            "rows": self.rows,
            "files": self.files,
            "skipped_files": list(self.skipped_files),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> InputRecord:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        skipped = tuple(data.get("skipped_files") or ())
        return cls(data.get("path", ""), data.get("rows", 0), data.get("files", 0), skipped)


@dataclass(frozen=True)
class Counts:
    """Rows in, scored and rejected: input = scored + rejected in every published partition."""

    input: int = 0
    scored: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class RejectsRecord:
    """Where the rejected rows are, how many, per reason, and their files."""

    path: str = ""
    rows: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    files: tuple[DataFile, ...] = ()

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        files = [dataclasses.asdict(f) for f in self.files]
        return {"path": self.path, "rows": self.rows, "by_reason": dict(self.by_reason), "files": files}

    @classmethod
    def written(
        cls, path: str, files: Sequence[tuple[str, int]], by_reason: Mapping[str, int]
    ) -> RejectsRecord:
        """The rejects a run wrote under ``path``: its files (names and rows) and the rows per reason."""
        written = tuple(DataFile(name, rows) for name, rows in files)
        return cls(path, sum(f.rows for f in written), dict(sorted(by_reason.items())), written)

    @classmethod
    def from_json(cls, data: Mapping) -> RejectsRecord:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        files = tuple(DataFile.from_json(f) for f in data.get("files") or ())
        return cls(data.get("path", ""), data.get("rows", 0), data.get("by_reason") or {}, files)


@dataclass(frozen=True)
class OutputRecord:
    """Where the scores are (a directory's root, or a table run's directory), their files and columns.

    Attributes:
        table: The Iceberg table published to, if any.
        snapshot_id: The table's snapshot that published the date, once committed (never in the
            file: it is written before the commit).
    """

    path: str = ""
    table: str | None = None
    rows: int = 0
    files: tuple[DataFile, ...] = ()
    columns: tuple[Column, ...] = ()
    snapshot_id: int | None = None

    def to_json(self) -> dict:
        """Its part of the manifest's JSON."""
        found = {
            "path": self.path,
            "table": self.table,
            "rows": self.rows,
            "files": [dataclasses.asdict(f) for f in self.files],
            "columns": [dataclasses.asdict(c) for c in self.columns],
        }
        return found if self.snapshot_id is None else {**found, "snapshot_id": self.snapshot_id}

    @classmethod
    def written(
        cls,
        path: str,
        table: str | None,
        files: Sequence[tuple[str, int]],
        columns: Sequence[tuple[str, str]],
    ) -> OutputRecord:
        """The scores a run wrote under ``path``: its files (names and rows) and the Spark SQL columns."""
        written = tuple(DataFile(name, rows) for name, rows in files)
        return cls(path, table, sum(f.rows for f in written), written, tuple(Column(*c) for c in columns))

    @classmethod
    def from_json(cls, data: Mapping) -> OutputRecord:
        """Read from its part of a manifest's JSON (what an older one lacks takes its default)."""
        return cls(
            data.get("path", ""),
            data.get("table"),
            data.get("rows", 0),
            tuple(DataFile.from_json(f) for f in data.get("files") or ()),
            tuple(Column.from_json(c) for c in data.get("columns") or ()),
            data.get("snapshot_id"),
        )


@dataclass(frozen=True)
class Resources:
    """What scored: the cores, the pass (``arrow`` or ``spark``) and the executor (``local``/``spark``)."""

    cores: int | None = None
    engine: str | None = None
    executor: str | None = None


@dataclass(frozen=True)
class Manifest:
    """One published partition's manifest (``_manifest.json``).

    Attributes:
        run_id: The run's unique id.
        partition: The partition it published.
        model: The champion.
        input: The input partition.
        counts: Rows in, scored, rejected.
        rejects: The rejected rows.
        output: The scored rows.
        started_at: When the run started (UTC).
        finished_at: When the data was written (UTC).
        arguments: The run's arguments (``JobConfig.to_json``).
        challengers: The models scored beside the champion, in the run's order.
        ensemble: The ensemble's normalised weights by model, if any.
        ab: The A/B split, if any.
        decision_threshold: Where a probability becomes a positive decision.
        resources: What scored.
        drift: How the validator and the report compute the drift (``scoring.dataset.quantiles``).
        cost: The pre-flight's estimate beside what the run took, if the run had one.
        package_version: This package's version.
        spark_version: Spark's, or None where no Spark ran.
        manifest_version: The layout's version.
    """

    run_id: str
    partition: Partition
    model: ModelRecord
    input: InputRecord
    counts: Counts
    rejects: RejectsRecord
    output: OutputRecord
    started_at: dt.datetime
    finished_at: dt.datetime
    arguments: Mapping[str, Any] = field(default_factory=dict)
    challengers: tuple[Challenger, ...] = ()
    ensemble: Mapping[str, float] | None = None
    ab: ABSplit | None = None
    decision_threshold: float = DECISION_THRESHOLD
    resources: Resources = Resources()
    drift: Mapping[str, Any] | None = None
    cost: Mapping[str, Any] | None = None
    package_version: str | None = None
    spark_version: str | None = None
    manifest_version: int = MANIFEST_VERSION

    @property
    def duration_seconds(self) -> float:
        """How long the run took, from its start to its data being written."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def rows_per_second(self) -> float:
        """The run's throughput: input rows (scored or rejected) per second of its duration."""
        return self.counts.input / max(self.duration_seconds, 1e-9)

    def with_snapshot(self, snapshot_id: int | None) -> Manifest:
        """This manifest once the table's commit published it as ``snapshot_id``."""
        return dataclasses.replace(self, output=dataclasses.replace(self.output, snapshot_id=snapshot_id))

    def to_json(self) -> dict:
        """The file's JSON, key for key."""
        return {
            "manifest_version": self.manifest_version,
            "run_id": self.run_id,
            "partition": dataclasses.asdict(self.partition),
            "model": self.model.to_json(),
            "challengers": [c.to_json() for c in self.challengers],
            "ensemble": None if self.ensemble is None else {"weights": dict(self.ensemble)},
            "ab": None if self.ab is None else self.ab.to_json(),
            "decision_threshold": self.decision_threshold,
            "input": self.input.to_json(),
            "counts": dataclasses.asdict(self.counts),
            "rejects": self.rejects.to_json(),
            "output": self.output.to_json(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "resources": dataclasses.asdict(self.resources),
            "drift": None if self.drift is None else dict(self.drift),
            "cost": None if self.cost is None else dict(self.cost),
            "arguments": dict(self.arguments),
            "package_version": self.package_version,
            "spark_version": self.spark_version,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Manifest:
        """A manifest read back, of this version or an older one (what it lacks takes its default)."""
        ensemble, ab = data.get("ensemble"), data.get("ab")
        return cls(
            run_id=data.get("run_id", ""),
            partition=Partition(**data.get("partition") or {}),
            model=ModelRecord.from_json(data.get("model") or {}),
            input=InputRecord.from_json(data.get("input") or {}),
            counts=Counts(**data.get("counts") or {}),
            rejects=RejectsRecord.from_json(data.get("rejects") or {}),
            output=OutputRecord.from_json(data.get("output") or {}),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            arguments=data.get("arguments") or {},
            challengers=tuple(Challenger.from_json(c) for c in data.get("challengers") or ()),
            ensemble=ensemble["weights"] if ensemble else None,
            ab=ABSplit.from_json(ab) if ab else None,
            decision_threshold=data.get("decision_threshold", DECISION_THRESHOLD),
            resources=Resources(**data.get("resources") or {}),
            drift=data.get("drift"),
            cost=data.get("cost"),
            package_version=data.get("package_version"),
            spark_version=data.get("spark_version"),
            manifest_version=data.get("manifest_version", MANIFEST_VERSION),
        )


# What an older manifest without the run's times reads as: a run of no duration.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time(value: str | None) -> dt.datetime:
    return _EPOCH if value is None else dt.datetime.fromisoformat(value)


def read_manifest(directory: str) -> Manifest | None:
    """The manifest in ``directory`` (a partition's, or a table run's), or None when it has none."""
    data = read_json(f"{directory}/{MANIFEST_FILE}")
    return None if data is None else Manifest.from_json(data)


def build_manifest(
    *,
    config: JobConfig,
    run_id: str,
    champion: ModelRecord,
    challengers: Sequence[Challenger],
    input: InputRecord,
    output: OutputRecord,
    rejects: RejectsRecord,
    resources: Resources,
    spark_version: str | None,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    variant_rows: Mapping[str, int] | None = None,
) -> Manifest:
    """The manifest of one published partition: what the run wrote, and the run's own facts.

    Args:
        config: The job's arguments: the partition, the lineup, the table, the cost estimate.
        run_id: The run's unique id.
        champion: The champion as it scored (``ModelRecord.of``).
        challengers: The models scored beside it, in the run's order, with their agreement.
        input: The input partition read.
        output: The scores written (``OutputRecord.written``).
        rejects: The rejects written (``RejectsRecord.written``).
        resources: What scored: the cores (with the duration, the throughput per core that later
            runs' cost estimates start from), the pass and the executor.
        spark_version: Spark's version; None where no Spark ran (the local executor).
        started_at: When the run started (UTC).
        finished_at: When the data was written (UTC).
        variant_rows: Rows each A/B variant received, under an A/B split.
    """
    lineup = config.lineup
    return Manifest(
        run_id=run_id,
        partition=Partition(config.partition_column, config.partition_value),
        model=champion,
        challengers=tuple(challengers),
        ensemble=dict(lineup.ensemble) if lineup.ensemble else None,
        ab=ABSplit(lineup.ab_salt, dict(lineup.ab), dict(variant_rows or {})) if lineup.ab else None,
        decision_threshold=lineup.decision_threshold,
        input=input,
        counts=Counts(input.rows, output.rows, rejects.rows),
        rejects=rejects,
        output=output,
        started_at=started_at,
        finished_at=finished_at,
        resources=resources,
        drift=DRIFT_METHOD,
        cost=_cost_json(config.cost_estimate, (finished_at - started_at).total_seconds()),
        arguments=config.to_json(),
        package_version=__version__,
        spark_version=spark_version,
    )


# How the validator and the report compute a partition's drift (``scoring.dataset.quantiles``).
DRIFT_METHOD = {
    "psi_bins": f"deciles of the earlier partition, {quantiles.METHOD}",
    "rank_error": quantiles.RANK_ERROR,
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


def summary(manifest: Manifest) -> str:
    """One line about a published partition, for people."""
    counts = manifest.counts
    return (
        f"scored {counts.scored:,} of {counts.input:,} rows ({counts.rejected:,} rejected) for "
        f"{manifest.partition} with {manifest.model.pinned_uri} ({manifest.model.backend}) in "
        f"{manifest.duration_seconds:.1f} s ({manifest.rows_per_second:,.0f} rows/s) "
        f"-> {_published(manifest)}"
    ) + "".join(f"\n  {line}" for line in lineup_lines(manifest))


def _published(manifest: Manifest) -> str:
    """Where the partition was published: the table (and its snapshot), or the partition's directory."""
    output = manifest.output
    if output.table:
        snapshot = f", snapshot {output.snapshot_id}" if output.snapshot_id else ""
        return f"table {output.table}{snapshot}"
    return f"{output.path.rstrip('/')}/{manifest.partition}"


def lineup_lines(manifest: Manifest) -> list[str]:
    """One line per challenger (its agreement with the champion), the ensemble and the A/B split."""
    lines = []
    for challenger in manifest.challengers:
        figures = challenger.agreement or {}
        shown = ", ".join(
            f"{name} {_figure(figures.get(name))}"
            for name in ("pearson", "spearman", "mean_abs_diff", "p99_abs_diff", "flip_share")
        )
        lines.append(
            f"challenger {challenger.name} ({challenger.model.pinned_uri}) against the champion "
            f"on {figures.get('rows', 0):,} rows: {shown}"
        )
    if manifest.ensemble:
        weights = ", ".join(f"{n} {w:.3g}" for n, w in manifest.ensemble.items())
        lines.append(f"ensemble: {weights}")
    if manifest.ab:
        rows = manifest.ab.rows
        total = max(sum(rows.values()), 1)
        split = ", ".join(
            f"{n} {rows.get(n, 0):,} rows ({rows.get(n, 0) / total:.1%}, split {share:.1%})"
            for n, share in manifest.ab.split.items()
        )
        lines.append(f"a/b (salt {manifest.ab.salt}): {split}")
    return lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
