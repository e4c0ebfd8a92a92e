"""Staging and publishing one output partition, on a local disk or an object store.

Layout under the output root::

    OUTPUT/date=2026-11-01/part-*.parquet       published data
    OUTPUT/date=2026-11-01/_manifest.json       what scored it (written before the swap)
    OUTPUT/date=2026-11-01/_SUCCESS             written last: the partition is published
    OUTPUT/_staging/<run_id>/date=2026-11-01/   a run's data before it is published
    OUTPUT/_staging/<run_id>/_previous/...      the replaced partition, until the swap is done

Names starting with ``_`` are skipped by Spark, pyarrow, pandas and Athena, so staging is invisible
to readers of the dataset. The job writes the whole partition to staging, checks it, and only then
swaps it in; a run that fails or is killed before the swap leaves the published partition untouched.

Paths go through ``pyarrow.fs``, so the same code runs on a local disk and on S3 (where a "move" is
a copy and a delete, object by object).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scoring.errors import OutputError

STAGING_DIR = "_staging"
MANIFEST_FILE = "_manifest.json"
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

    @property
    def final(self) -> str:
        """The published partition."""
        return f"{self.root}/{self.partition}"

    @property
    def run_staging(self) -> str:
        """Everything this run writes before publishing."""
        return f"{self.root}/{STAGING_DIR}/{self.run_id}"

    @property
    def staged(self) -> str:
        """The staged partition."""
        return f"{self.run_staging}/{self.partition}"

    @property
    def previous(self) -> str:
        """Where the replaced partition waits until the new one is in place."""
        return f"{self.run_staging}/_previous/{self.partition}"


def normalize_uri(path: str) -> str:
    """An absolute path for local paths (so Spark and pyarrow agree), URIs unchanged."""
    if urlparse(path).scheme in ("", "file"):
        return os.path.abspath(path.removeprefix("file://")).rstrip("/")
    return path.rstrip("/")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``uri`` and the path inside it.

    S3 takes its endpoint and credentials from the usual AWS environment variables
    (``AWS_ENDPOINT_URL`` included), as boto3 does.
    """
    try:
        return pafs.FileSystem.from_uri(normalize_uri(uri))
    except (pafs.ArrowInvalid, ValueError) as e:  # pyarrow raises ArrowInvalid for unknown schemes
        raise OutputError(f"unsupported output location {uri!r}: {e}") from e


def staged_files(uri: str) -> list[tuple[str, int]]:
    """The parquet files under ``uri`` and their row counts, read from their footers only.

    Raises:
        OutputError: A file is not readable parquet.
    """
    fs, path = filesystem(uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    files = []
    for info in fs.get_file_info(selector):
        name = info.path.rsplit("/", 1)[-1]
        if info.type != pafs.FileType.File or not name.endswith(".parquet") or name[0] in "._":
            continue
        try:
            rows = pq.ParquetFile(info.path, filesystem=fs).metadata.num_rows
        except OSError as e:  # pyarrow reports a truncated or corrupt footer as ArrowInvalid (an OSError)
            raise OutputError(f"staged file {info.path} is not readable parquet: {e}") from e
        files.append((info.path.removeprefix(path).lstrip("/"), rows))
    return sorted(files)


def write_json(uri: str, document: dict) -> None:
    """Write ``document`` as indented JSON to ``uri``."""
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(document, indent=2, sort_keys=True).encode())


def read_json(uri: str) -> dict | None:
    """The JSON document at ``uri``, or None when there is none."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def exists(uri: str) -> bool:
    """Whether a file or directory exists at ``uri``."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_published(partition_uri: str) -> bool:
    """Whether the partition at ``partition_uri`` carries its ``_SUCCESS`` marker."""
    return exists(f"{partition_uri}/{SUCCESS_FILE}")


def publish(location: OutputLocation) -> None:
    """Swap the staged partition in for the published one, then mark it published.

    The old partition's marker goes first, so a reader never takes a half-swapped partition for a
    published one; the old data is moved aside (not deleted) until the new data is in place.
    """
    fs, final = filesystem(location.final)
    _, staged = filesystem(location.staged)
    _, previous = filesystem(location.previous)
    # Spark's own marker would arrive before the data does when an object store moves file by file.
    for marker in (SUCCESS_FILE, f".{SUCCESS_FILE}.crc"):
        if _is_file(fs, f"{staged}/{marker}"):
            fs.delete_file(f"{staged}/{marker}")
    if fs.get_file_info(final).type == pafs.FileType.Directory:
        if _is_file(fs, f"{final}/{SUCCESS_FILE}"):
            fs.delete_file(f"{final}/{SUCCESS_FILE}")
        _move_tree(fs, final, previous)
    _move_tree(fs, staged, final)
    with fs.open_output_stream(f"{final}/{SUCCESS_FILE}"):
        pass


def discard(uri: str) -> None:
    """Delete the directory tree at ``uri`` if it exists."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _move_tree(fs: pafs.FileSystem, source: str, target: str) -> None:
    """Move a directory tree: one rename on a local disk, file by file on an object store."""
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.move(source, target)
        return
    for info in fs.get_file_info(pafs.FileSelector(source, recursive=True)):
        if info.type == pafs.FileType.File:
            fs.move(info.path, target + info.path.removeprefix(source))
    fs.delete_dir(source)
