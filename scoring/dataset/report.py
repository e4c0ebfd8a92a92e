"""The run report: ``_report.html`` beside a published partition's manifest, for people.

One self-contained HTML file that opens offline, from a laptop's disk or an S3 console: the plots are
inlined SVG (matplotlib), the style is inline, and nothing is fetched: no script, stylesheet, font or
image from anywhere. Parquet readers ignore it (its name starts with ``_``).

It shows what the manifest recorded (the model, the rows in, scored and rejected by reason, the
duration and throughput, the cost estimate beside the actual duration, the challengers' agreement)
and what ``scoring.dataset.validate`` measured (its checks, and the score distribution against the
previous published partition's with the population stability index bin by bin). No figure is
computed here a second way: the PSI is the validator's, the counts and agreement are the manifest's.
The only data read here are the score columns the plots show, a batch at a time: both days' scores
counted in the histogram's bins, and a fixed-size sample of the challengers' for their scatter plots.
Memory does not grow with the rows.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.columns import SCORE_COLUMNS, VARIANT, challenger_prefix
from scoring.config import PSI_ACTION, PSI_THRESHOLD
from scoring.dataset.destination import Day, Destination, as_destination
from scoring.dataset.manifest import MANIFEST_FILE, Manifest, lineup_lines, read_manifest
from scoring.dataset.reading import partition_batches
from scoring.dataset.storage import write_text
from scoring.dataset.validate import Drift, ValidationReport, score_counts, validate_partition
from scoring.errors import OutputError, ScoringError
from scoring.lineup import CHAMPION

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "_report.html"

log = logging.getLogger(__name__)

# Points drawn per challenger's scatter plot: a seeded sample, enough to see the agreement's shape.
SCATTER_POINTS = 2_000
HISTOGRAM_BINS = 40
_CHAMPION_COLOR, _PREVIOUS_COLOR = "#1f77b4", "#ff7f0e"

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; text-align: left;
     border-bottom: 1px solid #eee; vertical-align: top; } th { background: #f6f6f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #137333; } .warn { color: #b06000; } .fail { color: #c5221f; font-weight: 600; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; }
.verdict.valid { background: #137333; } .verdict.invalid { background: #c5221f; }
.muted { color: #666; } figure { margin: 8px 0; } .plots { display: flex; flex-wrap: wrap; gap: 16px; }
code { font-size: 12px; background: #f4f4f4; padding: 1px 4px; }
"""


def write_report(
    output: str | Destination,
    date: dt.date,
    partition_column: str = "date",
    validation: ValidationReport | None = None,
    psi_threshold: float = PSI_THRESHOLD,
    psi_action: str = PSI_ACTION,
) -> str:
    """Write ``_report.html`` into a published partition, beside its manifest.

    Args:
        output: Root of the output dataset (a local path or ``s3://``), or the destination (a
            directory or an Iceberg table, whose report lies in the published run's directory).
        date: The partition.
        partition_column: The output's partition column.
        validation: The partition's validation, when the caller ran it (the DAG's ``validate_output``);
            otherwise it is run here with ``psi_threshold`` and ``psi_action``.
        psi_threshold: The drift threshold, when the validation is run here.
        psi_action: ``warn`` or ``fail`` above it, when the validation is run here.

    Returns:
        The report's URI.

    Raises:
        OutputError: The partition has no manifest.
    """
    destination = as_destination(output, partition_column)
    day = destination.day(date)
    manifest = read_manifest(day.uri) if day.uri else None
    if manifest is None:
        where = day.uri or f"{day.name} of {destination.label}"
        raise OutputError(f"partition {where}: no {MANIFEST_FILE}, nothing to report")
    if validation is None:
        validation = validate_partition(destination, date, partition_column, psi_threshold, psi_action)
    scores = challenger_scores(day, manifest) if manifest.challengers else {}
    histogram = drift_histogram(validation.drift) if validation.drift else None
    uri = f"{day.uri}/{REPORT_FILE}"
    write_text(uri, render_report(manifest, validation, scores, histogram), "text/html; charset=utf-8")
    return uri


