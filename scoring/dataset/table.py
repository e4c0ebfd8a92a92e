"""Scores as an Apache Iceberg table: one catalog commit publishes a date, on a disk or on S3.

``--table NAMESPACE.TABLE`` publishes to two tables of the catalog (``scoring.dataset.catalog``):
the scores, and ``NAMESPACE.TABLE__rejects``, both partitioned by identity on the date column. A run
writes its files once, straight under the table's location, in a directory of its own::

    LOCATION/data/date=2026-11-01/run-<id>/part-*.parquet     the run's scores
    LOCATION/data/date=2026-11-01/run-<id>/_manifest.json     what scored them
    LOCATION/data/date=2026-11-01/run-<id>/_run.json          the run's lease (host, process)
    LOCATION__rejects/data/date=2026-11-01/run-<id>/...       its rejects

Readers of an Iceberg table see only the files the current snapshot references, so these files are
invisible until the run commits. Publishing is two commits, each one snapshot that removes the date's
files and adds the run's (no copy, no swap, no ``_SUCCESS``): the rejects first, then the scores,
whose snapshot summary names the rejects' snapshot (``scoring.rejects-snapshot-id``) beside the run's
essentials (run id, model, counts, engine, the manifest's URI). A reader that takes the rejects at the
snapshot the scores name never pairs one run's scores with another's rejects.

Concurrent runs of one date: the catalog's optimistic commit decides. A commit that finds the table
moved re-reads it and re-applies its replace over the winner (the later commit wins, says so in the
log and records the run it replaced as ``scoring.replaced-run``): both runs' versions are whole, one
after the other, in the history.

A run killed before its commit leaves the table as it was; its directory is removed by the next run
of that date (when its lease shows the process gone: a run on another host is left to ``maintain``)
or by ``maintain``, which removes unreferenced files older than its horizon.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

from scoring import __version__, faults
from scoring.dataset.catalog import open_catalog
from scoring.dataset.manifest import MANIFEST_FILE, Manifest
from scoring.dataset.storage import discard, filesystem, normalize_uri, read_json, write_json
from scoring.errors import OutputError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

REJECTS_SUFFIX = "__rejects"
LEASE_FILE = "_run.json"
RUN_PREFIX = "run-"
# Keys of the snapshot summaries the job writes (Iceberg keeps summary values as strings).
SUMMARY = "scoring."
RUN_ID = "scoring.run-id"
DATE = "scoring.date"
ACTION = "scoring.action"
MODEL_NAME = "scoring.model-name"
MODEL_VERSION = "scoring.model-version"
MODEL_RUN = "scoring.model-run-id"
ROWS_INPUT = "scoring.rows-input"
ROWS_SCORED = "scoring.rows-scored"
ROWS_REJECTED = "scoring.rows-rejected"
REJECTS_BY_REASON = "scoring.rejects-by-reason"
ENGINE = "scoring.engine"
MANIFEST_URI = "scoring.manifest"
REJECTS_SNAPSHOT = "scoring.rejects-snapshot-id"
REPLACED_RUN = "scoring.replaced-run"
RESTORED_FROM = "scoring.restored-from"
# Commits retried after the table moved under them (each retry re-reads the table).
COMMIT_ATTEMPTS = 10
# Table properties set at creation: who writes it; metadata files pruned as Iceberg's writers do.
TABLE_PROPERTIES = {
    "scoring.writer": f"scoring {__version__}",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}


def split_identifier(identifier: str) -> tuple[str, str]:
    """``NAMESPACE.TABLE`` as (namespace, table).

    Raises:
        OutputError: The identifier lacks a namespace or a name.
    """
    namespace, _, name = identifier.rpartition(".")
    if not namespace or not name:
        raise OutputError(f"--table {identifier!r}: expected NAMESPACE.TABLE")
    return namespace, name


def rejects_identifier(identifier: str) -> str:
    """The rejects' table of a scores table."""
    return f"{identifier}{REJECTS_SUFFIX}"


def nullable(schema: pa.Schema) -> pa.Schema:
    """The schema with every field optional: later runs' files may hold nulls where this one had none."""
    return pa.schema([field.with_nullable(True) for field in schema])


