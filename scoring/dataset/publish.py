"""Staging and publishing one output partition, on a local disk or an object store.

Layout under the output root::

    OUTPUT/date=2026-11-01/part-*.parquet        published scores
    OUTPUT/date=2026-11-01/_manifest.json        what scored it (written before the swap)
    OUTPUT/date=2026-11-01/_SUCCESS              written last: the partition is published
    OUTPUT/_rejects/date=2026-11-01/part-*.parquet   rows that were not scored, with their reason
    OUTPUT/_staging/<run_id>/data/date=.../      a run's scores before they are published
    OUTPUT/_staging/<run_id>/rejects/date=.../   a run's rejects before they are published
    OUTPUT/_staging/<run_id>/_previous/...       the replaced partition, until the swap is done
    OUTPUT/_staging/<run_id>/_journal.json       how far the swap got, for recovery

Names starting with ``_`` are skipped by Spark, pyarrow, pandas and Athena, so staging and rejects are
invisible to readers of the dataset. A run writes everything to staging, checks it, and only then swaps
it in:

1. the journal records which final directories exist and whether the partition is published;
2. the old ``_SUCCESS`` is deleted, so a half-swapped partition never looks published;
3. the old scores and rejects are moved aside to ``_previous`` (journal phase ``aside``);
4. the staged ones are moved in (journal phase ``in``);
5. ``_SUCCESS`` is written.

A run killed before step 1 leaves the published partition untouched. A run killed during the swap is
rolled back by the next run for that partition (``recover``): the old partition is restored, marker
included. On a local disk each move is one ``rename``; on S3 a move is a copy and a delete per object,
so there a reader that ignores ``_SUCCESS`` can see a partition mid-swap for the seconds a swap takes,
and must not: read partitions whose ``_SUCCESS`` exists, or the files their manifest lists.

Paths go through ``pyarrow.fs`` (``scoring.dataset.storage``), so the same code runs on a local disk and
on S3.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scoring import faults
from scoring.columns import REJECT_REASON
from scoring.dataset.storage import discard, exists, filesystem, normalize_uri, read_json, write_json
from scoring.errors import OutputError

STAGING_DIR = "_staging"
REJECTS_DIR = "_rejects"
SUCCESS_FILE = "_SUCCESS"


@dataclass(frozen=True)
class OutputLocation:
    """Where one run writes one partition.

    Attributes:
        root: The output dataset's root, as a URI Spark can write (an absolute path for local disk).
        partition: The partition's directory name, ``COLUMN=VALUE``.
        run_id: Unique id of the run; names its staging directory.
    """

    root: str
    partition: str
    run_id: str

    @classmethod
    def new_run(cls, root: str, partition: str) -> OutputLocation:
        """The location of a new run, with a fresh run id."""
        return cls(normalize_uri(root), partition, f"{partition}--{uuid.uuid4().hex[:12]}")

    @property
    def final(self) -> str:
        """The published partition."""
        return f"{self.root}/{self.partition}"

    @property
    def final_rejects(self) -> str:
        """The published rejects of the partition."""
        return f"{self.root}/{REJECTS_DIR}/{self.partition}"

    @property
    def run_staging(self) -> str:
        """Everything this run writes before publishing."""
        return f"{self.root}/{STAGING_DIR}/{self.run_id}"

    @property
    def staged(self) -> str:
        """The staged scores."""
        return f"{self.run_staging}/data/{self.partition}"

    @property
    def staged_rejects(self) -> str:
        """The staged rejects."""
        return f"{self.run_staging}/rejects/{self.partition}"

    @property
    def attempts(self) -> str:
        """Where task attempts that write files themselves put them before moving them into place."""
        return f"{self.run_staging}/_attempts"

    @property
    def journal(self) -> str:
        """The swap's progress."""
        return f"{self.run_staging}/_journal.json"

    def moves(self) -> list[tuple[str, str, str]]:
        """(staged, final, previous) for the scores and the rejects."""
        return [
            (self.staged, self.final, f"{self.run_staging}/_previous/data/{self.partition}"),
            (
                self.staged_rejects,
                self.final_rejects,
                f"{self.run_staging}/_previous/rejects/{self.partition}",
            ),
        ]


def discard_run(location: OutputLocation, root_existed: bool) -> None:
    """Delete what a run staged; a run that made the output root leaves no root without files.

    Args:
        location: The run's location.
        root_existed: Whether the output root existed before the run staged anything: only a root
            this run created is removed, and only when no file is under it.
    """
    discard(location.run_staging)
    if root_existed:
        return
    fs, path = filesystem(location.root)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    if not any(info.type == pafs.FileType.File for info in fs.get_file_info(selector)):
        discard(location.root)