@dataclass(frozen=True)
class Histogram:
    """Both days' scores on ``HISTOGRAM_BINS`` equal bins, as shares of each day's rows.

    Attributes:
        edges: The bins' edges: [0, 1] for probabilities (days compare at a glance), else the range
            both days' scores span.
        previous: The previous day's share of rows per bin.
        current: This day's.
    """

    edges: np.ndarray
    previous: np.ndarray
    current: np.ndarray


def drift_histogram(drift: Drift) -> Histogram | None:
    """The score histogram of the drift's two days, each counted in one more read of its score column.

    Returns:
        None when a day has no score that is a number (all NaN or null).
    """
    lows, highs = (drift.reference.low, drift.scores.low), (drift.reference.high, drift.scores.high)
    if None in lows or None in highs:
        return None
    low, high = min(lows), max(highs)
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0  # probabilities: the whole scale, so days compare at a glance
    edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    shares = []
    for day in (drift.reference_day, drift.day):
        counts = score_counts(day, edges)
        if counts is None:
            return None
        shares.append(counts.counts / max(counts.rows, 1))
    return Histogram(edges, *shares)


def write_report_or_warn(
    output: str | Destination,
    date: dt.date,
    partition_column: str = "date",
    validation: ValidationReport | None = None,
) -> str | None:
    """Write the published partition's report as `write_report` does; a failure is logged, not raised.

    The job and the DAG write the report after publishing: a report that cannot be written (a
    read-only prefix, a full disk, a partition gone) must not turn a good run into a failed one, and
    ``scoring report`` writes it again later.

    Returns:
        The report's URI, or None when it could not be written.
    """
    try:
        uri = write_report(output, date, partition_column, validation)
    except (ScoringError, OSError, pa.ArrowException) as e:
        log.warning("the partition is published, but its report could not be written: %s", e)
        return None
    log.info("report: %s", uri)
    return uri


def challenger_scores(day: Day, manifest: Manifest) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A seeded sample of (champion score, challenger score) pairs per challenger, for the scatter plots.

    The scores are those the agreement figures compare: the positive class's probability, or a
    regressor's prediction (multiclass challengers have no scatter). Under an A/B split only the
    champion's own rows count, as in the agreement figures.

    The partition is read a batch at a time: each row draws a random key and the ``SCATTER_POINTS``
    rows of the smallest keys are kept, a uniform sample for which memory holds one batch and the
    sample, whatever the partition's size.
    """
    prefixes = {c.name: challenger_prefix(c.name) for c in manifest.challengers}
    models = ("", *prefixes.values())  # the champion's columns have no prefix
    wanted = {f"{prefix}{column}" for prefix in models for column in SCORE_COLUMNS}
    rng = np.random.default_rng(0)
    keys = np.empty(0)
    kept: dict[str, np.ndarray] = {}
    for batch in partition_batches(day, {*wanted, VARIANT}):
        if manifest.ab:
            batch = batch.filter(pc.equal(batch.column(VARIANT), CHAMPION))
        scores = {prefix: values for prefix in models if (values := _numeric(batch, prefix)) is not None}
        if "" not in scores:
            return {}  # the champion's labels are classes: nothing to plot against
        keys = np.concatenate([keys, rng.random(batch.num_rows)])
        kept = {prefix: np.concatenate([kept.get(prefix, []), values]) for prefix, values in scores.items()}
        if len(keys) > SCATTER_POINTS:
            smallest = np.argpartition(keys, SCATTER_POINTS)[:SCATTER_POINTS]
            keys, kept = keys[smallest], {prefix: values[smallest] for prefix, values in kept.items()}
    if not len(keys):
        return {}
    order = np.argsort(keys)
    champion = kept[""][order]
    return {name: (champion, kept[prefix][order]) for name, prefix in prefixes.items() if prefix in kept}


def _numeric(batch: pa.RecordBatch, prefix: str) -> np.ndarray | None:
    """A model's comparable score column: its binary probability, else its numeric prediction."""
    for name in (f"{prefix}probability", f"{prefix}prediction"):
        if name in batch.column_names:
            column = batch.column(name)
            if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
                return column.to_numpy(zero_copy_only=False).astype(float)
    return None


