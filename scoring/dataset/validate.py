"""Validating a published partition: ``scoring validate``, also called by the DAG.

Reads only the partition's footers and a few columns (ids, scores, model version) through
``pyarrow.fs``, so it runs wherever the output is reachable (a local disk, S3) without Spark. The
columns are read a batch at a time and tallied (``Tally``): the validator holds the ids' bitmap, or
the ids themselves when they are not one integer column, and the scores only when there is an
earlier partition to measure drift against; not the partition.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from scoring.dataset.destination import Day, Destination, as_destination
from scoring.dataset.ids import RepeatCounter, holds_int64, id_bounds
from scoring.dataset.publish import MANIFEST_FILE, staged_files, staged_paths
from scoring.dataset.storage import filesystem, read_json
from scoring.errors import OutputError
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


@dataclass(frozen=True)
class Drift:
    """What the drift check compared: the score of this partition against the previous one's.

    Attributes:
        previous: The previous published partition's directory name (``date=...``).
        bins: The index, bin by bin.
        reference: The previous partition's scores.
        scores: This partition's scores.
    """

    previous: str
    bins: PsiBins
    reference: np.ndarray
    scores: np.ndarray


@dataclass
class Report:
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
    psi_threshold: float = 0.2,
    psi_action: str = WARN,
    variant_tolerance: float = 0.01,
) -> Report:
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
    report = Report(day.uri or f"{destination.label} {day.name}")
    report.add("published", day.published, day.detail)
    manifest = read_json(f"{day.uri}/{MANIFEST_FILE}") if day.uri else None
    problem = f"no {MANIFEST_FILE}" if manifest is None else _manifest_problem(manifest)
    if not report.add("manifest", problem is None, problem or f"run {manifest['run_id']}"):
        return report

    names = day_files(day)
    dataset = partition_dataset(day.uri, names) if names else None
    footers = partition_footers(dataset) if dataset else []
    files = list(zip(names, (footer.num_rows for footer in footers), strict=True))
    listed = [(f["name"], f["rows"]) for f in manifest["output"]["files"]]
    found = f"{len(files)} files, {sum(n for _, n in files)} rows in footers"
    report.add(
        "files", files == listed, found if files == listed else f"{found}; manifest lists {_describe(listed)}"
    )
    rejects = staged_files(day.rejects_uri, day.rejects) if day.rejects_uri else []
    _check_counts(report, manifest, files, rejects)
    if dataset is None:
        return report
    previous = destination.previous(date)
    _check_schema(report, dataset.schema, manifest)
    tally = tally_partition(dataset, footers, manifest, keep_scores=previous is not None)
    _check_values(report, tally, manifest)
    _check_lineup(report, tally, manifest, variant_tolerance)
    _check_drift(report, tally.scores(), previous, psi_threshold, psi_action)
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


def _check_counts(report: Report, manifest: dict, files: list, rejects: list) -> None:
    counts = manifest["counts"]
    scored, rejected = sum(n for _, n in files), sum(n for _, n in rejects)
    report.add(
        "row counts",
        scored == counts["scored"] == manifest["output"]["rows"]
        and rejected == counts["rejected"]
        and counts["input"] == counts["scored"] + counts["rejected"],
        f"input {counts['input']} = scored {counts['scored']} + rejected {counts['rejected']}; "
        f"found {scored} scored and {rejected} rejected rows",
    )


def _check_schema(report: Report, schema: pa.Schema, manifest: dict) -> None:
    expected = [(c["name"], c["type"]) for c in manifest["output"]["columns"]]
    found = [(f.name, arrow_type_name(f.type)) for f in schema]
    report.add(
        "schema",
        found == expected,
        ", ".join(f"{n} {t}" for n, t in found)
        if found == expected
        else f"columns {found} != manifest {expected}",
    )


def _check_values(report: Report, tally: Tally, manifest: dict) -> None:
    expected = _served_versions(manifest)
    versions, nulls = tally.versions, tally.nulls["model_version"]
    found = f"{sorted(versions)}" + (f" and {nulls} null" if nulls else "")
    report.add(
        "model version",
        bool(versions) and versions <= expected and nulls == 0,
        f"{found} (manifest: {', '.join(sorted(expected))})",
    )

    nulls = tally.nulls["prediction"]
    report.add("predictions", nulls == 0, f"{nulls} null predictions")

    if "probability" in tally.ranges:
        report.add("probabilities", *tally.ranges["probability"].verdict())

    ids = manifest["arguments"]["id_columns"]
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
        ids: The repeat counter of one integer id column, else None.
        id_batches: Otherwise the id columns themselves, batch by batch (grouped at the end).
        id_nulls: Null ids under ``ids`` (they group as one id, as pyarrow's ``group_by`` groups them).
        score_batches: The drift's score column, batch by batch, when it was asked for.
    """

    rows: int = 0
    versions: set[str] = field(default_factory=set)
    nulls: Counter[str] = field(default_factory=Counter)
    ranges: dict[str, Range] = field(default_factory=dict)
    variants: Counter[str] = field(default_factory=Counter)
    ids: RepeatCounter | None = None
    id_batches: list[pa.RecordBatch] = field(default_factory=list)
    id_nulls: int = 0
    score_batches: list[np.ndarray] | None = None

    def repeated_ids(self) -> int:
        """Rows less distinct ids."""
        if self.ids is not None:
            return self.ids.repeats + max(self.id_nulls - 1, 0)
        return repeated_ids(pa.Table.from_batches(self.id_batches)) if self.id_batches else 0

    def scores(self) -> np.ndarray | None:
        """The drift's score column, when it was kept and the partition has one."""
        if not self.score_batches:
            return None
        return np.concatenate(self.score_batches)


