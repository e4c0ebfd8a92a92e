"""Validating a published partition: ``scoring validate``, also called by the DAG.

Reads only the partition's footers and a few columns (ids, scores, model version) through
``pyarrow.fs``, so it runs wherever the output is reachable (a local disk, S3) without Spark. The
columns are read a batch at a time and tallied (``Tally``), and nothing the validator holds grows
with the rows:

- the ids go to hash buckets spilled to local disk, each counted on its own
  (``scoring.dataset.buckets``): exact, in about a bucket's memory;
- the drift's bins are the previous partition's exact deciles, found in a few reads of its score
  column (``scoring.dataset.quantiles``: rank error 0), and each day's rows are counted per bin as
  they are read (``ScoreCounts``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from scoring.columns import (
    CHALLENGER_PREFIX,
    ENSEMBLE_PREFIX,
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY,
    SCORE_COLUMNS,
    VARIANT,
)
from scoring.config import PSI_ACTION, PSI_THRESHOLD, VARIANT_TOLERANCE
from scoring.dataset import quantiles
from scoring.dataset.buckets import RepeatBuckets
from scoring.dataset.destination import Day, Destination, as_destination
from scoring.dataset.ids import holds_int64
from scoring.dataset.manifest import MANIFEST_FILE, Manifest
from scoring.dataset.publish import staged_files
from scoring.dataset.reading import (
    ScoreColumn,
    day_files,
    partition_dataset,
    partition_footers,
    read_batches,
    score_name,
    score_values,
)
from scoring.dataset.storage import read_json
from scoring.lineup import CHAMPION
from scoring.model.schema import arrow_type_name

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One check's outcome.

    Attributes:
        name: What was checked.
        status: ``ok``, ``warn`` or ``fail``.
        detail: What was found, in a few words.
    """

    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class PsiBins:
    """The population stability index bin by bin: PSI is the sum of ``contributions``.

    Attributes:
        edges: The bins' edges, the reference's deciles (the outer two are -inf and +inf).
        expected: Each bin's share of the reference's rows (floored, as the index uses them).
        actual: Each bin's share of the compared rows (floored likewise).
        contributions: Each bin's term of the index, ``(actual - expected) * ln(actual / expected)``.
    """

    edges: np.ndarray
    expected: np.ndarray
    actual: np.ndarray
    contributions: np.ndarray

    @property
    def psi(self) -> float:
        """The index."""
        return float(np.sum(self.contributions))

    def to_json(self) -> list[dict]:
        """One object per bin; the outer edges are None (unbounded)."""
        bounds = [None if math.isinf(e) else float(e) for e in self.edges]
        return [
            {"low": bounds[i], "high": bounds[i + 1], "expected": float(e), "actual": float(a),
             "contribution": float(c)}
            for i, (e, a, c) in enumerate(zip(self.expected, self.actual, self.contributions, strict=True))
        ]  # fmt: skip


@dataclass
class ScoreCounts:
    """One day's score column counted a batch at a time: its rows, its range and its rows per bin.

    Attributes:
        edges: The bins' edges, increasing (each bin holds its lower edge, the last its upper one too,
            as numpy's ``histogram``); None to count no bins.
        counts: Rows per bin.
        rows: Rows seen, NaN or null scores included.
        nans: NaN or null scores.
        low: The least score (NaN aside), None before any.
        high: The greatest score (NaN aside), None before any.
    """

    edges: np.ndarray | None = None
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rows: int = 0
    nans: int = 0
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.edges is not None and not len(self.counts):
            self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Count one batch of scores (float64, a null as NaN)."""
        self.rows += len(values)
        nans = int(np.count_nonzero(np.isnan(values)))
        self.nans += nans
        if len(values) > nans:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
        if self.edges is not None:
            self.counts += bin_counts(values, self.edges)

    def all_close_to(self, value: float) -> bool:
        """``np.allclose(scores, value)``: no NaN, and the least and greatest score are close to it."""
        if self.nans:
            return False
        return self.low is None or bool(np.allclose([self.low, self.high], value))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin, as ``np.histogram(values, edges)[0]`` without its sort of the values.

    Each bin holds its lower edge, the last bin its upper edge too; values outside the edges, and NaN,
    are not counted.
    """
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    inside = (index >= 0) & (index < len(edges) - 1)
    return np.bincount(index[inside], minlength=len(edges) - 1)


