"""Paths on a local disk or an object store, through ``pyarrow.fs``: one code path for both.

Local paths are made absolute (``normalize_uri``), so that Spark, which writes the data, and pyarrow,
which publishes, validates and reads it, name every file alike.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from scoring.errors import OutputError


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
    except (pa.ArrowInvalid, ValueError) as e:  # pyarrow raises ArrowInvalid for unknown schemes
        raise OutputError(f"unsupported output location {uri!r}: {e}") from e


def write_json(uri: str, document: dict) -> None:
    """Write ``document`` as indented JSON to ``uri``."""
    write_text(uri, json.dumps(document, indent=2, sort_keys=True), "application/json")


def write_text(uri: str, text: str, content_type: str = "text/plain") -> None:
    """Write ``text`` (UTF-8) to ``uri``; on S3 the object gets ``content_type``, for browsers."""
    fs, path = filesystem(uri)
    metadata = {"Content-Type": content_type} if fs.type_name == "s3" else None
    with fs.open_output_stream(path, metadata=metadata) as out:
        out.write(text.encode())


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


def discard(uri: str) -> None:
    """Delete the directory tree at ``uri`` if it exists."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