def load_table(catalog: Catalog, identifier: str) -> Table:
    """``catalog.load_table``, with a table that is not an Iceberg table refused in one line.

    Raises:
        NoSuchTableError: There is no such table (pyiceberg's, for the callers that create it).
        OutputError: The catalog holds a table of that name that is not an Iceberg table (a Glue
            table made for plain parquet, say).
    """
    from pyiceberg.exceptions import NoSuchIcebergTableError, NoSuchPropertyException

    try:
        return catalog.load_table(identifier)
    except (NoSuchIcebergTableError, NoSuchPropertyException) as e:
        raise OutputError(
            f"table {identifier} in catalog {catalog.name!r} is not an Iceberg table: "
            "publish to another name, or drop it"
        ) from e


def ensure_table(catalog: Catalog, identifier: str, schema: pa.Schema, partition_column: str) -> Table:
    """The table, created from ``schema`` on first use, its schema evolved to hold ``schema``'s columns.

    A column ``schema`` adds (a new challenger's) is added to the table; a type the table holds
    differently is refused, before anything is written.

    Raises:
        OutputError: A column's type differs from the table's, or the table is not partitioned by
            ``partition_column``.
    """
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError

    namespace, _ = split_identifier(identifier)
    try:
        table = load_table(catalog, identifier)
    except NoSuchTableError:
        _create_namespace(catalog, namespace)
        try:
            table = _create(catalog, identifier, nullable(schema), partition_column)
            log.info("created table %s at %s", identifier, table.location())
        except (TableAlreadyExistsError, CommitFailedException):
            # A concurrent run created it first (pyiceberg reports that as either, by catalog).
            table = catalog.load_table(identifier)
    _check_partitioning(table, identifier, partition_column)
    return _evolve(table, identifier, nullable(schema))


def _create_namespace(catalog: Catalog, namespace: str) -> None:
    """Create the namespace unless it exists: another table's, or a concurrent run made it first.

    A concurrent creation surfaces as the catalog's own error (a SQL catalog's integrity error, a
    REST catalog's conflict): it is raised again only when the namespace still does not exist.
    """
    if catalog.namespace_exists(namespace):
        return
    try:
        catalog.create_namespace(namespace)
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise


def _create(catalog: Catalog, identifier: str, schema: pa.Schema, partition_column: str) -> Table:

    with catalog.create_table_transaction(identifier, schema=schema, properties=TABLE_PROPERTIES) as tx:
        with tx.update_spec() as spec:
            spec.add_identity(partition_column)
        # Files written by Spark and pyarrow carry no Iceberg field ids: readers map them by name.
        tx.set_properties(name_mapping(tx.table_metadata.schema()))
    return catalog.load_table(identifier)


def name_mapping(schema: Schema) -> dict[str, str]:
    """The table property mapping files without Iceberg field ids (Spark's, pyarrow's) by column name."""
    from pyiceberg.table import TableProperties

    return {TableProperties.DEFAULT_NAME_MAPPING: schema.name_mapping.model_dump_json()}


def _check_partitioning(table: Table, identifier: str, partition_column: str) -> None:
    from pyiceberg.transforms import IdentityTransform

    schema = table.schema()
    fields = [(schema.find_column_name(f.source_id), f.transform) for f in table.spec().fields]
    if fields != [(partition_column, IdentityTransform())]:
        raise OutputError(
            f"table {identifier}: partitioned by {[f'{t}({c})' for c, t in fields]}, not by "
            f"identity({partition_column}): it was not made for these runs"
        )


