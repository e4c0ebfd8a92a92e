"""The input partition's files listed by pyarrow, as Spark's file index would list them, where it can be sure.

The local executor (``scoring.batch.local``) reads the input without Spark, so it must find the very
files Spark's ``read.parquet(path)`` followed by the filter on the date would scan: for a partitioned
input, the files of the ``COLUMN=YYYY-MM-DD`` directory; for an input without partition directories,
every file under the path. Spark skips names that start with ``_`` or ``.`` (``_SUCCESS``, ``.crc``
files, ``_temporary``) and those its writers leave while copying (``._COPYING_``); so does this.

Whatever Spark would read differently, or fail on with its own message, is left to Spark: ``None``
means "ask Spark" (a path that does not exist, no directory for the date, nested partition directories,
which Spark turns into columns, a partition directory of another type).
"""

from __future__ import annotations

import datetime as dt

import pyarrow.fs as pafs

from scoring.dataset.storage import filesystem, normalize_uri
from scoring.errors import OutputError


def partition_files(path: str, partition_column: str, date: dt.date) -> list[str] | None:
    """The files of ``date``'s partition of the input at ``path``, as Spark names them, sorted.

    Args:
        path: The input: a parquet file, or a directory of them, partitioned by ``partition_column``
            or not.
        partition_column: The column whose ``COLUMN=VALUE`` directories partition the input.
        date: The partition to read.

    Returns:
        The files (``file:/...`` for a local disk, the URI otherwise), or None when only Spark can say
        what it would read (see the module).
    """
    try:
        fs, root = filesystem(path)
    except OutputError:  # a scheme pyarrow does not know (s3a://, gs://): Spark's connectors read it
        return None
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [_spark_name(path, root, root)]
    if info.type != pafs.FileType.Directory:
        return None
    top = [e for e in fs.get_file_info(pafs.FileSelector(root)) if _visible(e.base_name)]
    partitions = [e for e in top if e.type == pafs.FileType.Directory and "=" in e.base_name]
    if partitions:
        if any(e.base_name.split("=", 1)[0] != partition_column for e in partitions):
            return None  # another column partitions the input: Spark reads it as a column
        wanted = f"{partition_column}={date.isoformat()}"
        if not any(e.base_name == wanted for e in partitions):
            return None  # Spark says why: no rows for the date, or a directory value of another type
        return _flat_files(fs, path, root, f"{root}/{wanted}")
    return _flat_files(fs, path, root, root)


def _flat_files(fs: pafs.FileSystem, path: str, root: str, directory: str) -> list[str] | None:
    """The visible files directly in ``directory``; None when it holds directories too."""
    entries = [e for e in fs.get_file_info(pafs.FileSelector(directory)) if _visible(e.base_name)]
    if any(e.type != pafs.FileType.File for e in entries):
        return None
    return sorted(_spark_name(path, root, e.path) for e in entries)


def _visible(name: str) -> bool:
    """Whether Spark's file index lists a file or directory of this name."""
    return not (name.startswith(("_", ".")) or name.endswith("._COPYING_"))


def _spark_name(path: str, root: str, found: str) -> str:
    """``found`` (a path inside the filesystem of ``path``) named as Spark names its input files."""
    uri = normalize_uri(path)
    if uri.startswith("/"):
        return f"file:{found}"
    return uri[: len(uri) - len(root)] + found if uri.endswith(root) else found
