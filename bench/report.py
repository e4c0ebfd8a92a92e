"""The Markdown report of a benchmark run, from its ``results.json`` content.

``render`` gives a section of BENCHMARKS.md: ``results`` (every way measured) or ``lineup`` (the same
tables, for a run of the several-models-in-one-pass ways, kept apart so that such a run leaves the
results of the other ways alone); ``update_file`` puts it between that section's markers of an existing
file (or writes it alone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench import stats
from bench.ways import GPU_WAYS, WAYS

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
LINEUP_START = "<!-- bench:lineup:start -->"
LINEUP_END = "<!-- bench:lineup:end -->"
SECTIONS = {"results": (START, END), "lineup": (LINEUP_START, LINEUP_END)}
# Issue 14: the champion plus two challengers in one pass costs at most this much the champion alone.
LINEUP_GOAL = 1.5
# The lineup's one pass, the champion alone, and the solo runs of the two challengers.
LINEUP, CHAMPION_ALONE, SOLO_CHALLENGERS = "ours_lineup", "ours_onnx", ("ours_pyfunc", "ours_retrained")
MIB = 1024 * 1024
DASH = "-"
# Issue 33: the job against the peers: (ours, peer, at most this ratio, at which sizes: None for all).
PEER_GOALS = (
    ("ours_onnx", "daft", 1.0, None),
    ("ours_onnx", "raw2", 1.25, 10_000_000),
    ("ours_pyfunc", "daft_sklearn", 1.5, None),
)


def seconds(value: float | None) -> str:
    """Seconds with one decimal."""
    return DASH if value is None else f"{round(value, 1) + 0.0:.1f}"  # + 0.0: never "-0.0"


def times(value: float | None) -> str:
    """A ratio as ``x1.23``."""
    return DASH if value is None else f"x{value:.2f}"


def count(value: float | None) -> str:
    """A whole number with thousands separators."""
    return DASH if value is None else f"{value:,.0f}"


def mib(value: float | None) -> str:
    """Bytes as whole MiB."""
    return DASH if value is None else f"{value / MIB:,.0f}"


def runs_ok(cell: stats.Cell) -> str:
    """``2/3``, with ``FAILED`` in front when any run failed."""
    text = f"{cell.ok}/{cell.runs}"
    return text if cell.ok == cell.runs else f"FAILED {text}"


def walls(cell: stats.Cell) -> str:
    """Every ok run's wall time, then why the others failed."""
    parts = [f"{w:.1f}" for w in cell.walls] + [f"failed: {reason}" for reason in cell.reasons]
    return ", ".join(parts).replace("|", "/")