@dataclass(frozen=True)
class Drift:
    """What the drift check compared: the score of this partition against the previous one's.

    Attributes:
        previous: The previous published partition's directory name (``date=...``).
        bins: The index, bin by bin.
        reference: The previous partition's scores, counted.
        scores: This partition's scores, counted.
        reference_day: The previous partition.
        day: This partition.
        reads: Reads of the previous partition's score column it took (deciles, then their counts).
    """

    previous: str
    bins: PsiBins
    reference: ScoreCounts
    scores: ScoreCounts
    reference_day: Day
    day: Day
    reads: int

    def method(self) -> dict:
        """How the bins were found, for the JSON and the report."""
        return {
            "deciles": quantiles.METHOD,
            "rank_error": quantiles.RANK_ERROR,
            "reads": self.reads,
            "counts": "exact, both days",
        }


@dataclass
class ValidationReport:
    """All checks of one partition, and the drift it measured (None when there was nothing to compare)."""

    partition: str
    checks: list[Check] = field(default_factory=list)
    drift: Drift | None = None

    @property
    def ok(self) -> bool:
        """Whether no check failed (warnings allowed)."""
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, passed: bool, detail: str, severity: str = FAIL) -> bool:
        """Record a check; ``severity`` is its status when it does not pass."""
        self.checks.append(Check(name, OK if passed else severity, detail))
        return passed

    def to_json(self) -> dict:
        """The report for machines."""
        drift = self.drift and {
            "previous": self.drift.previous,
            "psi": self.drift.bins.psi,
            "method": self.drift.method(),
            "rows": {"previous": self.drift.reference.rows, "current": self.drift.scores.rows},
            "bins": self.drift.bins.to_json(),
        }
        return {
            "partition": self.partition,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "drift": drift,
        }

    def summary(self) -> str:
        """The report for people: one line per check and a verdict."""
        lines = [f"{c.status.upper():<5} {c.name:<22} {c.detail}" for c in self.checks]
        verdict = "valid" if self.ok else "INVALID"
        return "\n".join([f"{self.partition}: {verdict}", *lines])


def validate_partition(
    output: str | Destination,
    date: dt.date,
    partition_column: str = "date",
    psi_threshold: float = PSI_THRESHOLD,
    psi_action: str = PSI_ACTION,
    variant_tolerance: float = VARIANT_TOLERANCE,
) -> ValidationReport:
    """Check one published partition against its manifest and its predecessor.

    Args:
        output: Root of the output dataset, or the destination (a directory or an Iceberg table).
        date: The partition to check.
        partition_column: The output's partition column (for a root given as a string).
        psi_threshold: Population stability index above which the score distribution has drifted
            from the previous published partition's (0.1: some shift; 0.2: a significant one).
        psi_action: ``warn`` or ``fail`` when the drift is above the threshold.
        variant_tolerance: How far (a share, 0.01: one percentage point) each A/B variant's share of
            the rows may be from its split, at least (a small partition is allowed four standard
            deviations of a binomial draw).

    Returns:
        The report; ``report.ok`` is False when any check failed.
    """
    destination = as_destination(output, partition_column)
    day = destination.day(date)
    report = ValidationReport(day.uri or f"{destination.label} {day.name}")
    report.add("published", day.published, day.detail)
    data = read_json(f"{day.uri}/{MANIFEST_FILE}") if day.uri else None
    problem = f"no {MANIFEST_FILE}" if data is None else _manifest_problem(data)
    if not report.add("manifest", problem is None, problem or f"run {data['run_id']}"):
        return report
    manifest = Manifest.from_json(data)

    names = day_files(day)
    dataset = partition_dataset(day.uri, names) if names else None
    footers = partition_footers(dataset) if dataset else []
    files = list(zip(names, (footer.num_rows for footer in footers), strict=True))
    listed = [(f.name, f.rows) for f in manifest.output.files]
    found = f"{len(files)} files, {sum(n for _, n in files)} rows in footers"
    report.add(
        "files", files == listed, found if files == listed else f"{found}; manifest lists {_describe(listed)}"
    )
    rejects = staged_files(day.rejects_uri, day.rejects) if day.rejects_uri else []
    _check_counts(report, manifest, files, rejects)
    if dataset is None:
        return report
    _check_schema(report, dataset.schema, manifest)
    reference, skipped = _drift_reference(destination.previous(date), dataset.schema)
    tally = tally_partition(dataset, footers, manifest, reference.edges if reference else None)
    _check_values(report, tally, manifest)
    _check_lineup(report, tally, manifest, variant_tolerance)
    _check_drift(report, reference, skipped, tally.scores, day, psi_threshold, psi_action)
    return report