def render_report(
    manifest: Manifest,
    validation: ValidationReport,
    challenger_pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    histogram: Histogram | None = None,
) -> str:
    """The report's HTML: a pure function of what was measured and read.

    Args:
        manifest: The partition's manifest.
        validation: Its validation, drift included.
        challenger_pairs: The scatter plots' samples (``challenger_scores``).
        histogram: The drift's score histogram (``drift_histogram``); None: not plotted.
    """
    title = f"{manifest.model.name} v{manifest.model.version}: {manifest.partition}"
    verdict = "valid" if validation.ok else "invalid"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p><span class="verdict {verdict}" data-figure="verdict">{verdict.upper()}</span> '
        f'<span class="muted">run {_e(manifest.run_id)}, '
        f"written {_time(manifest.finished_at)}</span></p>",
        _model_section(manifest),
        _rows_section(manifest),
        _run_section(manifest),
        _drift_section(validation, manifest, histogram),
        _checks_section(validation),
        _lineup_section(manifest, challenger_pairs),
        f'<p class="muted">scoring {_e(manifest.package_version or "?")}, {_e(_ran_on(manifest))}; '
        f"every figure here is the manifest's (<code>{MANIFEST_FILE}</code>) or "
        "<code>scoring validate</code>'s.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


def _ran_on(manifest: Manifest) -> str:
    """What ran the pass: ``Spark 4.3.0``, or local workers where no Spark ran (``executor`` local)."""
    if manifest.resources.executor == "local":
        return "local workers (no Spark)"
    return f"Spark {manifest.spark_version or '?'}"


def _model_section(manifest: Manifest) -> str:
    model = manifest.model
    scores = model.scores
    classes = scores.get("classes")
    rows = [
        ("name", model.name),
        ("version", model.version),
        ("pinned", model.pinned_uri),
        ("given as", model.uri),
        ("run", model.run_id or "none"),
        ("backend", model.backend),
        ("features", ", ".join(f.name for f in model.features)),
        ("scores", ", ".join(f"{k}: {v}" for k, v in (scores.get("methods") or {}).items()) or "none"),
        ("probability", scores.get("probability") or "none"),
        ("prediction type", scores.get("prediction_type")),
    ]
    if classes:
        rows.append(("classes", ", ".join(map(str, classes))))
    return "<h2>Model</h2>" + _table(None, [(_e(k), _e(v)) for k, v in rows])


def _rows_section(manifest: Manifest) -> str:
    counts = manifest.counts
    total = max(counts.input, 1)
    rows = [
        ("input rows", _count(counts.input, "input"), ""),
        ("scored", _count(counts.scored, "scored"), f"{counts.scored / total:.2%}"),
        ("rejected", _count(counts.rejected, "rejected"), f"{counts.rejected / total:.2%}"),
    ]
    skipped = manifest.input.skipped_files
    reasons = manifest.rejects.by_reason
    parts = ["<h2>Rows</h2>", _table(None, rows, numeric=True)]
    if reasons:
        parts.append("<p>Rejected rows by reason (<code>reject_reason</code>: the first check failed):</p>")
        parts.append(
            _table(
                ("reason", "rows", "share of input"),
                [(_e(r), _count(n, f"rejected:{r}"), f"{n / total:.3%}") for r, n in reasons.items()],
                numeric=True,
            )
        )
    parts.append(
        f'<p class="muted">input {_e(manifest.input.path)}: {manifest.input.files} files'
        + (f", {len(skipped)} unreadable files skipped" if skipped else "")
        + f"; rejects in {_e(manifest.rejects.path)}</p>"
    )
    return "".join(parts)


