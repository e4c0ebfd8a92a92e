"""``scoring backfill``: score a range of dates in order, outside Airflow.

The models (the champion and any challengers) are pinned once for the whole range (an alias moving
mid-backfill changes nothing), dates already published by those model versions are skipped unless
forced, and a failed date does not stop the later ones: each date's line says whether it was scored,
skipped or failed (printed as it finishes, with the range's ETA), and a last line counts them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scoring.batch.job import run_job
from scoring.batch.progress import duration_text, remaining_text
from scoring.config import JobConfig
from scoring.dataset.destination import destination_of
from scoring.dataset.manifest import Manifest, read_manifest
from scoring.errors import ScoringError
from scoring.model.resolve import resolve_model

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DateResult:
    """What happened to one date: ``scored``, ``skipped`` or ``failed``, and a few words why."""

    date: dt.date
    status: str
    detail: str


def dates_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end``, both included.

    Raises:
        ScoringError: ``end`` is before ``start``.
    """
    if end < start:
        raise ScoringError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def run_backfill(
    config: JobConfig,
    start: dt.date,
    end: dt.date,
    force: bool = False,
    on_result: Callable[[DateResult, int, int], None] | None = None,
) -> list[DateResult]:
    """Score every date from ``start`` to ``end`` in order.

    Args:
        config: The job's arguments; its ``date`` is replaced by each date in turn.
        start: First date.
        end: Last date, included.
        force: Rescore dates already published by the same model version.
        on_result: Called as each date finishes, with its result, how many dates are done and how
            many there are in all.
    """
    dates = dates_between(start, end)
    with tempfile.TemporaryDirectory(prefix="scoring-backfill-") as download_dir:
        model = resolve_model(config.model_uri, download_dir, config.features)
        challengers = tuple(
            (name, resolve_model(uri, os.path.join(download_dir, name), config.features).pinned_uri)
            for name, uri in config.lineup.challengers
        )
    pinned = dataclasses.replace(
        config, model_uri=model.pinned_uri, lineup=dataclasses.replace(config.lineup, challengers=challengers)
    )
    log.info("backfilling %s dates with %s (%s)", len(dates), model.pinned_uri, config.model_uri)
    results = []
    for date in dates:
        # Each date runs where it can (``run_job``): on local workers, or on the one Spark session
        # that the first date to need it starts and the later ones reuse.
        results.append(_backfill_date(pinned, date, model.version, challengers, force))
        if on_result is not None:
            on_result(results[-1], len(results), len(dates))
    return results


def _backfill_date(
    pinned: JobConfig,
    date: dt.date,
    version: str,
    challengers: tuple[tuple[str, str], ...],
    force: bool,
) -> DateResult:
    """Score one date of the range, or skip it when these models published it already."""
    day = destination_of(pinned).day(date)
    manifest = read_manifest(day.uri) if day.published else None
    if manifest and _same_models(manifest, version, challengers) and not force:
        return DateResult(date, "skipped", f"already published by version {version}")
    try:
        published = run_job(dataclasses.replace(pinned, date=date))
    except ScoringError as e:
        return DateResult(date, "failed", str(e))
    counts = published.counts
    return DateResult(date, "scored", f"{counts.scored} scored, {counts.rejected} rejected")


def _same_models(manifest: Manifest, version: str, challengers: tuple[tuple[str, str], ...]) -> bool:
    """Whether a published partition was scored by this champion version and these pinned challengers."""
    published = [(c.name, c.model.pinned_uri) for c in manifest.challengers]
    return manifest.model.version == version and published == list(challengers)


def date_line(result: DateResult) -> str:
    """``2026-11-01  scored   400 scored, 3 rejected``: one date's result."""
    return f"{result.date}  {result.status:<7}  {result.detail}"


def range_progress(done: int, total: int, elapsed: float) -> str:
    """``2 of 30 dates in 4m10s, ETA 58m20s``: the range so far, its ETA at the mean time per date."""
    return f"{done} of {total} dates in {duration_text(elapsed)}, {remaining_text(done, total, elapsed)}"


def totals_line(results: list[DateResult]) -> str:
    """``28 scored, 1 skipped, 1 failed``."""
    totals = {status: sum(r.status == status for r in results) for status in ("scored", "skipped", "failed")}
    return ", ".join(f"{n} {status}" for status, n in totals.items())


class ProgressPrinter:
    """Prints each date's line as it finishes, with the range's progress and ETA (``on_result``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()

    def __call__(self, result: DateResult, done: int, total: int) -> None:
        """Print ``result``'s line, then how far the range is: ``done`` of ``total`` dates."""
        elapsed = self.clock() - self.started
        print(f"{date_line(result)}  ({range_progress(done, total, elapsed)})", flush=True)