_REQUIRED = (
    ("run_id",),
    ("counts", "input"),
    ("counts", "scored"),
    ("counts", "rejected"),
    ("output", "rows"),
    ("output", "files"),
    ("output", "columns"),
    ("model", "version"),
    ("arguments", "id_columns"),
)


def _manifest_problem(manifest: dict) -> str | None:
    for path in _REQUIRED:
        node = manifest
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return f"{MANIFEST_FILE} lacks {'.'.join(path)}"
            node = node[key]
    return None


def _check_counts(report: ValidationReport, manifest: Manifest, files: list, rejects: list) -> None:
    counts = manifest.counts
    scored, rejected = sum(n for _, n in files), sum(n for _, n in rejects)
    report.add(
        "row counts",
        scored == counts.scored == manifest.output.rows
        and rejected == counts.rejected
        and counts.input == counts.scored + counts.rejected,
        f"input {counts.input} = scored {counts.scored} + rejected {counts.rejected}; "
        f"found {scored} scored and {rejected} rejected rows",
    )


def _check_schema(report: ValidationReport, schema: pa.Schema, manifest: Manifest) -> None:
    expected = [(c.name, c.type) for c in manifest.output.columns]
    found = [(f.name, arrow_type_name(f.type)) for f in schema]
    report.add(
        "schema",
        found == expected,
        ", ".join(f"{n} {t}" for n, t in found)
        if found == expected
        else f"columns {found} != manifest {expected}",
    )


def _check_values(report: ValidationReport, tally: Tally, manifest: Manifest) -> None:
    expected = _served_versions(manifest)
    versions, nulls = tally.versions, tally.nulls[MODEL_VERSION]
    found = f"{sorted(versions)}" + (f" and {nulls} null" if nulls else "")
    report.add(
        "model version",
        bool(versions) and versions <= expected and nulls == 0,
        f"{found} (manifest: {', '.join(sorted(expected))})",
    )

    nulls = tally.nulls[PREDICTION]
    report.add("predictions", nulls == 0, f"{nulls} null predictions")

    if PROBABILITY in tally.ranges:
        report.add("probabilities", *tally.ranges[PROBABILITY].verdict())

    ids = manifest.arguments["id_columns"]
    repeated = tally.repeated_ids()
    report.add("ids unique", repeated == 0, f"{repeated} repeated ids ({', '.join(ids)})")