def _evolve(table: Table, identifier: str, schema: pa.Schema) -> Table:
    """Add ``schema``'s new columns to the table; refuse a changed type."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow

    wanted = visit_pyarrow(schema, _ConvertToIcebergWithoutIDs())
    current = table.schema()
    for field in wanted.fields:
        held = (
            current.find_field(field.name, case_sensitive=True) if field.name in current._name_to_id else None
        )
        if held is not None and held.field_type != field.field_type and not _promotes(held, field):
            raise OutputError(
                f"table {identifier}: column {field.name!r} is {held.field_type} in the table but "
                f"{field.field_type} in this run; a column's type is not changed (write to a new table)"
            )
    if all(field.name in current._name_to_id for field in wanted.fields):
        return table
    for _ in range(COMMIT_ATTEMPTS):
        try:
            with table.transaction() as tx:
                with tx.update_schema() as update:
                    update.union_by_name(wanted)
                tx.set_properties(name_mapping(tx.table_metadata.schema()))
            log.info(
                "table %s: added columns %s",
                identifier,
                sorted(set(wanted._name_to_id) - set(current._name_to_id)),
            )
            return table
        except CommitFailedException:
            table.refresh()
    raise OutputError(f"table {identifier}: its schema kept changing under this run; try again")


def _promotes(held: object, field: object) -> bool:
    """Whether the run's type is one the table's type reads (int in a long column, float in a double)."""
    from pyiceberg.types import DoubleType, FloatType, IntegerType, LongType

    return (held.field_type, field.field_type) in {(LongType(), IntegerType()), (DoubleType(), FloatType())}


@dataclass(frozen=True)
class TableRun:
    """Where one run writes one date of a table, and how it publishes it.

    The same attributes as ``scoring.dataset.publish.OutputLocation``, which the scoring passes write
    through: the run's directory is its staging, and stays where it is once published.

    Attributes:
        identifier: The scores table, ``NAMESPACE.TABLE``.
        location: The scores table's location.
        rejects_location: The rejects table's location.
        partition: The date's ``COLUMN=VALUE``.
        run_id: The run's unique id, ``COLUMN=VALUE--HEX`` as in directory output.
    """

    identifier: str
    location: str
    rejects_location: str
    partition: str
    run_id: str

    @classmethod
    def new_run(cls, identifier: str, location: str, rejects_location: str, partition: str) -> TableRun:
        """A new run, with a fresh id."""
        return cls(
            identifier,
            location.rstrip("/"),  # as the table names it: its files are recorded under it, URI and all
            rejects_location.rstrip("/"),
            partition,
            f"{partition}--{uuid.uuid4().hex[:12]}",
        )

    @property
    def directory_name(self) -> str:
        """The run's directory under the date's."""
        return RUN_PREFIX + self.run_id.rsplit("--", 1)[-1]

    @property
    def staged(self) -> str:
        """The run's scores (and its manifest, lease and report)."""
        return f"{self.location}/data/{self.partition}/{self.directory_name}"

    @property
    def staged_rejects(self) -> str:
        """The run's rejects."""
        return f"{self.rejects_location}/data/{self.partition}/{self.directory_name}"

    @property
    def final(self) -> str:
        """Where the published scores are: where they were written."""
        return self.staged

    @property
    def run_staging(self) -> str:
        """What names the run in messages."""
        return self.staged

    @property
    def attempts(self) -> str:
        """Where the Arrow pass's task attempts write before moving their files into place."""
        return f"{self.staged}/_attempts"

    @property
    def manifest(self) -> str:
        """The run's manifest."""
        return f"{self.staged}/{MANIFEST_FILE}"


def write_lease(run: TableRun) -> None:
    """Record which process writes the run's directory, so that a later run can tell it is gone."""
    fs, path = filesystem(run.staged)
    if fs.type_name == "local":  # an object store has no directories to make
        fs.create_dir(path, recursive=True)
    write_json(f"{run.staged}/{LEASE_FILE}", lease())


