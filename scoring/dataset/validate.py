"""Validating a published partition: ``scoring validate``, also called by the DAG.

Reads only the partition's footers and a few columns (ids, scores, model version) through
``pyarrow.fs``, so it runs wherever the output is reachable (a local disk, S3) without Spark.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from scoring.dataset.publish import MANIFEST_FILE, REJECTS_DIR, is_published, staged_files
from scoring.dataset.storage import filesystem, normalize_uri, read_json
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
    output: str,
    date: dt.date,
    partition_column: str = "date",
    psi_threshold: float = 0.2,
    psi_action: str = WARN,
    variant_tolerance: float = 0.01,
) -> Report:
    """Check one published partition against its manifest and its predecessor.

    Args:
        output: Root of the output dataset.
        date: The partition to check.
        partition_column: The output's partition column.
        psi_threshold: Population stability index above which the score distribution has drifted
            from the previous published partition's (0.1: some shift; 0.2: a significant one).
        psi_action: ``warn`` or ``fail`` when the drift is above the threshold.
        variant_tolerance: How far (a share, 0.01: one percentage point) each A/B variant's share of
            the rows may be from its split, at least (a small partition is allowed four standard
            deviations of a binomial draw).

    Returns:
        The report; ``report.ok`` is False when any check failed.
    """
    root = normalize_uri(output)
    partition = f"{partition_column}={date.isoformat()}"
    final = f"{root}/{partition}"
    report = Report(final)
    published = is_published(final)
    report.add("published", published, "_SUCCESS present" if published else "no _SUCCESS: not published")
    manifest = read_json(f"{final}/{MANIFEST_FILE}")
    problem = f"no {MANIFEST_FILE}" if manifest is None else _manifest_problem(manifest)
    if not report.add("manifest", problem is None, problem or f"run {manifest['run_id']}"):
        return report

    files = staged_files(final)
    listed = [(f["name"], f["rows"]) for f in manifest["output"]["files"]]
    found = f"{len(files)} files, {sum(n for _, n in files)} rows in footers"
    report.add(
        "files", files == listed, found if files == listed else f"{found}; manifest lists {_describe(listed)}"
    )
    _check_counts(report, manifest, files, staged_files(f"{root}/{REJECTS_DIR}/{partition}"))
    if not files:
        return report
    schema, table = read_partition(final, files, manifest)
    _check_schema(report, schema, manifest)
    _check_values(report, table, manifest)
    _check_lineup(report, table, manifest, variant_tolerance)
    _check_drift(report, table, root, partition_column, date, psi_threshold, psi_action)
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


def _check_values(report: Report, table: pa.Table, manifest: dict) -> None:
    expected = _served_versions(manifest)
    versions = set(pc.unique(table.column("model_version")).to_pylist())
    report.add(
        "model version",
        bool(versions) and versions <= expected,
        f"{sorted(versions)} (manifest: {', '.join(sorted(expected))})",
    )

    nulls = table.column("prediction").null_count
    report.add("predictions", nulls == 0, f"{nulls} null predictions")

    if "probability" in table.column_names:
        in_range, detail = _probabilities(table.column("probability"))
        report.add("probabilities", in_range, detail)

    ids = manifest["arguments"]["id_columns"]
    repeated = repeated_ids(table.select(ids))
    report.add("ids unique", repeated == 0, f"{repeated} repeated ids ({', '.join(ids)})")


def repeated_ids(keys: pa.Table) -> int:
    """Rows of ``keys`` whose id an earlier row has (rows less distinct ids).

    One integer id column without nulls is sorted as an int64 array: 8 bytes a row, where pyarrow's
    hash ``group_by`` took about 80 (786 MB at 10,000,000 rows). Other ids are grouped by pyarrow.
    """
    if keys.num_columns == 1:
        column = keys.column(0)
        kind = column.type
        if pa.types.is_integer(kind) and kind != pa.uint64() and column.null_count == 0:
            values = column.to_numpy().astype(np.int64, copy=False)
            # One chunk comes back as a read-only view of Arrow's buffer; sorting needs its own copy.
            return sorted_repeats(values if values.flags.writeable else values.copy())
    return keys.num_rows - keys.group_by(keys.column_names).aggregate([]).num_rows


def sorted_repeats(ids: np.ndarray) -> int:
    """How many values of ``ids`` equal the one before them once sorted; sorts ``ids`` in place."""
    ids.sort()
    return int(np.count_nonzero(ids[1:] == ids[:-1]))


def _probabilities(column: pa.ChunkedArray) -> tuple[bool, str]:
    """Whether a probability column (or array column) has no nulls and stays within [0, 1]."""
    if pa.types.is_list(column.type):
        column = pc.list_flatten(column)
    low, high = pc.min(column).as_py(), pc.max(column).as_py()
    in_range = column.null_count == 0 and low is not None and low >= 0.0 and high <= 1.0
    return in_range, f"min {low}, max {high}, {column.null_count} null"


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


def _check_lineup(report: Report, table: pa.Table, manifest: dict, variant_tolerance: float) -> None:
    """Challenger and ensemble columns: no nulls, probabilities within [0, 1]; the variants' shares."""
    columns = [c for c in lineup_columns(manifest) if c != "variant"]
    if columns:
        problems = []
        for name in columns:
            column = table.column(name)
            if name.endswith("_probability"):
                in_range, detail = _probabilities(column)
                if not in_range:
                    problems.append(f"{name}: {detail}")
            elif column.null_count:
                problems.append(f"{name}: {column.null_count} null")
        report.add(
            "challenger columns",
            not problems,
            "; ".join(problems) if problems else f"{len(columns)} columns, no nulls, probabilities in [0, 1]",
        )
    ab = manifest.get("ab")
    if not ab:
        return
    variants = table.column("variant")
    counts = {row["values"]: row["counts"] for row in pc.value_counts(variants).to_pylist()}
    rows = max(table.num_rows, 1)
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
    report.add("variant shares", not problems and variants.null_count == 0, "; ".join(problems) or detail)