# Rows read at a time: a batch of the columns a check needs is a few MB.
READ_BATCH_ROWS = 65_536


def tally_partition(
    dataset: ds.Dataset, footers: list[pq.FileMetaData], manifest: dict, keep_scores: bool
) -> Tally:
    """Read the columns the checks need a batch at a time, and tally them.

    Args:
        dataset: The partition's files (``partition_dataset``).
        footers: Their footers (``partition_footers``): the id column's bounds.
        manifest: The partition's manifest: its id columns and lineup.
        keep_scores: Keep the score column for the drift check (8 bytes a row).
    """
    id_columns = manifest["arguments"]["id_columns"]
    lineup = [c for c in lineup_columns(manifest) if c != "variant"]
    present = set(dataset.schema.names)
    wanted = {*id_columns, "prediction", "probability", "model_version", "variant", *lineup} & present
    tally = Tally(score_batches=[] if keep_scores else None)
    probabilities = [c for c in ("probability", *lineup) if c in present and c.endswith("probability")]
    tally.ranges = {name: Range() for name in probabilities}
    one_integer_id = len(id_columns) == 1 and id_columns[0] in present
    if one_integer_id and holds_int64(dataset.schema.field(id_columns[0]).type):
        rows = sum(footer.num_rows for footer in footers)
        tally.ids = RepeatCounter(rows, id_bounds(footers, id_columns[0]))
    for batch in read_batches(dataset, wanted):
        _tally_batch(tally, batch, id_columns)
    return tally


def _tally_batch(tally: Tally, batch: pa.RecordBatch, id_columns: list[str]) -> None:
    tally.rows += batch.num_rows
    for name in batch.schema.names:
        tally.nulls[name] += batch.column(name).null_count
    if "model_version" in batch.schema.names:
        versions = pc.unique(batch.column("model_version").drop_null())
        tally.versions.update(versions.to_pylist())
    for name, value_range in tally.ranges.items():
        value_range.add(batch.column(name))
    if "variant" in batch.schema.names:
        for row in pc.value_counts(batch.column("variant").drop_null()).to_pylist():
            tally.variants[row["values"]] += row["counts"]
    if tally.ids is not None:
        ids = batch.column(id_columns[0])
        tally.id_nulls += ids.null_count
        tally.ids.add(ids.drop_null().to_numpy())
    elif all(c in batch.schema.names for c in id_columns):
        tally.id_batches.append(batch.select(id_columns))
    if tally.score_batches is not None:
        scores = score_column(pa.Table.from_batches([batch]))
        if scores is not None:
            tally.score_batches.append(scores)


def repeated_ids(keys: pa.Table) -> int:
    """Rows of ``keys`` whose id an earlier row has (rows less distinct ids), grouped by pyarrow.

    Text or composite ids come here; one integer id column is counted by the ``Tally``'s
    ``RepeatCounter`` (a byte or 8 bytes a row, where pyarrow's hash ``group_by`` took about 80).
    """
    return keys.num_rows - keys.group_by(keys.column_names).aggregate([]).num_rows


def _served_versions(manifest: dict) -> set[str]:
    """The model versions ``model_version`` may hold: the champion's, or the A/B variants' models'."""
    ab = manifest.get("ab")
    if not ab:
        return {manifest["model"]["version"]}
    versions = {"champion": manifest["model"]["version"]}
    versions.update({c["name"]: c["model"]["version"] for c in manifest.get("challengers", [])})
    return {versions[name] for name in ab["split"]}


def lineup_columns(manifest: dict) -> list[str]:
    """The columns a run with challengers, an ensemble or an A/B split added to the champion's."""
    names = [c["name"] for c in manifest["output"]["columns"]]
    return [n for n in names if n.startswith(("challenger_", "ensemble_")) or n == "variant"]


