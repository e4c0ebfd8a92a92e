"""``python -m bench.publish_s3``: the publish step alone on S3, a directory's swap vs a table's commit.

Both outputs publish the same staged data, ``--files`` parquet files of ``--rows`` rows in all (the
job's scores columns and the date, 8 files and 2,000,000 rows by default: a realistic partition),
on moto's S3 and Glue (``moto.server.ThreadedMotoServer`` on 127.0.0.1, in this process), and each
re-publishes a date that already has a version, as a daily re-run or a backfill does:

- **directory** (``--output s3://...``): the files are written under a run's staging
  (``scoring.dataset.publish.OutputLocation``) with the run's manifest, as the job leaves them; the
  timed step is ``publish(location)``, the journaled swap: the published partition is moved aside to
  the run's ``_previous`` and the staged one moved in, each move a CopyObject and a DeleteObject per
  object on S3. ``finish`` is what the job does next: it deletes the run's staging, the old
  partition's copies included.
- **table** (``--table`` in a Glue catalog whose warehouse is on the same S3): the files are written
  in the run's directory under the table's location (``TablePublisher.location.staged``); the timed
  step is ``TablePublisher.publish(manifest)``: the manifest written, the footers read, one Iceberg
  commit (metadata files and a Glue ``UpdateTable``). No data object is copied or moved. ``finish``
  is ``TablePublisher.finish(True)``.

Each round stages a fresh copy of the files (not timed), then times the publish, then the finish.
What moto's server was asked during the publish is counted by a WSGI middleware in front of it:
objects copied (CopyObject), the bytes they held (the sources' sizes, listed before the publish),
objects written (PutObject, multipart uploads) and their bytes, delete requests, catalog (Glue) calls
and all requests. A publish is checked (not timed) after each round: the date reads back whole.

Prints a Markdown table; ``--markdown FILE`` also puts it between its markers in FILE (appended
there when FILE has none). At the defaults it takes well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench import report, stats

if TYPE_CHECKING:
    from scoring.dataset.manifest import Manifest
from scoring.cli import positive_int

START = "<!-- bench:publish-s3:start -->"
END = "<!-- bench:publish-s3:end -->"
DATE = dt.date(2026, 11, 1)
PARTITION = f"date={DATE.isoformat()}"
REGION = "us-east-1"
KEY = "testing"
CATALOG = "bench"  # pyiceberg reads "_" in a PYICEBERG_CATALOG__NAME__ variable as "-"
TABLE = "bench.scores"
SCORES = pa.schema(
    [
        ("id", pa.int64()),
        ("prediction", pa.int64()),
        ("probability", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("date", pa.date32()),
    ]
)
REJECTS = pa.schema([("id", pa.int64()), ("reject_reason", pa.string()), ("date", pa.date32())])
WAY_NAMES = {
    "directory": "directory (--output): journaled swap",
    "table": "table (--table, Glue): Iceberg commit",
}


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish_s3",
        description="Time the publish step alone on S3 (moto): a directory's swap vs a table's commit.",
    )
    add = parser.add_argument
    add("--files", type=positive_int, default=8, help="parquet files of the date (default: 8)")
    add("--rows", type=positive_int, default=2_000_000, help="rows in all the files (default: 2000000)")
    add("--rounds", type=positive_int, default=3, help="re-publishes of the date timed per way (default: 3)")
    add("--markdown", type=Path, help="also put the table between its markers in this file")
    return parser


# --- what moto's server is asked -------------------------------------------------------------------


@dataclass
class Tally:
    """Requests moto's server answered, by kind, and the bytes they carried.

    Attributes:
        requests: Every request.
        copies: CopyObject (and UploadPartCopy) requests.
        copied_from: Their sources, ``bucket/key``.
        puts: Objects written: PutObject, and multipart uploads completed.
        empty_puts: Those of them that are empty: pyarrow's directory markers, ``_SUCCESS``.
        put_bytes: Bytes uploaded by PutObject and UploadPart.
        deletes: DeleteObject and DeleteObjects requests.
        catalog: Glue calls, by operation.
    """

    requests: int = 0
    copies: int = 0
    copied_from: list[str] = field(default_factory=list)
    puts: int = 0
    empty_puts: int = 0
    put_bytes: int = 0
    deletes: int = 0
    catalog: Counter[str] = field(default_factory=Counter)


class Counting:
    """WSGI middleware in front of moto's app: tallies every request (see ``Tally``)."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.tally = Tally()
        self._lock = threading.Lock()

    def take(self) -> Tally:
        """What was tallied since the last ``take``, and start afresh."""
        with self._lock:
            taken, self.tally = self.tally, Tally()
        return taken

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Tally the request, then hand it to moto."""
        method = environ.get("REQUEST_METHOD", "")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        length = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH") or 0
        with self._lock:
            tally = self.tally
            tally.requests += 1
            if target:  # a JSON-protocol service: Glue ("AWSGlue.UpdateTable")
                tally.catalog[target.rpartition(".")[2]] += 1
            elif method == "PUT" and environ.get("HTTP_X_AMZ_COPY_SOURCE"):
                tally.copies += 1
                source = unquote(environ["HTTP_X_AMZ_COPY_SOURCE"]).split("?", 1)[0]
                tally.copied_from.append(source.lstrip("/"))
            elif method == "PUT" and _is_object(environ):
                tally.put_bytes += int(length)
                if "partNumber" not in query:  # a part is counted when its upload completes
                    tally.puts += 1
                    tally.empty_puts += not int(length)
            elif method == "POST" and "uploadId" in query:
                tally.puts += 1  # CompleteMultipartUpload
            elif (method == "DELETE" and "uploadId" not in query) or (method == "POST" and "delete" in query):
                tally.deletes += 1
        return self.app(environ, start_response)


def _is_object(environ: dict) -> bool:
    """Whether a path-style S3 request names an object (``/bucket/key``), not a bucket."""
    return "/" in environ.get("PATH_INFO", "").strip("/")


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, Counting]]:
    """The moto server on a free port of 127.0.0.1, counted; AWS_* variables point this process at it.

    Yields:
        The endpoint (``http://127.0.0.1:PORT``) and the counting middleware.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # The middleware goes in front of moto's app in the server it made (werkzeug serves server.app).
    wsgi = server._server
    counting = Counting(wsgi.app)
    wsgi.app = counting
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {name: os.environ.get(name) for name in names}
    # scoring.dataset.storage opens s3:// URIs as boto3 does: endpoint and keys from the environment.
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=KEY, AWS_DEFAULT_REGION=REGION
    )
    try:
        yield endpoint, counting
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


