"""Where a run publishes: a date-partitioned directory (``--output``) or an Iceberg table (``--table``).

Everything that reads published scores (``scoring validate`` and ``report``, the drift check, the cost
estimate's history, ``scoring backfill``'s skip) goes through ``Destination.day``: the date as a reader
sees it now, with the directory holding its files and manifest. In a directory that is
``OUTPUT/date=D`` with its ``_SUCCESS``; in a table it is the run directory whose files the current
snapshot references for the date (``scoring.dataset.table``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from scoring.config import JobConfig
from scoring.dataset.publish import REJECTS_DIR, is_published
from scoring.dataset.storage import filesystem, normalize_uri


@dataclass(frozen=True)
class Day:
    """One published date, as readers see it now.

    Attributes:
        name: ``COLUMN=VALUE``.
        uri: The directory of its scores files, manifest and report.
        rejects_uri: The directory of its rejects files.
        published: Whether readers see it.
        detail: How that was decided, in a few words.
        files: Its scores files relative to ``uri``, as the table references them; None for a
            directory, whose files are those listed under ``uri``.
        rejects: Its rejects files likewise.
    """

    name: str
    uri: str
    rejects_uri: str
    published: bool
    detail: str
    files: tuple[str, ...] | None = None
    rejects: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Destination:
    """A run's output: exactly one of ``directory`` and ``table``.

    Attributes:
        directory: Root of a date-partitioned parquet dataset.
        table: ``NAMESPACE.TABLE`` in ``catalog``.
        catalog: The pyiceberg catalog's name (``scoring.dataset.catalog``); None: the default.
        partition_column: The date's column.
    """

    directory: str | None = None
    table: str | None = None
    catalog: str | None = None
    partition_column: str = "date"
    _tables: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        """The output as users name it."""
        return f"table {self.table}" if self.table else str(self.directory)

    def partition(self, date: dt.date) -> str:
        """``COLUMN=VALUE`` of a date."""
        return f"{self.partition_column}={date.isoformat()}"

    def day(self, date: dt.date) -> Day:
        """The date as readers see it now (``published`` False when they see nothing)."""
        if self.table:
            return self._table_day(date)
        root = normalize_uri(str(self.directory))
        name = self.partition(date)
        published = is_published(f"{root}/{name}")
        detail = "_SUCCESS present" if published else "no _SUCCESS: not published"
        return Day(name, f"{root}/{name}", f"{root}/{REJECTS_DIR}/{name}", published, detail)

    def days_before(self, date: dt.date) -> Iterator[Day]:
        """The published dates before ``date``, latest first."""
        if self.table:
            from scoring.dataset.table import dates_before

            scores, _ = self._open()
            for earlier in dates_before(scores, self.partition_column, date) if scores is not None else ():
                yield self._table_day(earlier)
            return
        root = normalize_uri(str(self.directory))
        fs, path = filesystem(root)
        prefix = f"{self.partition_column}="
        names = [
            info.base_name
            for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix)
        ]
        for name in sorted((n for n in names if n.removeprefix(prefix) < date.isoformat()), reverse=True):
            day = self.day(dt.date.fromisoformat(name.removeprefix(prefix)))
            if day.published:
                yield day

    def previous(self, date: dt.date) -> Day | None:
        """The latest published date before ``date``."""
        return next(self.days_before(date), None)

    def _open(self) -> tuple:
        """The scores and rejects tables, opened once; (None, None) while the table does not exist."""
        from scoring.dataset.table import find_tables

        if not self._tables:
            _, scores, rejects = find_tables(self.catalog, str(self.table))  # none before its first run
            self._tables.update(scores=scores, rejects=rejects)
        return self._tables["scores"], self._tables["rejects"]

    def _table_day(self, date: dt.date) -> Day:
        from scoring.dataset.table import table_day

        scores, rejects = self._open()
        name = self.partition(date)
        if scores is None:
            return Day(name, "", "", False, f"table {self.table} does not exist")
        found = table_day(scores, rejects, self.partition_column, date)
        directories = {os.path.dirname(path) for path in found.files}
        if not found.files:
            return Day(name, "", "", False, f"table {self.table} holds no rows of {date}")
        if len(directories) != 1:
            detail = (
                f"snapshot {found.snapshot_id}: the date's files lie in {len(directories)} run directories"
            )
            return Day(name, "", "", False, detail)
        rejects_dirs = {os.path.dirname(path) for path in found.rejects}
        run = found.summary.get("scoring.run-id", "?")
        return Day(
            name,
            directories.pop(),
            rejects_dirs.pop() if len(rejects_dirs) == 1 else "",
            True,
            f"snapshot {found.snapshot_id} of table {self.table}, run {run}",
            tuple(path.rsplit("/", 1)[-1] for path in found.files),
            tuple(path.rsplit("/", 1)[-1] for path in found.rejects),
        )


def as_destination(output: str | Destination, partition_column: str = "date") -> Destination:
    """A destination from a directory root (or the destination itself)."""
    if isinstance(output, Destination):
        return output
    return Destination(directory=output, partition_column=partition_column)


def destination_of(config: JobConfig) -> Destination:
    """Where a run publishes."""
    return Destination(
        directory=config.output,
        table=config.table,
        catalog=config.catalog,
        partition_column=config.partition_column,
    )
