"""How a run publishes what it wrote: into a directory (a journaled swap) or an Iceberg table (commits).

The job drives both alike: ``prepare`` before anything is written, then the scoring pass writes into
``location`` (``staged``, ``staged_rejects``, ``attempts``), then ``publish`` with the run's manifest,
and ``finish`` whatever happened. ``scoring.dataset.publish`` and ``scoring.dataset.table`` say what
each guarantees.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa

from scoring import faults
from scoring.config import JobConfig
from scoring.dataset import table as tables
from scoring.dataset.catalog import open_catalog
from scoring.dataset.manifest import MANIFEST_FILE, Manifest
from scoring.dataset.publish import OutputLocation, discard_run, publish, recover
from scoring.dataset.storage import discard, exists, filesystem, write_json
from scoring.errors import OutputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)


class DirectoryPublisher:
    """Publishes a partition of a date-partitioned directory (``--output``)."""

    def __init__(self, config: JobConfig) -> None:
        self.location = OutputLocation.new_run(
            str(config.output), f"{config.partition_column}={config.partition_value}"
        )
        self.output_path = self.location.root
        self.rejects_path = self.location.final_rejects.rsplit("/", 1)[0]
        self._root_existed = True

    def prepare(self) -> None:
        """Roll back what killed runs of the partition left mid-swap."""
        self._root_existed = exists(self.location.root)
        recover(self.location.root, self.location.partition)

    def publish(self, manifest: Manifest) -> Manifest:
        """Write the manifest and swap the partition in."""
        write_json(f"{self.location.staged}/{MANIFEST_FILE}", manifest.to_json())
        faults.at("before-publish")
        publish(self.location)
        return manifest

    def finish(self, published: bool) -> None:
        """Delete the run's staging (and a root this run made, when it holds no file)."""
        discard_run(self.location, self._root_existed)

    @property
    def where(self) -> str:
        """What the published partition is, for the log."""
        return self.location.final


class TablePublisher:
    """Publishes a date of an Iceberg table and its rejects' table (``--table``)."""

    def __init__(
        self,
        config: JobConfig,
        scores_schema: pa.Schema,
        rejects_schema: pa.Schema,
        catalog: Catalog | None = None,
    ) -> None:
        """Open (or create, or evolve) the scores and rejects tables for a new run.

        Args:
            config: The run's arguments (``table``, ``catalog``, the date).
            scores_schema: The scored rows' schema, the date's column included.
            rejects_schema: The rejected rows' schema likewise.
            catalog: The catalog, when the caller opened it already; else ``config.catalog`` is opened.
        """
        identifier = str(config.table)
        catalog = catalog or open_catalog(config.catalog)
        self.column, self.date = config.partition_column, config.date
        self.scores = tables.ensure_table(catalog, identifier, scores_schema, self.column)
        self.rejects = tables.ensure_table(
            catalog, tables.rejects_identifier(identifier), rejects_schema, self.column
        )
        self.location = tables.TableRun.new_run(
            identifier,
            self.scores.location(),
            self.rejects.location(),
            f"{self.column}={config.partition_value}",
        )
        self.output_path = self.location.staged
        self.rejects_path = self.location.staged_rejects
        self._keep_scores = self._keep_rejects = False

    def prepare(self) -> None:
        """Remove the date's leftovers of killed runs, and take the run's lease."""
        run = self.location
        tables.clean_date(self.scores, self.rejects, run.partition, keep=run.directory_name)
        tables.write_lease(self.location)

    def publish(self, manifest: Manifest) -> Manifest:
        """Write the manifest beside the run's files and commit them: the rejects, then the scores.

        Returns:
            The manifest, with the scores' snapshot under ``output.snapshot_id``.
        """
        from pyiceberg.exceptions import CommitStateUnknownException

        run = self.location
        write_json(run.manifest, manifest.to_json())
        faults.at("before-publish")
        summary = tables.run_summary(run.run_id, self.date, manifest, run.manifest)
        files = [f.name for f in manifest.output.files]
        reject_files = [f.name for f in manifest.rejects.files]
        try:
            self._keep_rejects = True  # from here a commit may reference them
            rejects_snapshot = self._commit(self.rejects, run.staged_rejects, reject_files, summary)
            faults.at("between-commits")
            self._keep_scores = True
            named = "" if rejects_snapshot is None else str(rejects_snapshot)
            snapshot = self._commit(
                self.scores, run.staged, files, {**summary, tables.REJECTS_SNAPSHOT: named}
            )
        except CommitStateUnknownException as e:
            raise OutputError(
                f"table {run.identifier}: the catalog did not say whether the commit of {run.run_id} "
                f"landed; its files are kept (see scoring history): {e}"
            ) from e
        except OutputError:
            self._keep_scores = False  # every commit of the scores failed: nothing references them
            raise
        self._reconcile_rejects(run, reject_files, summary)
        log.info("committed snapshot %s of table %s", snapshot, run.identifier)
        return manifest.with_snapshot(snapshot)

    def _commit(self, table: Table, directory: str, names: list[str], summary: dict[str, str]) -> int | None:
        """Replace the date's files in ``table`` with the run's ``names`` under ``directory``."""
        paths = [f"{directory}/{name}" for name in names]
        return tables.replace_date(
            table, self.column, self.date, lambda: tables.new_data_files(table, paths), summary
        )

    def _reconcile_rejects(self, run: tables.TableRun, names: list[str], summary: dict[str, str]) -> None:
        """Make the rejects table's current files of the date this run's again, if another run's came after.

        Two runs of a date whose commits interleave (this run's rejects, the other's rejects, the
        other's scores, this run's scores) leave the scores this run's but the rejects table's current
        files the other's. Readers pairing by the named snapshot are right either way, but this run's
        rejects would be referenced by an old snapshot only, and ``maintain`` would remove them.
        """
        ours = {f"{run.staged_rejects}/{name}" for name in names}
        self.rejects.refresh()
        current = {f.file_path for f in tables.date_files(self.rejects, self.column, self.date)}
        if current != ours:
            log.warning(
                "table %s: another run's rejects came after this run's; committing them again", run.identifier
            )
            self._commit(self.rejects, run.staged_rejects, names, summary)

    def finish(self, published: bool) -> None:
        """Delete what nothing references: the whole run when it did not commit, else its attempts."""
        run = self.location
        discard(run.attempts)
        if published:
            _delete_markers(run.staged, run.staged_rejects)
            return
        if not self._keep_scores:
            discard(run.staged)
        if not self._keep_rejects:
            discard(run.staged_rejects)

    @property
    def where(self) -> str:
        """What the published date is, for the log."""
        return f"table {self.location.identifier} ({self.location.partition})"


def _delete_markers(*directories: str) -> None:
    """Spark's ``_SUCCESS`` and checksum files beside a committed run's files: nothing reads them."""
    for directory in directories:
        fs, path = filesystem(directory)
        for name in ("_SUCCESS", "._SUCCESS.crc"):
            if fs.get_file_info(f"{path}/{name}").type.name == "File":
                fs.delete_file(f"{path}/{name}")


Publisher = DirectoryPublisher | TablePublisher