def lease() -> dict:
    """This process: its host, process id and start."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def lease_is_live(document: Mapping | None) -> bool:
    """Whether the run holding a lease may still be writing.

    It may when its process runs (on this host), or when it ran on another host (a cluster's driver:
    there ``maintain`` decides by the files' age). A directory without a lease is not a run's that
    got as far as writing: it is not live.
    """
    if not document:
        return False
    if document.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(document["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process of that id
    return True


def clean_date(scores: Table, rejects: Table, partition: str, keep: str | None = None) -> list[str]:
    """Remove the date's run directories no snapshot references and no live run holds.

    A run's lease lies in its scores directory; its rejects directory, of the same name in the
    rejects table, is judged by it.

    Args:
        scores: The scores table.
        rejects: Its rejects table.
        partition: The date's ``COLUMN=VALUE``.
        keep: A run directory name never removed (the calling run's own).

    Returns:
        The directories removed.
    """
    leases = f"{normalize_uri(scores.location())}/data/{partition}"
    removed = []
    for table in (scores, rejects):
        referenced = {os.path.dirname(_canonical(path)) for path in referenced_files(table)}
        root = f"{normalize_uri(table.location())}/data/{partition}"
        for directory in _run_directories(root):
            name = directory.rsplit("/", 1)[-1]
            if name == keep or _canonical(directory) in referenced:
                continue
            if lease_is_live(_read_lease(f"{leases}/{name}/{LEASE_FILE}")):
                continue
            discard(directory)
            removed.append(directory)
    if removed:
        log.info("removed %d directories of runs killed before their commit", len(removed))
    return removed


def _read_lease(uri: str) -> dict | None:
    """A run's lease; None when there is none or a kill cut its writing short (the run is gone)."""
    try:
        return read_json(uri)
    except ValueError:
        return None


def _run_directories(root: str) -> list[str]:
    fs, path = filesystem(root)
    prefix = root[: len(root) - len(path)] if root.endswith(path) else ""
    return [
        prefix + info.path
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(RUN_PREFIX)
    ]


def _canonical(uri: str) -> str:
    """One spelling of a file's name, however the table or a listing gave it: local paths plain."""
    return uri.removeprefix("file://")


def referenced_files(table: Table) -> set[str]:
    """Every data file a snapshot of the table references, as the table records their paths."""
    files: set[str] = set()
    seen: set[str] = set()
    for snapshot in table.metadata.snapshots:
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            files.update(
                e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
            )
    return files


def date_files(table: Table, column: str, date: dt.date, snapshot_id: int | None = None) -> list[DataFile]:
    """The data files of one date in a snapshot (the current one by default); reads manifests only."""
    from pyiceberg.expressions import EqualTo

    if snapshot_id is None and table.current_snapshot() is None:
        return []
    tasks = table.scan(row_filter=EqualTo(column, date.isoformat()), snapshot_id=snapshot_id).plan_files()
    return [task.file for task in tasks]


def new_data_files(table: Table, paths: Iterable[str]) -> list[DataFile]:
    """Data files of the table for parquet files written under its location (their footers read)."""
    from pyiceberg.io.pyarrow import parquet_file_to_data_file

    try:
        return [parquet_file_to_data_file(table.io, table.metadata, path) for path in paths]
    except ValueError as e:  # pyiceberg's schema check: the file does not fit the table
        raise OutputError(f"table {'.'.join(table.name())}: a written file does not fit it: {e}") from e


def replace_date(
    table: Table,
    column: str,
    date: dt.date,
    files: Callable[[], Iterable[DataFile]],
    properties: Mapping[str, str],
) -> int | None:
    """Commit one snapshot in which the date's files are ``files()``: the old ones removed, these added.

    A commit the table moved under (another run of the date, or of another date) is re-applied over
    the new state; the run it replaced is recorded as ``scoring.replaced-run``.

    Args:
        table: The table.
        column: The partition column.
        date: The date replaced.
        files: The new files of the date (called once per attempt: they depend on no table state).
        properties: The snapshot summary's own keys.

    Returns:
        The table's current snapshot after the commit (None for a table still empty).

    Raises:
        OutputError: The table kept moving for ``COMMIT_ATTEMPTS`` attempts.
    """
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    summary = dict(properties)
    new = list(files())
    for _ in range(COMMIT_ATTEMPTS):
        old = date_files(table, column, date)
        if not old and not new:
            snapshot = table.current_snapshot()
            return None if snapshot is None else snapshot.snapshot_id
        try:
            return _overwrite_date(table, column, date, old, new, summary)
        except (CommitFailedException, ValidationException):
            # pyiceberg retried the commit itself and found this date changed: plan it again.
            table.refresh()
            summary.update(_replaced_run(table, date))
    raise OutputError(
        f"table {'.'.join(table.name())}: {COMMIT_ATTEMPTS} commits conflicted; nothing published"
    )


def _overwrite_date(
    table: Table,
    column: str,
    date: dt.date,
    old: list[DataFile],
    new: list[DataFile],
    summary: Mapping[str, str],
) -> int:
    """One commit attempt: the date's ``old`` files out, ``new`` in; the snapshot it made."""
    from pyiceberg.expressions import EqualTo

    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=dict(summary)).overwrite() as overwrite,
    ):
        # Scopes pyiceberg's own conflict check to this date: other dates' commits never conflict.
        overwrite.delete_by_predicate(EqualTo(column, date.isoformat()))
        for data_file in old:
            overwrite.delete_data_file(data_file)
        for data_file in new:
            overwrite.append_data_file(data_file)
        faults.at("mid-commit")
    return table.current_snapshot().snapshot_id