def table(header: Sequence[str], right: Sequence[bool], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table.

    Args:
        header: Column titles.
        right: Per column, whether it is right-aligned (numbers).
        body: The rows' cells, already formatted.
    """
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if r else "---" for r in right) + " |",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def size_table(cells: Mapping[tuple[str, int], stats.Cell], rows: int, cores: int) -> list[str]:
    """The table of every way at one size, with B and the ratios to B and to ``ours_onnx``."""
    floor, raw, ours = (cells.get((name, rows)) for name in ("floor", "raw", "ours_onnx"))
    b = stats.baseline(floor and floor.wall_s, raw and raw.wall_s, cores)
    ours_s = ours and ours.wall_s
    body = [
        [
            name,
            runs_ok(cell),
            seconds(cell.wall_s),
            count(cell.rows_per_s),
            times(stats.ratio(cell.wall_s, b)),
            times(stats.ratio(cell.wall_s, ours_s)),
            mib(cell.peak_bytes),
            walls(cell),
        ]
        for name in WAYS
        if not WAYS[name].subset and (cell := cells.get((name, rows))) is not None
    ]
    header = [
        "way",
        "runs ok",
        "wall (s), median",
        "rows/s",
        "x B",
        "x ours_onnx",
        "peak MiB, median",
        "walls (s)",
    ]
    note = "" if b is not None else " (needs floor and raw)"
    return [
        f"### {rows:,} rows",
        "",
        f"B = floor + raw / {cores} = {seconds(b)} s{note}",
        "",
        *table(header, [False, False, True, True, True, True, True, False], body),
    ]


def scaling_table(cells: Mapping[tuple[str, int], stats.Cell], sizes: Sequence[int]) -> list[str]:
    """Fixed cost and per-row cost of each way (a line through its medians), and its memory growth."""
    small, big = min(sizes), max(sizes)
    fit = "through the two medians" if len(sizes) == 2 else "fitted to the medians (least squares)"
    body = []
    for name in WAYS:
        points = [(n, cells[name, n].wall_s) for n in sizes if (name, n) in cells]
        if not points:
            continue
        fitted = stats.line([(n, s) for n, s in points if s is not None])
        fixed, per_row = fitted if fitted else (None, None)
        big_peak = cells[name, big].peak_bytes if (name, big) in cells else None
        small_peak = cells[name, small].peak_bytes if (name, small) in cells else None
        micro = DASH if per_row is None else f"{per_row * 1e6:.2f}"
        body.append([name, seconds(fixed), micro, times(stats.ratio(big_peak, small_peak))])
    header = ["way", "fixed (s)", "per row (us)", f"peak memory {big:,} / {small:,} rows"]
    return [f"### Fixed and per-row cost (a line {fit})", "", *table(header, [False, True, True, True], body)]


def subset_table(cells: Mapping[tuple[str, int], stats.Cell]) -> list[str]:
    """The row-at-a-time UDF on its own small dataset: rows/s only, not comparable by wall time."""
    found = [cell for (name, _), cell in sorted(cells.items()) if name in WAYS and WAYS[name].subset]
    if not found:
        return []
    body = [
        [
            f"{cell.way} ({cell.rows:,}-row subset)",
            runs_ok(cell),
            seconds(cell.wall_s),
            count(cell.rows_per_s),
            mib(cell.peak_bytes),
            walls(cell),
        ]
        for cell in found
    ]
    header = ["way", "runs ok", "wall (s), median", "rows/s", "peak MiB, median", "walls (s)"]
    return [
        "### Row-at-a-time UDF (its own small dataset: compare its rows/s, not its wall time)",
        "",
        *table(header, [False, False, True, True, True, False], body),
    ]


def gpu_section(results: Mapping, cells: Mapping[tuple[str, int], stats.Cell]) -> list[str]:
    """The ``--gpu`` comparison, or why it was not measured."""
    title = ["### GPU: an MLP scored by the raw way, CUDA vs CPU", ""]
    if results["gpu"]["status"] != "measured":
        return [*title, f"{results['gpu']['status']}."]
    body = []
    for rows in results["settings"]["sizes"]:
        cpu = cells.get(("mlp_raw_cpu", rows))
        for name in GPU_WAYS:
            cell = cells.get((name, rows))
            if cell is not None:
                body.append(
                    [
                        name,
                        f"{rows:,}",
                        runs_ok(cell),
                        seconds(cell.wall_s),
                        count(cell.rows_per_s),
                        times(stats.ratio(cell.wall_s, cpu and cpu.wall_s)),
                        mib(cell.peak_bytes),
                    ]
                )
    header = ["way", "rows", "runs ok", "wall (s), median", "rows/s", "x mlp_raw_cpu", "peak MiB, median"]
    return [*title, *table(header, [False, True, False, True, True, True, True], body)]


def peers_table(cells: Mapping[tuple[str, int], stats.Cell], sizes: Sequence[int]) -> list[str]:
    """The job against the peers at each size: the ratios of the medians, and issue 33's goals.

    A goal with a size (``raw2`` at 10,000,000 rows) is judged only at that size.
    """
    body = []
    for ours, peer, goal, at in PEER_GOALS:
        for rows in sizes:
            mine, theirs = cells.get((ours, rows)), cells.get((peer, rows))
            if mine is None or theirs is None:
                continue
            value = stats.ratio(mine.wall_s, theirs.wall_s)
            if value is None:
                verdict = "not judged: a way failed"
            elif at is not None and rows != at:
                verdict = f"goal at {at:,} rows only"
            else:
                verdict = "met" if value <= goal else f"not met, by x{value / goal:.2f}"
            body.append(
                [
                    f"{ours} / {peer}",
                    f"{rows:,}",
                    seconds(mine.wall_s),
                    seconds(theirs.wall_s),
                    times(value),
                    f"at most x{goal:.2f}" + (f" at {at:,} rows" if at is not None else ""),
                    verdict,
                ]
            )
    if not body:
        return []
    header = ["job / peer", "rows", "job (s)", "peer (s)", "ratio", "goal (issue 33)", "verdict"]
    return [
        "### The job against the peers (ratios of the medians)",
        "",
        *table(header, [False, True, True, True, True, False, False], body),
    ]


def lineup_table(
    cells: Mapping[tuple[str, int], stats.Cell], sizes: Sequence[int], measurements: Sequence[Mapping]
) -> list[str]:
    """The one pass of the champion and two challengers next to the champion alone, and to three jobs.

    The ratio is of the medians; "per round" gives each round's own ratio, of two runs made minutes
    apart, which a shared machine's slow spells disturb less. The three separate jobs are the sum of the
    medians of the champion's and each challenger's solo run, when all three were measured.
    """
    body, verdicts = [], []
    for rows in sizes:
        lineup, alone = cells.get((LINEUP, rows)), cells.get((CHAMPION_ALONE, rows))
        if lineup is None:
            continue
        alone_s = alone and alone.wall_s
        solo = [cells.get((name, rows)) for name in (CHAMPION_ALONE, *SOLO_CHALLENGERS)]
        three = sum(c.wall_s for c in solo) if all(c and c.wall_s is not None for c in solo) else None
        walls = {
            (m["way"], m["round"]): m["wall_s"]
            for m in measurements
            if m["rows"] == rows and m["status"] == "ok" and m["way"] in (LINEUP, CHAMPION_ALONE)
        }
        rounds = sorted({r for _, r in walls})
        per_round = [
            times(walls[LINEUP, r] / walls[CHAMPION_ALONE, r])
            for r in rounds
            if (LINEUP, r) in walls and (CHAMPION_ALONE, r) in walls
        ]
        one_pass = stats.ratio(lineup.wall_s, alone_s)
        body.append(
            [
                f"{rows:,}",
                seconds(alone_s),
                seconds(lineup.wall_s),
                times(one_pass),
                ", ".join(per_round) or DASH,
                seconds(three),
                times(stats.ratio(three, alone_s)),
                times(stats.ratio(lineup.wall_s, three)),
            ]
        )
        if one_pass is not None:
            met = "met" if one_pass <= LINEUP_GOAL else f"not met, by x{one_pass / LINEUP_GOAL:.2f}"
            verdicts.append(
                f"- {rows:,} rows: one pass of the champion + 2 challengers = {times(one_pass)} the champion "
                f"alone (issue 14: at most x{LINEUP_GOAL:.2f}: {met})"
                + (
                    f"; three separate jobs = {times(stats.ratio(three, alone_s))}."
                    if three is not None
                    else "."
                )
            )
    if not body:
        return []
    header = [
        "rows",
        "champion alone: ours_onnx (s)",
        "one pass: ours_lineup (s)",
        "x champion alone",
        "per round",
        "3 jobs: ours_onnx + ours_pyfunc + ours_retrained (s)",
        "x champion alone",
        "one pass / 3 jobs",
    ]
    return [
        "### Several models in one pass: the champion + 2 challengers vs the champion alone",
        "",
        *table(header, [True, True, True, True, False, True, True, True], body),
        "",
        *verdicts,
    ]


def render(results: Mapping, section: str = "results") -> str:
    """A section: how it was made, a table per size, the scaling, the peers, the lineup, the subset, the GPU.

    Args:
        results: The content of ``results.json``.
        section: ``results``, or ``lineup``: between the lineup markers, without the GPU section.
    """
    start, end = SECTIONS[section]
    machine = results["machine"]
    settings = results["settings"]
    cells = stats.cells(results["measurements"])
    started = dt.datetime.fromisoformat(results["started_at"])
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    memory = machine["memory_bytes"] / 1024**3
    lines = [
        start,
        f"Made by `{results['command']}` on {started:%Y-%m-%d} "
        f"({started:%H:%M} UTC, {results['duration_s'] / 60:.0f} min).",
        "",
        f"Machine: {machine['cores']} cores, {memory:.1f} GiB, {machine['platform']}; {versions}. "
        f"Load average before the run: {machine['load_before']}, after: {machine['load_after']}.",
        "",
        f"Medians of {settings['rounds']} round(s). Each run is one whole process, start-up included; "
        f"Spark on `{settings['master']}`; peak memory is the largest RSS sum of the process tree.",
        "",
    ]
    sizes = [n for n in settings["sizes"] if any((w, n) in cells for w in WAYS if not WAYS[w].subset)]
    for rows in sizes:
        lines += [*size_table(cells, rows, settings["cores"]), ""]
    if len(sizes) >= 2:
        lines += [*scaling_table(cells, sizes), ""]
    peers = peers_table(cells, sizes)
    if peers:
        lines += [*peers, ""]
    several = lineup_table(cells, sizes, results["measurements"])
    if several:
        lines += [*several, ""]
    subset = subset_table(cells)
    if subset:
        lines += [*subset, ""]
    if section == "results":
        lines += gpu_section(results, cells)
    elif lines[-1] == "":
        lines.pop()
    return "\n".join([*lines, end]) + "\n"


def update_file(path: Path, text: str, section: str = "results") -> None:
    """Put ``text`` between the markers of ``section`` in ``path`` (see ``put_section``)."""
    put_section(path, *SECTIONS[section], text)


def put_section(path: Path, start: str, end: str, section: str) -> None:
    """Put ``section`` (markers included) between the lines ``start`` and ``end`` of ``path``.

    A marker counts only as a line of its own, so prose that quotes it is left alone. Without both
    markers the section is appended (a missing file is created with it).
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = re.search(rf"^{re.escape(start)}$.*?^{re.escape(end)}$\n?", text, flags=re.M | re.S)
    if found:
        text = text[: found.start()] + section.rstrip("\n") + "\n" + text[found.end() :]
    else:
        text += ("\n" if text and not text.endswith("\n") else "") + section
    path.write_text(text, encoding="utf-8")


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that made a run, as it can be typed again: ``python -m MODULE ARGS``."""
    executable = Path(sys.executable)
    with contextlib.suppress(ValueError):
        executable = executable.relative_to(Path.cwd())
    return shlex.join([str(executable), "-m", module, *argv])


def write_json(path: Path, content: dict) -> None:
    """Write ``content`` whole or not at all: to a partial file, then renamed over ``path``."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(content, indent=2, default=str), encoding="utf-8")
    partial.replace(path)