def _run_section(manifest: Manifest) -> str:
    seconds = manifest.duration_seconds
    cores = manifest.resources.cores
    throughput = manifest.rows_per_second
    rows = [
        ("started", _time(manifest.started_at)),
        ("finished", _time(manifest.finished_at)),
        ("duration", f'<span data-figure="seconds">{seconds:,.1f}</span> s'),
        ("throughput", f'<span data-figure="rows-per-second">{throughput:,.0f}</span> rows/s'),
    ]
    if cores:
        rows.append(("cores", f"{cores} ({throughput / cores:,.0f} rows/s per core)"))
    cost = manifest.cost
    if cost:
        estimate = cost["estimate"]
        rows.append(("estimated duration", f"{estimate.get('job_seconds', 0):,.0f} s (pre-flight)"))
        if "job_seconds_ratio" in cost:
            rows.append(("actual / estimated", f"{cost['job_seconds_ratio']:.2f}"))
        if estimate.get("usd") is not None:
            rows.append(("estimated cost", f"${estimate['usd']:,.2f}"))
        if cost.get("actual_usd") is not None:
            rows.append(("cost at the actual duration", f"${cost['actual_usd']:,.2f}"))
    return "<h2>Run</h2>" + _table(None, rows)


def _drift_section(validation: ValidationReport, manifest: Manifest, histogram: Histogram | None) -> str:
    drift = validation.drift
    if drift is None:
        check = next((c for c in validation.checks if c.name == "score drift"), None)
        why = check.detail if check else "not measured"
        return f"<h2>Score distribution</h2><p>No comparison: {_e(why)}.</p>"
    previous_label = drift.previous.split("=", 1)[-1]
    current_label = manifest.partition.value
    bins = drift.bins
    plots = [_svg(_contributions(bins.contributions), "psi-bins")]
    if histogram is not None:
        plots.insert(0, _svg(_histogram(histogram, previous_label, current_label), "histogram"))
    table = _table(
        ("bin", "scores from", "to", f"{previous_label} share", f"{current_label} share", "PSI contribution"),
        [
            (
                str(i + 1),
                _bound(bins.edges[i]),
                _bound(bins.edges[i + 1]),
                f"{e:.2%}",
                f"{a:.2%}",
                f"{c:.3g}",
            )
            for i, (e, a, c) in enumerate(zip(bins.expected, bins.actual, bins.contributions, strict=True))
        ],
        numeric=True,
    )
    method = drift.method()
    return (
        "<h2>Score distribution</h2>"
        f'<p>Population stability index against {_e(drift.previous)}: <b data-figure="psi" '
        f'data-value="{bins.psi!r}">{bins.psi:.4f}</b> (0.1: some shift; 0.2: a significant one), on '
        f"the earlier partition's deciles ({drift.reference.rows:,} rows then, "
        f"{drift.scores.rows:,} now). Deciles: {_e(method['deciles'])}, rank error "
        f'<span data-figure="rank-error">{method["rank_error"]:g}</span>; both days\' rows counted '
        "in them exactly.</p>"
        f'<div class="plots">{"".join(plots)}</div>{table}'
    )


def _checks_section(validation: ValidationReport) -> str:
    rows = [
        (f'<span class="{c.status}">{c.status.upper()}</span>', _e(c.name), _e(c.detail))
        for c in validation.checks
    ]
    return "<h2>Checks (<code>scoring validate</code>)</h2>" + _table(("status", "check", "found"), rows)


def _lineup_section(manifest: Manifest, pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str:
    challengers = manifest.challengers
    if not challengers and not manifest.ab and not manifest.ensemble:
        return ""
    threshold = manifest.decision_threshold
    names = ("pearson", "spearman", "mean_abs_diff", "p99_abs_diff", "flip_share", "rows")
    rows = []
    for challenger in challengers:
        figures = challenger.agreement or {}
        cells = [_e(challenger.name), _e(challenger.model.pinned_uri)]
        for name in names:
            value = figures.get(name)
            cell = "n/a" if value is None else (f"{value:,}" if name == "rows" else f"{value:.4g}")
            cells.append(f'<span data-figure="{_e(challenger.name)}:{name}">{cell}</span>')
        rows.append(tuple(cells))
    parts = [
        "<h2>Challengers</h2>",
        f"<p>Each challenger against the champion on the same rows; <code>flip_share</code>: the share "
        f"of rows on the other side of the decision threshold {threshold:g}.</p>",
        _table(("challenger", "model", *names), rows, numeric=True),
    ]
    plots = [
        _svg(_scatter(champion, values, name, threshold), f"scatter-{name}")
        for name, (champion, values) in pairs.items()
    ]
    if plots:
        parts.append(f'<div class="plots">{"".join(plots)}</div>')
    extra = [line for line in lineup_lines(manifest) if not line.startswith("challenger ")]
    if extra:
        parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in extra) + "</ul>")
    return "".join(parts)