@dataclass
class Range:
    """A probability column's least and greatest value and its nulls, gathered batch by batch."""

    low: float | None = None
    high: float | None = None
    nulls: int = 0

    def add(self, column: pa.Array) -> None:
        """Take in one batch of the column (a list column's elements count one by one)."""
        if pa.types.is_list(column.type):
            column = pc.list_flatten(column)
        self.nulls += column.null_count
        bounds = pc.min_max(column).as_py()
        if bounds["min"] is not None:
            self.low = bounds["min"] if self.low is None else min(self.low, bounds["min"])
            self.high = bounds["max"] if self.high is None else max(self.high, bounds["max"])

    def verdict(self) -> tuple[bool, str]:
        """Whether the column has no nulls and stays within [0, 1], and what was found."""
        in_range = self.nulls == 0 and self.low is not None and self.low >= 0.0 and self.high <= 1.0
        return in_range, f"min {self.low}, max {self.high}, {self.nulls} null"


@dataclass
class Tally:
    """What the checks need from a partition's rows, gathered a batch at a time.

    Attributes:
        rows: Rows seen.
        versions: The distinct values of ``model_version``.
        nulls: Nulls per column read.
        ranges: Probability columns' ranges, by name.
        variants: Rows per A/B variant (a null variant is counted in ``nulls``).
        ids: The id columns' repeat counter (buckets on disk), None when the partition lacks one.
        score: The drift's score column (``score_name``), when the drift is measured.
        scores: That column counted in the previous partition's deciles, when the drift is measured.
    """

    rows: int = 0
    versions: set[str] = field(default_factory=set)
    nulls: Counter[str] = field(default_factory=Counter)
    ranges: dict[str, Range] = field(default_factory=dict)
    variants: Counter[str] = field(default_factory=Counter)
    ids: RepeatBuckets | None = None
    score: str | None = None
    scores: ScoreCounts | None = None

    def repeated_ids(self) -> int:
        """Rows less distinct ids."""
        return self.ids.repeats() if self.ids is not None else 0


def tally_partition(
    dataset: ds.Dataset, footers: list[pq.FileMetaData], manifest: Manifest, drift_edges: np.ndarray | None
) -> Tally:
    """Read the columns the checks need a batch at a time, and tally them.

    Args:
        dataset: The partition's files (``partition_dataset``).
        footers: Their footers (``partition_footers``): the rows, which size the ids' buckets.
        manifest: The partition's manifest: its id columns and lineup.
        drift_edges: The previous partition's deciles, to count the score column in; None when the
            drift is not measured.
    """
    id_columns = manifest.arguments["id_columns"]
    lineup = [c for c in published_lineup_columns(manifest) if c != VARIANT]
    present = set(dataset.schema.names)
    wanted = {*id_columns, *SCORE_COLUMNS, MODEL_VERSION, VARIANT, *lineup} & present
    tally = Tally()
    probabilities = [c for c in (PROBABILITY, *lineup) if c in present and c.endswith(PROBABILITY)]
    tally.ranges = {name: Range() for name in probabilities}
    if all(c in present for c in id_columns):
        integer = len(id_columns) == 1 and holds_int64(dataset.schema.field(id_columns[0]).type)
        tally.ids = RepeatBuckets(sum(footer.num_rows for footer in footers), integer)
    if drift_edges is not None:
        tally.score, tally.scores = score_name(dataset.schema), ScoreCounts(drift_edges)
    try:
        for batch in read_batches(dataset, wanted):
            _tally_batch(tally, batch, id_columns)
    except BaseException:
        if tally.ids is not None:
            tally.ids.close()  # the buckets' files, now
        raise
    return tally


def _tally_batch(tally: Tally, batch: pa.RecordBatch, id_columns: list[str]) -> None:
    tally.rows += batch.num_rows
    for name in batch.schema.names:
        tally.nulls[name] += batch.column(name).null_count
    if MODEL_VERSION in batch.schema.names:
        versions = pc.unique(batch.column(MODEL_VERSION).drop_null())
        tally.versions.update(versions.to_pylist())
    for name, value_range in tally.ranges.items():
        value_range.add(batch.column(name))
    if VARIANT in batch.schema.names:
        for row in pc.value_counts(batch.column(VARIANT).drop_null()).to_pylist():
            tally.variants[row["values"]] += row["counts"]
    if tally.ids is not None:
        tally.ids.add(batch.select(id_columns))
    if tally.scores is not None:
        tally.scores.add(score_values(batch, tally.score))