def _replaced_run(table: Table, date: dt.date) -> dict[str, str]:
    """After a conflict: ``{REPLACED_RUN: run}`` when the commit that won published ``date``, else nothing."""
    winner = table.current_snapshot()
    if winner is None or not winner.summary or winner.summary.get(DATE) != date.isoformat():
        return {}
    replaced = winner.summary.get(RUN_ID)
    log.warning(
        "table %s: run %s committed %s first; replacing its version with this run's",
        ".".join(table.name()), replaced, date,
    )  # fmt: skip
    return {REPLACED_RUN: replaced or ""}


def run_summary(run_id: str, date: dt.date, manifest: Manifest, manifest_uri: str) -> dict[str, str]:
    """The snapshot summary's keys for a run, from its manifest."""
    counts, model = manifest.counts, manifest.model
    return {
        RUN_ID: run_id,
        DATE: date.isoformat(),
        ACTION: "publish",
        MODEL_NAME: str(model.name or ""),
        MODEL_VERSION: str(model.version),
        MODEL_RUN: str(model.run_id or ""),
        ROWS_INPUT: str(counts.input),
        ROWS_SCORED: str(counts.scored),
        ROWS_REJECTED: str(counts.rejected),
        REJECTS_BY_REASON: json.dumps(dict(manifest.rejects.by_reason), sort_keys=True),
        ENGINE: str(manifest.resources.engine or ""),
        MANIFEST_URI: manifest_uri,
    }


@dataclass(frozen=True)
class Version:
    """One version of a date in a table's history: a snapshot that published or restored it.

    Attributes:
        snapshot_id: The snapshot.
        committed_at: When it was committed (UTC).
        action: ``publish`` or ``restore``.
        run_id: The run that wrote its files.
        model: ``NAME/VERSION`` of the champion.
        scored: Rows scored.
        rejected: Rows rejected.
        current: Whether it is the date's version now.
        note: A run it replaced concurrently, or the snapshot it restored.
    """

    snapshot_id: int
    committed_at: dt.datetime
    action: str
    run_id: str
    model: str
    scored: int
    rejected: int
    current: bool
    note: str

    def line(self) -> str:
        """The version as one line of ``scoring history``."""
        mark = "*" if self.current else " "
        return (
            f"{mark} {self.snapshot_id:>20} {self.committed_at:%Y-%m-%d %H:%M:%S} {self.action:<8} "
            f"{self.model:<28} {self.scored:>12} {self.rejected:>9}  {self.run_id}{self.note}"
        )


HISTORY_HEADER = (
    "  "
    + " ".join(
        (
            "snapshot".rjust(20),
            "committed (UTC)".ljust(19),
            "action".ljust(8),
            "model".ljust(28),
            "scored".rjust(12),
        )
    )
    + f" {'rejected':>9}  run"
)


def history(table: Table, date: dt.date) -> list[Version]:
    """The date's versions, oldest first; the current one marked."""
    versions = []
    current = current_version(table, date)
    for snapshot in table.metadata.snapshots:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(DATE) != date.isoformat():
            continue
        note = ""
        if summary.get(REPLACED_RUN):
            note = f" (committed over concurrent run {summary[REPLACED_RUN]})"
        if summary.get(RESTORED_FROM):
            note = f" (restored from snapshot {summary[RESTORED_FROM]})"
        versions.append(
            Version(
                snapshot.snapshot_id,
                dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
                summary.get(ACTION, "publish"),
                summary.get(RUN_ID, ""),
                f"{summary.get(MODEL_NAME, '')}/{summary.get(MODEL_VERSION, '')}",
                int(summary.get(ROWS_SCORED, 0)),
                int(summary.get(ROWS_REJECTED, 0)),
                snapshot.snapshot_id == current,
                note,
            )
        )
    return versions


