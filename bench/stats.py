"""What the tables show, from the raw measurements: medians and the figures derived from them.

A measurement is one run's record in ``results.json`` (a dict): ``way``, ``rows``, ``round``,
``status`` (``ok`` or ``failed``), ``wall_s`` and ``peak_rss_bytes`` (None unless ``ok``), ... Only
runs that exited 0 and wrote every row are ``ok``; nothing else is ever timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def median(values: Iterable[float]) -> float | None:
    """The median of ``values``, or None when there are none."""
    values = list(values)
    return statistics.median(values) if values else None


def baseline(floor_s: float | None, raw_s: float | None, cores: int = 2) -> float | None:
    """B, the ideal wall time: Spark's own I/O plus the one-process scoring spread over the cores.

    ``B = floor + raw / cores``.

    Args:
        floor_s: Median wall time of ``floor``.
        raw_s: Median wall time of ``raw`` (one ONNX Runtime thread).
        cores: Cores Spark was given.
    """
    if floor_s is None or raw_s is None:
        return None
    return floor_s + raw_s / cores


def line(points: Sequence[tuple[int, float]]) -> tuple[float, float] | None:
    """Fixed cost (s) and per-row cost (s/row) of the line through ``(rows, seconds)`` points.

    With two sizes, the line through both points; with more, the least-squares line.

    Returns:
        ``(fixed_s, per_row_s)``, or None with fewer than two distinct sizes.
    """
    if len({rows for rows, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(rows for rows, _ in points)
    mean_y = statistics.fmean(seconds for _, seconds in points)
    sxx = sum((rows - mean_x) ** 2 for rows, _ in points)
    sxy = sum((rows - mean_x) * (seconds - mean_y) for rows, seconds in points)
    slope = sxy / sxx
    return mean_y - slope * mean_x, slope


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing (or the denominator is 0)."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Cell:
    """One way at one size.

    Attributes:
        way: The way's name.
        rows: Rows in the input.
        runs: Runs measured.
        ok: Runs that exited 0 and wrote every row.
        walls: Wall times of the ok runs, in round order (s).
        wall_s: Median wall time of the ok runs (s).
        peak_bytes: Median peak memory of the ok runs' process trees.
        reasons: Why the other runs failed.
    """

    way: str
    rows: int
    runs: int
    ok: int
    walls: tuple[float, ...]
    wall_s: float | None
    peak_bytes: float | None
    reasons: tuple[str, ...]

    @property
    def rows_per_s(self) -> float | None:
        """Rows per second of the median run."""
        return ratio(self.rows, self.wall_s)


def cells(measurements: Iterable[Mapping]) -> dict[tuple[str, int], Cell]:
    """The measurements grouped by way and size, with their medians."""
    groups: dict[tuple[str, int], list[Mapping]] = {}
    for m in measurements:
        groups.setdefault((m["way"], m["rows"]), []).append(m)
    result = {}
    for (way, rows), runs in groups.items():
        runs = sorted(runs, key=lambda m: m["round"])
        ok = [m for m in runs if m["status"] == "ok"]
        result[way, rows] = Cell(
            way=way,
            rows=rows,
            runs=len(runs),
            ok=len(ok),
            walls=tuple(m["wall_s"] for m in ok),
            wall_s=median(m["wall_s"] for m in ok),
            peak_bytes=median(m["peak_rss_bytes"] for m in ok),
            reasons=tuple(m["reason"] for m in runs if m["status"] != "ok"),
        )
    return result