def _histogram(histogram: Histogram, previous: str, current: str) -> Figure:
    figure, axes = _figure()
    edges = histogram.edges
    for shares, label, color in (
        (histogram.previous, previous, _PREVIOUS_COLOR),
        (histogram.current, current, _CHAMPION_COLOR),
    ):
        # Each bin's share as the weight of one point at its left edge: the bars of the day's rows.
        axes.hist(
            edges[:-1], edges, weights=shares, histtype="stepfilled", alpha=0.35, color=color, label=label
        )
        axes.hist(edges[:-1], edges, weights=shares, histtype="step", color=color)
    axes.set_xlabel("score")
    axes.set_ylabel("share of rows")
    axes.set_title("score distribution")
    axes.legend()
    return figure


def _contributions(contributions: np.ndarray) -> Figure:
    figure, axes = _figure()
    finite = np.where(np.isfinite(contributions), contributions, 0.0)
    axes.bar(np.arange(1, len(finite) + 1), finite, color=_CHAMPION_COLOR)
    axes.set_xlabel("bin (earlier partition's deciles)")
    axes.set_ylabel("PSI contribution")
    axes.set_title("population stability index by bin")
    return figure


def _scatter(champion: np.ndarray, challenger: np.ndarray, name: str, threshold: float) -> Figure:
    figure, axes = _figure()
    axes.scatter(champion, challenger, s=4, alpha=0.35, color=_CHAMPION_COLOR, linewidths=0)
    low = float(min(champion.min(), challenger.min()))
    high = float(max(champion.max(), challenger.max()))
    axes.plot([low, high], [low, high], color="#888", linewidth=1)
    if low >= 0.0 and high <= 1.0:
        axes.axvline(threshold, color="#c5221f", linewidth=0.8, linestyle="--")
        axes.axhline(threshold, color="#c5221f", linewidth=0.8, linestyle="--")
    axes.set_xlabel("champion")
    axes.set_ylabel(name)
    axes.set_title(f"{name} against the champion ({len(champion):,} rows sampled)")
    return figure


def _figure() -> tuple[Figure, object]:
    from matplotlib.figure import Figure

    # A Figure, not pyplot: no global state, no GUI backend, safe in a worker thread.
    figure = Figure(figsize=(5.2, 3.4), dpi=100, layout="constrained")
    return figure, figure.subplots()


_SVG_NOISE = re.compile(r'\s+xmlns(:\w+)?="[^"]*"|<metadata>.*?</metadata>', re.DOTALL)


def _svg(figure: Figure, name: str) -> str:
    """The figure as inline SVG: text as text (no glyph outlines), no namespace URLs, no metadata."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    svg = _SVG_NOISE.sub("", text[text.index("<svg") :])
    # HTML parses inline SVG in its own namespace; xlink:href needs no declaration there.
    return f'<figure data-plot="{_e(name)}">{svg}</figure>'


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: bool = False) -> str:
    """An HTML table of cells that are HTML already (escaped by the caller).

    Without a header, each row's first cell is its header. With ``numeric``, every cell after the
    first is right-aligned.
    """
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    lines = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="n"' if numeric and i > 0 else ""
            tag = "th" if header is None and i == 0 else "td"
            cells.append(f"<{tag}{css}>{cell}</{tag}>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(lines)}</table>"


def _count(value: int, name: str) -> str:
    return f'<span data-figure="{_e(name)}">{value:,}</span>'


def _time(moment: dt.datetime) -> str:
    """A moment from the manifest, to the second, in UTC."""
    return _e(f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")


def _bound(edge: float) -> str:
    return "-inf" if edge == -math.inf else "+inf" if edge == math.inf else f"{edge:.4f}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