# --- the staged data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """The date's files, encoded once: every staging writes these very bytes.

    Attributes:
        files: (name, parquet bytes, rows) per file.
    """

    files: tuple[tuple[str, bytes, int], ...]

    @property
    def rows(self) -> int:
        """Rows in all the files."""
        return sum(rows for _, _, rows in self.files)

    @property
    def size(self) -> int:
        """Bytes of all the files."""
        return sum(len(data) for _, data, _ in self.files)

    def write(self, s3: pafs.S3FileSystem, uri: str) -> None:
        """Write the files under ``uri`` (``s3://bucket/prefix``) with pyarrow."""
        path = uri.removeprefix("s3://")
        for name, data, _ in self.files:
            with s3.open_output_stream(f"{path}/{name}") as out:
                out.write(data)

    def manifest(self, run_id: str, version: int) -> Manifest:
        """The run's manifest, with what ``publish`` and ``run_summary`` read."""
        from scoring.dataset.manifest import Manifest

        return Manifest.from_json(
            {
                "run_id": run_id,
                "model": {"name": "bench", "version": str(version), "run_id": f"bench-{version}"},
                "counts": {"input": self.rows, "scored": self.rows, "rejected": 0},
                "rejects": {"rows": 0, "by_reason": {}, "files": []},
                "output": {"rows": self.rows, "files": [{"name": n, "rows": r} for n, _, r in self.files]},
                "resources": {"engine": "arrow"},
            }
        )


def staged_data(files: int, rows: int, seed: int = 0) -> Staged:
    """``files`` parquet files of the job's scores columns and the date, ``rows`` rows in all."""
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    encoded = []
    for k in range(files):
        n = int(bounds[k + 1] - bounds[k])
        probability = rng.random(n)
        table = pa.table(
            {
                "id": np.arange(bounds[k], bounds[k + 1], dtype=np.int64),
                "prediction": (probability > 0.5).astype(np.int64),
                "probability": probability,
                "model_name": pa.array(["bench"] * n, pa.string()),
                "model_version": pa.array(["1"] * n, pa.string()),
                "date": pa.array([DATE] * n, pa.date32()),
            },
            schema=SCORES,
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        encoded.append((f"part-{k:05d}.parquet", sink.getvalue().to_pybytes(), n))
    return Staged(tuple(encoded))


# --- the two outputs --------------------------------------------------------------------------------


@dataclass
class Result:
    """One output's measurements.

    Attributes:
        way: ``directory`` or ``table``.
        publish_s: Seconds of each round's publish.
        finish_s: Seconds of each round's finish.
        tally: What the server was asked during the last round's publish.
        copied_bytes: Bytes the objects copied then held.
    """

    way: str
    publish_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    copied_bytes: int = 0


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    """An S3 filesystem of pyarrow on moto."""
    return pafs.S3FileSystem(
        endpoint_override=urlparse(endpoint).netloc,
        scheme="http",
        access_key=KEY,
        secret_key=KEY,
        region=REGION,
    )


def object_sizes(bucket: str) -> dict[str, int]:
    """Every object of ``bucket``: ``bucket/key`` -> bytes."""
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {f"{bucket}/{o['Key']}": o["Size"] for page in pages for o in page.get("Contents", [])}


def timed(counting: Counting, bucket: str, step: Callable[[], object]) -> tuple[float, Tally, int]:
    """Run ``step``: its seconds, what the server was asked meanwhile, and the bytes it copied."""
    sizes = object_sizes(bucket)
    counting.take()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    tally = counting.take()
    return seconds, tally, sum(sizes.get(source, 0) for source in tally.copied_from)


def measure_directory(staged: Staged, endpoint: str, counting: Counting, rounds: int) -> Result:
    """Re-publish a date of a directory on S3 ``rounds`` times (an earlier version published first)."""
    import boto3

    from scoring.dataset.manifest import MANIFEST_FILE
    from scoring.dataset.publish import OutputLocation, discard_run, is_published, publish
    from scoring.dataset.publish import staged_files as footers
    from scoring.dataset.storage import write_json

    bucket = f"bench-directory-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    s3, root, result = s3_filesystem(endpoint), f"s3://{bucket}/scores", Result("directory")
    for version in range(rounds + 1):  # version 0: the earlier version, published untimed
        location = OutputLocation.new_run(root, PARTITION)
        staged.write(s3, location.staged)
        write_json(f"{location.staged}/{MANIFEST_FILE}", staged.manifest(location.run_id, version).to_json())
        seconds, tally, copied = timed(counting, bucket, lambda location=location: publish(location))
        finish_s, _, _ = timed(counting, bucket, lambda location=location: discard_run(location, True))
        written = sum(rows for _, rows in footers(location.final))
        if not is_published(location.final) or written != staged.rows:
            raise SystemExit(f"directory: the published date holds {written:,} of {staged.rows:,} rows")
        if version:
            result.publish_s.append(seconds)
            result.finish_s.append(finish_s)
            result.tally, result.copied_bytes = tally, copied
    return result


def glue_properties(endpoint: str, bucket: str) -> dict[str, str]:
    """A Glue catalog on moto whose warehouse is ``bucket``, as pyiceberg properties."""
    properties = {"type": "glue", "warehouse": f"s3://{bucket}/warehouse"}
    for service in ("glue", "s3"):
        properties.update(
            {
                f"{service}.endpoint": endpoint,
                f"{service}.region": REGION,  # without it pyiceberg looks each bucket's region up
                f"{service}.access-key-id": KEY,
                f"{service}.secret-access-key": KEY,
            }
        )
    return properties


@contextlib.contextmanager
def catalog_environment(name: str, properties: dict[str, str]) -> Iterator[None]:
    """The catalog ``name`` configured as pyiceberg users configure one: ``PYICEBERG_CATALOG__*``."""
    names = {
        f"PYICEBERG_CATALOG__{name.upper()}__{key.upper().replace('.', '__').replace('-', '_')}": value
        for key, value in properties.items()
    }
    saved = {key: os.environ.get(key) for key in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure_table(staged: Staged, endpoint: str, counting: Counting, rounds: int) -> Result:
    """Re-publish a date of an Iceberg table on S3 ``rounds`` times (an earlier version published first)."""
    import boto3
    from pyiceberg.expressions import EqualTo

    from scoring.config import JobConfig
    from scoring.dataset.catalog import catalog_properties
    from scoring.dataset.publisher import TablePublisher

    bucket = f"bench-table-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    s3, result = s3_filesystem(endpoint), Result("table")
    config = JobConfig(model_uri="x", input="x", table=TABLE, catalog=CATALOG, date=DATE)
    with catalog_environment(CATALOG, glue_properties(endpoint, bucket)):
        _, configured = catalog_properties(CATALOG)
        if (configured or {}).get("type") != "glue":  # never the embedded catalog in ./warehouse
            raise SystemExit(f"table: catalog {CATALOG!r} is not configured as Glue: {configured}")
        for version in range(rounds + 1):  # version 0: the earlier version, published untimed
            publisher = TablePublisher(config, SCORES, REJECTS)
            publisher.prepare()
            staged.write(s3, publisher.location.staged)
            manifest = staged.manifest(publisher.location.run_id, version)
            seconds, tally, copied = timed(counting, bucket, lambda p=publisher, m=manifest: p.publish(m))
            finish_s, _, _ = timed(counting, bucket, lambda p=publisher: p.finish(True))
            scores = publisher.scores
            scores.refresh()
            written = scores.scan(row_filter=EqualTo("date", DATE.isoformat())).count()
            if written != staged.rows:
                raise SystemExit(f"table: the published date holds {written:,} of {staged.rows:,} rows")
            if version:
                result.publish_s.append(seconds)
                result.finish_s.append(finish_s)
                result.tally, result.copied_bytes = tally, copied
    return result


# --- the report ---------------------------------------------------------------------------------------


def render(results: Sequence[Result], staged: Staged, rounds: int, command: str) -> str:
    """The Markdown section: how it was made, and a row per output."""
    body = []
    for result in results:
        tally = result.tally
        catalog = ", ".join(f"{n} {op}" for op, n in sorted(tally.catalog.items())) or "none"
        body.append(
            [
                WAY_NAMES[result.way],
                f"{stats.median(result.publish_s):.2f}",
                ", ".join(f"{s:.2f}" for s in result.publish_s),
                report.count(tally.copies),
                report.count(result.copied_bytes),
                f"{tally.puts:,} ({tally.empty_puts:,} empty)",
                report.count(tally.put_bytes),
                report.count(tally.deletes),
                report.count(tally.requests),
                catalog,
                f"{stats.median(result.finish_s):.2f}",
            ]
        )
    header = [
        "output",
        "publish (s), median",
        "publish (s), each round",
        "objects copied",
        "bytes copied",
        "objects written",
        "bytes written",
        "deletes",
        "requests",
        "catalog calls",
        "then finish (s), median",
    ]
    right = [False, True, False, True, True, True, True, True, True, False, True]
    lines = [
        START,
        f"Made by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d}.",
        "",
        f"The publish step alone, re-publishing a date of {len(staged.files)} parquet files, "
        f"{staged.rows:,} rows, {staged.size:,} bytes ({staged.size / report.MIB:,.1f} MiB), on moto's S3 "
        f"on 127.0.0.1 (in process: no network, so S3's own per-request latency is absent). Medians of "
        f"{rounds} round(s); the requests are those of one publish (the last round's).",
        "",
        *report.table(header, right, body),
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both outputs and print the table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    staged = staged_data(args.files, args.rows)
    print(
        f"publish_s3: {args.files} files, {staged.rows:,} rows, {staged.size / report.MIB:,.1f} MiB staged "
        f"per run; {args.rounds} round(s) per output",
        flush=True,
    )
    with moto_server() as (endpoint, counting):
        results = []
        for measure in (measure_directory, measure_table):
            results.append(measure(staged, endpoint, counting, args.rounds))
            done = results[-1]
            print(
                f"publish_s3: {done.way}: publish {', '.join(f'{s:.2f}' for s in done.publish_s)} s, "
                f"{done.tally.copies} objects ({done.copied_bytes:,} bytes) copied",
                flush=True,
            )
    section = render(results, staged, args.rounds, report.command_line("bench.publish_s3", argv))
    if args.markdown:
        report.put_section(args.markdown, START, END, section)
    print("\n" + section, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