def current_version(table: Table, date: dt.date) -> int | None:
    """The latest snapshot that published or restored the date, if the table still holds it."""
    for snapshot in reversed(table.metadata.snapshots):
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(DATE) == date.isoformat():
            return snapshot.snapshot_id
    return None


def restore(scores: Table, rejects: Table, column: str, date: dt.date, snapshot_id: int) -> int:
    """Commit the date's files as of ``snapshot_id`` back, scores and rejects, for that date alone.

    Returns:
        The scores' new snapshot.

    Raises:
        OutputError: The snapshot is not one of the table's (expired, or another table's), or it
            published no version of the date.
    """
    name = ".".join(scores.name())
    snapshot = scores.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise OutputError(f"table {name}: no snapshot {snapshot_id} (expired, or another table's)")
    version = _version_at(scores, date, snapshot_id)
    if version is None:
        raise OutputError(f"table {name}: snapshot {snapshot_id} holds no published version of {date}")
    summary = {**version, ACTION: "restore", RESTORED_FROM: str(snapshot_id)}
    summary.pop(REPLACED_RUN, None)
    rejects_id = version.get(REJECTS_SNAPSHOT)
    if rejects_id and rejects.metadata.snapshot_by_id(int(rejects_id)) is None:
        raise OutputError(
            f"table {name}: the rejects of snapshot {snapshot_id}'s version (snapshot {rejects_id} of "
            f"{'.'.join(rejects.name())}) were expired; that version cannot be restored whole"
        )
    old_rejects = date_files(rejects, column, date, int(rejects_id)) if rejects_id else []
    rejects_snapshot = replace_date(rejects, column, date, lambda: old_rejects, summary)
    old_scores = date_files(scores, column, date, snapshot_id)
    summary[REJECTS_SNAPSHOT] = "" if rejects_snapshot is None else str(rejects_snapshot)
    return replace_date(scores, column, date, lambda: old_scores, summary)


def _version_at(table: Table, date: dt.date, snapshot_id: int) -> dict[str, str] | None:
    """The summary of the snapshot that made the date's version current as of ``snapshot_id``."""
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    snapshot = by_id.get(snapshot_id)
    while snapshot is not None:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(DATE) == date.isoformat():
            return {k: v for k, v in summary.items() if k.startswith(SUMMARY)}
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return None


@dataclass(frozen=True)
class Maintenance:
    """What ``maintain`` did to one table.

    Attributes:
        table: The table.
        expired: Snapshots expired.
        removed: Files removed (data files no kept snapshot references, leftovers of killed runs).
    """

    table: str
    expired: int
    removed: int

    def line(self) -> str:
        """One line for the command's output."""
        return f"{self.table}: {self.expired} snapshots expired, {self.removed} unreferenced files removed"


def maintain(table: Table, older_than: dt.timedelta, now: dt.datetime | None = None) -> Maintenance:
    """Expire snapshots older than ``older_than`` (never the current one) and remove orphan files.

    An orphan is a file under the table's ``data/`` that no kept snapshot references, last modified
    before the horizon: files of expired versions, and runs killed before their commit. A run still
    writing is younger than any sensible horizon, and a file a kept snapshot references is never
    removed.
    """
    now = now or dt.datetime.now(dt.UTC)
    horizon = now - older_than
    name = ".".join(table.name())
    before = {s.snapshot_id for s in table.metadata.snapshots}
    table.maintenance.expire_snapshots().older_than(horizon).commit()
    table.refresh()
    expired = len(before - {s.snapshot_id for s in table.metadata.snapshots})
    referenced = {_canonical(p) for p in referenced_files(table)}
    root = f"{normalize_uri(table.location())}/data"
    fs, path = filesystem(root)
    prefix = root[: len(root) - len(path)]
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.mtime is None:
            continue
        uri = prefix + info.path
        if _canonical(uri) in referenced or _modified(info) >= horizon:
            continue
        if info.base_name.endswith(".parquet") or not _directory_referenced(uri, referenced):
            fs.delete_file(info.path)
            removed += 1
    _remove_empty_directories(fs, path)
    return Maintenance(name, expired, removed)


def _modified(info: pafs.FileInfo) -> dt.datetime:
    mtime = info.mtime
    return mtime if mtime.tzinfo else mtime.replace(tzinfo=dt.UTC)