def staged_paths(uri: str) -> list[str]:
    """The parquet files under ``uri``, relative to it and sorted: a listing, no file is read."""
    fs, path = filesystem(uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    names = []
    for info in fs.get_file_info(selector):
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.File and name.endswith(".parquet") and name[0] not in "._":
            names.append(info.path.removeprefix(path).lstrip("/"))
    return sorted(names)


def staged_files(uri: str, names: Iterable[str] | None = None) -> list[tuple[str, int]]:
    """Parquet files under ``uri`` and their row counts, read from their footers only.

    Args:
        uri: The directory.
        names: The files, relative to ``uri``; by default those listed there (``staged_paths``).

    Raises:
        OutputError: A file is not readable parquet.
    """
    fs, path = filesystem(uri)
    files = []
    for name in staged_paths(uri) if names is None else names:
        try:
            rows = pq.ParquetFile(f"{path}/{name}", filesystem=fs).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise OutputError(f"staged file {path}/{name} is not readable parquet: {e}") from e
        files.append((name, rows))
    return files


def reject_counts(uri: str) -> dict[str, int]:
    """Staged rejects per reason, read from their ``reject_reason`` column alone.

    Raises:
        OutputError: A file is not readable parquet.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return {}
    try:
        reasons = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=[REJECT_REASON])
    except (OSError, pa.ArrowException) as e:
        raise OutputError(f"staged rejects {uri} are not readable parquet: {e}") from e
    counts = pc.value_counts(reasons.column(REJECT_REASON))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def is_published(partition_uri: str) -> bool:
    """Whether the partition at ``partition_uri`` carries its ``_SUCCESS`` marker."""
    return exists(f"{partition_uri}/{SUCCESS_FILE}")


def publish(location: OutputLocation) -> None:
    """Swap the staged partition (scores and rejects) in, and mark it published.

    See the module docstring for the steps and what a kill at each step leaves behind.
    """
    moves = location.moves()
    journal = {
        "partition": location.partition,
        "published": is_published(location.final),
        "existed": [final for _, final, _ in moves if exists(final)],
        "phase": "aside",
    }
    write_json(location.journal, journal)
    _delete_file(f"{location.final}/{SUCCESS_FILE}")
    for _, final, previous in moves:
        if final in journal["existed"]:
            _move_tree(final, previous)
    write_json(location.journal, {**journal, "phase": "in"})
    faults.at("mid-swap")
    for staged, final, _ in moves:
        # Spark's own marker would arrive before the data when an object store moves file by file.
        _delete_file(f"{staged}/{SUCCESS_FILE}")
        _delete_file(f"{staged}/.{SUCCESS_FILE}.crc")
        if exists(staged):
            _move_tree(staged, final)
    _touch(f"{location.final}/{SUCCESS_FILE}")


def recover(root: str, partition: str) -> list[str]:
    """Roll back the swaps of earlier runs of ``partition`` that were killed, and drop their staging.

    Only one run may write a partition at a time (Airflow's one run per date, or one backfill): any
    other run's staging for this partition is a leftover.

    Returns:
        The run ids that were cleaned up.
    """
    fs, staging = filesystem(f"{root}/{STAGING_DIR}")
    selector = pafs.FileSelector(staging, allow_not_found=True)
    runs = [
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{partition}--")
    ]
    for run_id in runs:
        location = OutputLocation(normalize_uri(root), partition, run_id)
        journal = read_json(location.journal)
        if journal is not None and not is_published(location.final):
            _roll_back(location, journal)
        discard(location.run_staging)
    return runs


def _roll_back(location: OutputLocation, journal: dict) -> None:
    for _, final, previous in location.moves():
        if journal["phase"] == "in" or final not in journal["existed"]:
            discard(final)  # partly moved-in new data, or data that did not exist before
        if exists(previous):
            _move_tree(previous, final)  # merges back what a killed move-aside had not moved yet
    if journal["published"]:
        _touch(f"{location.final}/{SUCCESS_FILE}")


def _delete_file(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def _touch(uri: str) -> None:
    fs, path = filesystem(uri)
    with fs.open_output_stream(path):
        pass


def _move_tree(source_uri: str, target_uri: str) -> None:
    """Move a directory tree: one rename on a local disk, file by file on an object store.

    Moving file by file also merges into an existing target, which rolling back a half-done move needs.
    """
    fs, source = filesystem(source_uri)
    _, target = filesystem(target_uri)
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem) and fs.get_file_info(target).type == pafs.FileType.NotFound:
        fs.move(source, target)
        return
    for info in fs.get_file_info(pafs.FileSelector(source, recursive=True)):
        if info.type == pafs.FileType.File:
            destination = target + info.path.removeprefix(source)
            fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.move(info.path, destination)
    fs.delete_dir(source)
