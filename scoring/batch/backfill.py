"""``scoring backfill``: score a range of dates in order, outside Airflow.

The models (the champion and any challengers) are pinned once for the whole range (an alias moving
mid-backfill changes nothing), dates already published by those model versions are skipped unless
forced, and a failed date does not stop the later ones: the report says which dates succeeded, were
skipped and failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
from dataclasses import dataclass

from scoring.batch.job import run_job
from scoring.batch.session import get_session
from scoring.config import JobConfig
from scoring.dataset.publish import MANIFEST_FILE, is_published
from scoring.dataset.storage import normalize_uri, read_json
from scoring.errors import ScoringError
from scoring.model.resolve import resolve_model

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


def run_backfill(config: JobConfig, start: dt.date, end: dt.date, force: bool = False) -> list[DateResult]:
    """Score every date from ``start`` to ``end`` in order.

    Args:
        config: The job's arguments; its ``date`` is replaced by each date in turn.
        start: First date.
        end: Last date, included.
        force: Rescore dates already published by the same model version.
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
    spark = get_session(config.master)
    results = []
    for date in dates:
        partition = f"{normalize_uri(config.output)}/{config.partition_column}={date.isoformat()}"
        manifest = read_json(f"{partition}/{MANIFEST_FILE}") if is_published(partition) else None
        if manifest and _same_models(manifest, model.version, challengers) and not force:
            results.append(DateResult(date, "skipped", f"already published by version {model.version}"))
            continue
        try:
            published = run_job(dataclasses.replace(pinned, date=date), spark)
        except ScoringError as e:
            results.append(DateResult(date, "failed", str(e)))
            continue
        counts = published["counts"]
        results.append(
            DateResult(date, "scored", f"{counts['scored']} scored, {counts['rejected']} rejected")
        )
    return results


def _same_models(manifest: dict, version: str, challengers: tuple[tuple[str, str], ...]) -> bool:
    """Whether a published partition was scored by this champion version and these pinned challengers."""
    published = [(c["name"], c["model"]["pinned_uri"]) for c in manifest.get("challengers", [])]
    return manifest["model"]["version"] == version and published == list(challengers)


def report(results: list[DateResult]) -> str:
    """One line per date, then the totals."""
    lines = [f"{r.date}  {r.status:<7}  {r.detail}" for r in results]
    totals = {status: sum(r.status == status for r in results) for status in ("scored", "skipped", "failed")}
    lines.append(", ".join(f"{n} {status}" for status, n in totals.items()))
    return "\n".join(lines)