def _directory_referenced(uri: str, referenced: set[str]) -> bool:
    """Whether a file's run directory still holds a referenced file (its manifest stays with them)."""
    directory = _canonical(uri.rsplit("/", 1)[0] + "/")
    return any(path.startswith(directory) for path in referenced)


def _remove_empty_directories(fs: pafs.FileSystem, path: str) -> None:
    if fs.type_name != "local":
        return  # an object store has no directories
    for root, _, _ in os.walk(path, topdown=False):
        if root != path and not os.listdir(root):
            os.rmdir(root)


@dataclass(frozen=True)
class TableDay:
    """One date as the table publishes it now.

    Attributes:
        snapshot_id: The scores' current snapshot (None: the table has none).
        files: The date's scores files, as the table records their paths.
        rejects: The date's rejects files at the snapshot the scores name.
        summary: The summary of the snapshot that published the date's version.
    """

    snapshot_id: int | None
    files: tuple[str, ...]
    rejects: tuple[str, ...]
    summary: Mapping[str, str]


def table_day(scores: Table, rejects: Table | None, column: str, date: dt.date) -> TableDay:
    """The date as a reader of the current snapshot sees it.

    Its rejects are those of the snapshot the scores' version names; once ``maintain`` has expired
    that version's snapshot, those of the run's own rejects directory (the run that wrote the
    scores, in the rejects table's location), which hold the same files.
    """
    snapshot = scores.current_snapshot()
    files = tuple(sorted(f.file_path for f in date_files(scores, column, date)))
    summary = {}
    if snapshot is not None:
        summary = _version_at(scores, date, snapshot.snapshot_id) or {}
    rejects_id = summary.get(REJECTS_SNAPSHOT)
    reject_files: tuple[str, ...] = ()
    if rejects is not None and rejects_id and rejects.metadata.snapshot_by_id(int(rejects_id)) is not None:
        reject_files = tuple(sorted(f.file_path for f in date_files(rejects, column, date, int(rejects_id))))
    elif rejects is not None and files:
        run_directory = files[0].rsplit("/", 2)[-2]
        own = f"{rejects.location().rstrip('/')}/data/{column}={date.isoformat()}/{run_directory}/"
        current = (f.file_path for f in date_files(rejects, column, date))
        reject_files = tuple(sorted(path for path in current if path.startswith(own)))
    return TableDay(None if snapshot is None else snapshot.snapshot_id, files, reject_files, summary)


def dates_before(table: Table, column: str, date: dt.date) -> list[dt.date]:
    """The dates the current snapshot holds before ``date``, latest first (manifests read, no data)."""
    from pyiceberg.expressions import LessThan

    if table.current_snapshot() is None:
        return []
    schema = table.schema()
    position = [schema.find_column_name(f.source_id) for f in table.spec().fields].index(column)
    days = set()
    for task in table.scan(row_filter=LessThan(column, date.isoformat())).plan_files():
        value = task.file.partition[position]
        days.add(value if isinstance(value, dt.date) else dt.date(1970, 1, 1) + dt.timedelta(days=int(value)))
    return sorted(days, reverse=True)


def open_tables(catalog_name: str | None, identifier: str) -> tuple[Catalog, Table, Table | None]:
    """The catalog, the scores table and its rejects table (None when it has none yet).

    Raises:
        OutputError: The scores table does not exist, or is not an Iceberg table.
    """
    catalog, scores, rejects = find_tables(catalog_name, identifier)
    if scores is None:
        raise OutputError(f"table {identifier}: no such table in catalog {catalog.name!r}")
    return catalog, scores, rejects


def find_tables(catalog_name: str | None, identifier: str) -> tuple[Catalog, Table | None, Table | None]:
    """The catalog, the scores table and its rejects table; None for each that does not exist yet.

    Raises:
        OutputError: A table of that name is not an Iceberg table.
    """
    from pyiceberg.exceptions import NoSuchTableError

    split_identifier(identifier)
    catalog = open_catalog(catalog_name)
    try:
        scores = load_table(catalog, identifier)
    except NoSuchTableError:
        return catalog, None, None
    try:
        rejects = load_table(catalog, rejects_identifier(identifier))
    except NoSuchTableError:
        rejects = None
    return catalog, scores, rejects