def _check_lineup(report: Report, tally: Tally, manifest: dict, variant_tolerance: float) -> None:
    """Challenger and ensemble columns: no nulls, probabilities within [0, 1]; the variants' shares."""
    columns = [c for c in lineup_columns(manifest) if c != "variant"]
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
    ab = manifest.get("ab")
    if not ab:
        return
    counts = tally.variants
    rows = max(tally.rows, 1)
    off = []
    for name, share in ab["split"].items():
        seen = counts.get(name, 0) / rows
        # A hash split is a binomial draw: allow four standard deviations on a small partition.
        allowed = max(variant_tolerance, 4 * math.sqrt(share * (1 - share) / rows))
        if abs(seen - share) > allowed:
            off.append(f"{name} {seen:.2%} (split {share:.2%}, +/- {allowed:.2%})")
    unknown = sorted(set(counts) - set(ab["split"]))
    recorded = {name: counts.get(name, 0) for name in ab["split"]} == ab.get("rows")
    detail = ", ".join(f"{n} {counts.get(n, 0) / rows:.2%}" for n in ab["split"])
    problems = (
        off
        + [f"unknown variants {unknown}"] * bool(unknown)
        + ["rows differ from the manifest's"] * (not recorded)
    )
    report.add("variant shares", not problems and tally.nulls["variant"] == 0, "; ".join(problems) or detail)


def _check_drift(
    report: Report,
    score: np.ndarray | None,
    previous: Day | None,
    threshold: float,
    action: str,
) -> None:
    if score is None or previous is None:
        why = "no numeric score column" if score is None and previous else "no earlier published partition"
        report.add("score drift", True, f"skipped: {why}")
        return
    reference = partition_scores(previous)
    if reference is None:
        report.add("score drift", True, f"skipped: {previous.name} has no numeric score column")
        return
    bins = psi_bins(reference, score)
    value = bins.psi
    report.drift = Drift(previous.name, bins, reference, score)
    report.add(
        "score drift",
        value <= threshold,
        f"PSI {value:.3f} against {previous.name} (threshold {threshold})",
        severity=action,
    )


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` against ``expected``, on ``expected``'s deciles (the sum of ``psi_bins``)."""
    return psi_bins(expected, actual, bins).psi


def psi_bins(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> PsiBins:
    """The population stability index of ``actual`` against ``expected``, bin by bin.

    The bins are ``expected``'s quantiles (deciles by default; tied quantiles merge). Empty bins get a
    small floor so that the index stays finite. A constant reference makes one bin: the index is 0
    when ``actual`` is that constant too, else infinite.
    """
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        same = bool(np.allclose(actual, expected[0]))
        one = np.array([1.0])
        return PsiBins(np.array([-np.inf, np.inf]), one, one, np.array([0.0 if same else math.inf]))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return PsiBins(edges, e, a, (a - e) * np.log(a / e))


def score_column(table: pa.Table) -> np.ndarray | None:
    """The score whose distribution is compared: the binary probability, else a numeric prediction."""
    if "probability" in table.column_names and not pa.types.is_list(table.column("probability").type):
        return table.column("probability").to_numpy()
    prediction = table.column("prediction")
    if pa.types.is_floating(prediction.type) or pa.types.is_integer(prediction.type):
        return prediction.to_numpy()
    return None


def partition_dataset(partition_uri: str, names: list[str]) -> ds.Dataset:
    """The partition's files (``staged_paths``) as one pyarrow dataset, on whatever filesystem holds them.

    Raises:
        OutputError: The first file, whose schema the dataset takes, is not readable parquet.
    """
    fs, path = filesystem(partition_uri)
    try:
        return ds.dataset([f"{path}/{name}" for name in names], filesystem=fs, format="parquet")
    except (OSError, pa.ArrowException) as e:
        raise OutputError(f"partition {partition_uri} is not readable parquet: {e}") from e


def partition_footers(dataset: ds.Dataset) -> list[pq.FileMetaData]:
    """Each file's footer, in the dataset's order, read once: its fragments keep it for the scan.

    Raises:
        OutputError: A file is not readable parquet.
    """
    footers = []
    for fragment in dataset.get_fragments():
        try:
            footers.append(fragment.metadata)
        except (OSError, pa.ArrowException) as e:
            raise OutputError(f"staged file {fragment.path} is not readable parquet: {e}") from e
    return footers


def read_batches(dataset: ds.Dataset, wanted: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """The ``wanted`` columns the dataset has, ``READ_BATCH_ROWS`` rows at a time.

    One file and one batch are read ahead at most: memory holds a few batches, whatever the
    partition's size.
    """
    wanted = set(wanted)
    return dataset.to_batches(
        columns=[c for c in dataset.schema.names if c in wanted],
        batch_size=READ_BATCH_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
    )


def day_files(day: Day) -> list[str]:
    """A published day's scores files, relative to its directory: the table's, or those listed there."""
    return list(day.files) if day.files is not None else staged_paths(day.uri)


def partition_batches(day: Day, wanted: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """A day's ``wanted`` columns a batch at a time (``read_batches``); none when it has no files."""
    names = day_files(day)
    return read_batches(partition_dataset(day.uri, names), wanted) if names else iter(())


def partition_scores(day: Day) -> np.ndarray | None:
    """A published day's score column (``score_column``), the only column read."""
    dataset = partition_dataset(day.uri, day_files(day))
    columns = [c for c in ("prediction", "probability") if c in dataset.schema.names]
    return score_column(dataset.to_table(columns=columns)) if columns else None


def _describe(files: list[tuple[str, int]]) -> str:
    return f"{len(files)} files/{sum(n for _, n in files)} rows"


def report_json(report: Report) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_json(), indent=2)