def _served_versions(manifest: Manifest) -> set[str]:
    """The model versions ``model_version`` may hold: the champion's, or the A/B variants' models'."""
    if not manifest.ab:
        return {manifest.model.version}
    versions = {CHAMPION: manifest.model.version}
    versions.update({c.name: c.model.version for c in manifest.challengers})
    return {versions[name] for name in manifest.ab.split}


def published_lineup_columns(manifest: Manifest) -> list[str]:
    """The columns a run with challengers, an ensemble or an A/B split added to the champion's."""
    names = [c.name for c in manifest.output.columns]
    return [n for n in names if n.startswith((CHALLENGER_PREFIX, ENSEMBLE_PREFIX)) or n == VARIANT]


def _check_lineup(
    report: ValidationReport, tally: Tally, manifest: Manifest, variant_tolerance: float
) -> None:
    """Challenger and ensemble columns: no nulls, probabilities within [0, 1]; the variants' shares."""
    columns = [c for c in published_lineup_columns(manifest) if c != VARIANT]
    if columns:
        problems = []
        for name in columns:
            if name in tally.ranges:
                in_range, detail = tally.ranges[name].verdict()
                if not in_range:
                    problems.append(f"{name}: {detail}")
            elif tally.nulls[name]:
                problems.append(f"{name}: {tally.nulls[name]} null")
        report.add(
            "challenger columns",
            not problems,
            "; ".join(problems) if problems else f"{len(columns)} columns, no nulls, probabilities in [0, 1]",
        )
    ab = manifest.ab
    if not ab:
        return
    counts = tally.variants
    rows = max(tally.rows, 1)
    off = []
    for name, share in ab.split.items():
        seen = counts.get(name, 0) / rows
        # A hash split is a binomial draw: allow four standard deviations on a small partition.
        allowed = max(variant_tolerance, 4 * math.sqrt(share * (1 - share) / rows))
        if abs(seen - share) > allowed:
            off.append(f"{name} {seen:.2%} (split {share:.2%}, +/- {allowed:.2%})")
    unknown = sorted(set(counts) - set(ab.split))
    recorded = {name: counts.get(name, 0) for name in ab.split} == dict(ab.rows)
    detail = ", ".join(f"{n} {counts.get(n, 0) / rows:.2%}" for n in ab.split)
    problems = (
        off
        + [f"unknown variants {unknown}"] * bool(unknown)
        + ["rows differ from the manifest's"] * (not recorded)
    )
    report.add("variant shares", not problems and tally.nulls[VARIANT] == 0, "; ".join(problems) or detail)


@dataclass(frozen=True)
class Reference:
    """The previous partition's side of the drift check.

    Attributes:
        day: The previous partition.
        edges: Its deciles (tied ones merged), the outer two replaced by -inf and +inf; just those two
            when all its deciles are one value.
        constant: That one value (NaN when the column holds a NaN, as ``np.quantile`` makes every
            quantile then), else None.
        counts: Its scores counted in ``edges``.
        reads: Reads of its score column: the deciles', then the count's.
    """

    day: Day
    edges: np.ndarray
    constant: float | None
    counts: ScoreCounts
    reads: int

    def psi_bins(self, actual: ScoreCounts) -> PsiBins:
        """The index of ``actual`` (counted in ``edges``) against this partition, as ``psi_bins``."""
        if self.constant is not None:
            return _one_bin(actual.all_close_to(self.constant))
        return _bins(self.edges, self.counts.counts / self.counts.rows, actual.counts / actual.rows)