def _check_drift(
    report: Report,
    table: pa.Table,
    root: str,
    partition_column: str,
    date: dt.date,
    threshold: float,
    action: str,
) -> None:
    score = score_column(table)
    previous = previous_partition(root, partition_column, date)
    if score is None or previous is None:
        why = "no numeric score column" if score is None else "no earlier published partition"
        report.add("score drift", True, f"skipped: {why}")
        return
    manifest = read_json(f"{root}/{previous}/{MANIFEST_FILE}")
    _, previous_table = read_partition(f"{root}/{previous}", staged_files(f"{root}/{previous}"), manifest)
    reference = score_column(previous_table)
    bins = psi_bins(reference, score)
    value = bins.psi
    report.drift = Drift(previous, bins, reference, score)
    report.add(
        "score drift",
        value <= threshold,
        f"PSI {value:.3f} against {previous} (threshold {threshold})",
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


def previous_partition(root: str, partition_column: str, date: dt.date) -> str | None:
    """The latest published partition before ``date``."""
    fs, path = filesystem(root)
    names = [
        info.base_name
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{partition_column}=")
    ]
    earlier = sorted(n for n in names if n.split("=", 1)[1] < date.isoformat())
    published = [n for n in earlier if is_published(f"{root}/{n}")]
    return published[-1] if published else None


def read_partition(
    partition_uri: str, files: list[tuple[str, int]], manifest: dict
) -> tuple[pa.Schema, pa.Table]:
    """The partition's full schema, and only the columns the checks need."""
    fs, path = filesystem(partition_uri)
    wanted = {*manifest["arguments"]["id_columns"], "prediction", "probability", "model_version"}
    wanted.update(lineup_columns(manifest))
    dataset = ds.dataset([f"{path}/{name}" for name, _ in files], filesystem=fs, format="parquet")
    return dataset.schema, dataset.to_table(columns=[c for c in dataset.schema.names if c in wanted])


def _describe(files: list[tuple[str, int]]) -> str:
    return f"{len(files)} files/{sum(n for _, n in files)} rows"


def report_json(report: Report) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_json(), indent=2)