def reference_scores(day: Day, bins: int = 10) -> Reference | None:
    """A published partition's score quantiles (deciles by default), exact, and its rows counted in them.

    The score column is read a batch at a time: a few times for the quantiles
    (``quantiles.exact_quantiles``) and once more for the counts.

    Returns:
        None when the partition has no numeric score column.
    """
    column = ScoreColumn.of(day)
    if column is None:
        return None
    found = quantiles.exact_quantiles(column.batches, np.linspace(0, 1, bins + 1), column.rows())
    edges = np.unique(found.values)
    if len(edges) < 2:  # one value; or NaN, as np.quantile makes every quantile of a column with one
        value = float(edges[0])
        known = None if math.isnan(value) else value
        counts = ScoreCounts(rows=found.rows, low=known, high=known)
        return Reference(day, np.array([-np.inf, np.inf]), value, counts, found.passes)
    edges[0], edges[-1] = -np.inf, np.inf
    return Reference(day, edges, None, count_scores(column, edges), found.passes + 1)


def _drift_reference(previous: Day | None, schema: pa.Schema) -> tuple[Reference | None, str | None]:
    """The drift's reference, or why the drift is not measured."""
    if previous is None:
        return None, "no earlier published partition"
    if score_name(schema) is None:
        return None, "no numeric score column"
    reference = reference_scores(previous)
    if reference is None:
        return None, f"{previous.name} has no numeric score column"
    if reference.counts.rows == 0:
        return None, f"{previous.name} has no rows"
    return reference, None


def _check_drift(
    report: ValidationReport,
    reference: Reference | None,
    skipped: str | None,
    scores: ScoreCounts | None,
    day: Day,
    threshold: float,
    action: str,
) -> None:
    if reference is None or not scores.rows:
        report.add("score drift", True, f"skipped: {skipped or 'no rows'}")
        return
    bins = reference.psi_bins(scores)
    value = bins.psi
    previous = reference.day.name
    report.drift = Drift(previous, bins, reference.counts, scores, reference.day, day, reference.reads)
    report.add(
        "score drift",
        value <= threshold,
        f"PSI {value:.3f} against {previous} on its exact deciles (threshold {threshold})",
        severity=action,
    )


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` against ``expected``, on ``expected``'s deciles (the sum of ``psi_bins``)."""
    return psi_bins(expected, actual, bins).psi


def psi_bins(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> PsiBins:
    """The population stability index of ``actual`` against ``expected``, bin by bin, in memory.

    The bins are ``expected``'s quantiles (deciles by default; tied quantiles merge). Empty bins get a
    small floor so that the index stays finite. A constant reference makes one bin: the index is 0
    when ``actual`` is that constant too, else infinite. The validator gets the same figure from
    columns it never holds whole (``reference_scores``, ``ScoreCounts``).
    """
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return _one_bin(bool(np.allclose(actual, expected[0])))
    edges[0], edges[-1] = -np.inf, np.inf
    return _bins(
        edges, np.histogram(expected, edges)[0] / len(expected), np.histogram(actual, edges)[0] / len(actual)
    )


def _bins(edges: np.ndarray, expected: np.ndarray, actual: np.ndarray) -> PsiBins:
    """The index's terms from each bin's share of both days' rows (floored at 1e-4)."""
    e, a = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return PsiBins(edges, e, a, (a - e) * np.log(a / e))


def _one_bin(same: bool) -> PsiBins:
    """A constant reference's one bin: no drift when the scores are that constant, else infinite."""
    one = np.array([1.0])
    return PsiBins(np.array([-np.inf, np.inf]), one, one, np.array([0.0 if same else math.inf]))


def score_counts(day: Day, edges: np.ndarray) -> ScoreCounts | None:
    """A published day's score column counted in bins; None when it has no numeric score column."""
    column = ScoreColumn.of(day)
    return count_scores(column, edges) if column else None


def count_scores(column: ScoreColumn, edges: np.ndarray) -> ScoreCounts:
    """One read of a score column, counted in the bins ``edges`` bound."""
    counts = ScoreCounts(edges)
    for values in column.batches():
        counts.add(values)
    return counts


def _describe(files: list[tuple[str, int]]) -> str:
    return f"{len(files)} files/{sum(n for _, n in files)} rows"


def report_json(report: ValidationReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_json(), indent=2)
