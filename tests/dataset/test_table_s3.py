"""Scores as an Iceberg table in a Glue catalog on S3 (moto's server on 127.0.0.1), without Spark.

Local Spark cannot write ``s3://``, so a run's parquet files are written here with pyarrow exactly where
the run's ``TableRun`` says (as the Arrow pass writes them), then published through ``TablePublisher``
or, where only the commits matter, through ``tables.replace_date`` as the publisher calls it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import boto3
import botocore.loaders
import botocore.session
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE

from scoring.config import JobConfig
from scoring.dataset import table as tables
from scoring.dataset.catalog import open_catalog
from scoring.dataset.manifest import DataFile, Manifest
from scoring.dataset.publisher import TablePublisher
from scoring.dataset.storage import write_json

CATALOG = "glue"
REGION = "us-east-1"
SCORES = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("model_version", pa.string()),
        ("score", pa.float64()),
        ("date", pa.date32()),
    ]
)
REJECTS = pa.schema([("customer_id", pa.int64()), ("reject_reason", pa.string()), ("date", pa.date32())])
# The only objects a table holds: its runs' files, each in its run's directory, and its metadata.
RUN_KEY = r"data/date=\d{4}-\d\d-\d\d/run-[0-9a-f]{12}/[^/]+"
METADATA_KEY = r"metadata/[^/]+"


@dataclass(frozen=True)
class Version:
    """What a run of a date writes: ``files`` scores files of ``rows`` rows each, ``rejected`` rejects."""

    model: str
    files: int
    rows: int
    rejected: int

    @property
    def scored(self) -> int:
        return self.files * self.rows

    @property
    def input(self) -> int:
        return self.scored + self.rejected


A1 = Version("1", files=3, rows=40, rejected=5)
A2 = Version("2", files=4, rows=50, rejected=3)


class Glue:
    """A Glue catalog (``CATALOG``) whose warehouse is a fresh bucket, and the table to publish to."""

    def __init__(self, bucket: str, properties: dict[str, str], table: str) -> None:
        self.bucket, self.properties, self.table = bucket, properties, table

    @functools.cached_property
    def catalog(self):
        """The test's own catalog, for reading (a Glue client takes a second to make here)."""
        return open_catalog(CATALOG)

    @functools.cached_property
    def s3(self):
        return boto3.client("s3")

    @functools.cached_property
    def fs(self) -> pafs.S3FileSystem:
        endpoint = urlparse(self.properties["s3.endpoint"])
        return pafs.S3FileSystem(
            endpoint_override=endpoint.netloc,
            scheme=endpoint.scheme,
            region=REGION,
            access_key="testing",
            secret_key="testing",
        )

    def tables(self):
        """The scores and the rejects tables as they are now."""
        rejects = tables.rejects_identifier(self.table)
        return self.catalog.load_table(self.table), self.catalog.load_table(rejects)

    def keys(self) -> dict[str, str]:
        """Every object of the bucket: key -> ETag."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    def key(self, uri: str) -> str:
        parsed = urlparse(uri)
        assert parsed.scheme == "s3" and parsed.netloc == self.bucket, uri
        return parsed.path.lstrip("/")

    def under(self, keys, directory: str) -> set[str]:
        return {k for k in keys if k.startswith(self.key(directory) + "/")}

    def referenced(self, *tables_) -> set[str]:
        """The keys of every data file a snapshot of the tables references."""
        return {self.key(path) for table in tables_ for path in tables.referenced_files(table)}


@pytest.fixture
def glue(aws, monkeypatch) -> Glue:
    """A fresh bucket and Glue database; the catalog configured as pyiceberg users configure one."""
    monkeypatch.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)  # a line per request
    # Each catalog makes a boto3 session, which parses botocore's JSON models again (a second here):
    # the sessions of this test share one loader.
    monkeypatch.setattr(botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader))
    suffix = uuid.uuid4().hex[:10]
    bucket = f"iceberg-{suffix}"
    properties = {"type": "glue", "warehouse": f"s3://{bucket}/warehouse"}
    for service in ("s3", "glue"):
        properties.update(
            {
                f"{service}.endpoint": aws.endpoint,
                f"{service}.region": REGION,  # without it pyiceberg looks each bucket's region up (~6 s)
                f"{service}.access-key-id": "testing",
                f"{service}.secret-access-key": "testing",
            }
        )
    for key, value in properties.items():
        name = key.upper().replace(".", "__").replace("-", "_")
        monkeypatch.setenv(f"PYICEBERG_CATALOG__{CATALOG.upper()}__{name}", value)
    glue = Glue(bucket, properties, f"scores_{suffix}.scores")
    glue.s3.create_bucket(Bucket=bucket)
    return glue


def stage(glue: Glue, run: tables.TableRun, date: dt.date, version: Version) -> Manifest:
    """Write a run's files where ``run`` says, as the Arrow pass does; return the run's manifest."""
    files, reject_files = [], []
    for i in range(version.files):
        ids = list(range(i * version.rows, (i + 1) * version.rows))
        name = f"part-{i:05d}.parquet"
        data = {
            "customer_id": ids,
            "model_version": [version.model] * version.rows,
            "score": [j / version.scored for j in ids],
            "date": [date] * version.rows,
        }
        pq.write_table(
            pa.table(data, SCORES), f"{glue.bucket}/{glue.key(run.staged)}/{name}", filesystem=glue.fs
        )
        files.append({"name": name, "rows": version.rows})
    if version.rejected:
        ids = list(range(version.scored, version.input))
        name = "part-00000.parquet"
        data = {"customer_id": ids, "reject_reason": ["null_feature"] * len(ids), "date": [date] * len(ids)}
        path = f"{glue.bucket}/{glue.key(run.staged_rejects)}/{name}"
        pq.write_table(pa.table(data, REJECTS), path, filesystem=glue.fs)
        reject_files.append({"name": name, "rows": version.rejected})
    return Manifest.from_json(
        {
            "run_id": run.run_id,
            "model": {"name": "churn", "version": version.model, "run_id": f"mlflow-{version.model}"},
            "counts": {"input": version.input, "scored": version.scored, "rejected": version.rejected},
            "rejects": {
                "path": run.staged_rejects,
                "rows": version.rejected,
                "by_reason": {"null_feature": version.rejected} if version.rejected else {},
                "files": reject_files,
            },
            "output": {"path": run.staged, "table": glue.table, "rows": version.scored, "files": files},
            "resources": {"engine": "arrow"},
        }
    )


def start(glue: Glue, date: dt.date) -> TablePublisher:
    """A run of ``date`` by the job's publisher, prepared (the date's leftovers cleaned, its lease taken)."""
    config = JobConfig(
        model_uri="models:/churn@champion",
        input=f"s3://{glue.bucket}/input",
        table=glue.table,
        catalog=CATALOG,
        date=date,
        partition_column="date",
    )
    publisher = TablePublisher(config, SCORES, REJECTS)
    publisher.prepare()
    return publisher


def publish(glue: Glue, date: dt.date, version: Version) -> tuple[TablePublisher, int]:
    """One whole run of ``date``: prepare, write, publish, finish. Returns it and the scores' snapshot."""
    publisher = start(glue, date)
    manifest = publisher.publish(stage(glue, publisher.location, date, version))
    publisher.finish(True)
    return publisher, manifest.output.snapshot_id


def create(glue: Glue):
    """The scores and rejects tables, made as the publisher makes them."""
    scores = tables.ensure_table(glue.catalog, glue.table, SCORES, "date")
    return scores, tables.ensure_table(glue.catalog, tables.rejects_identifier(glue.table), REJECTS, "date")


def commit(glue: Glue, scores, rejects, date: dt.date, version: Version) -> tuple[tables.TableRun, int]:
    """A run's files and its two commits as ``TablePublisher.publish`` makes them, on loaded tables."""
    partition = f"date={date.isoformat()}"
    run = tables.TableRun.new_run(glue.table, scores.location(), rejects.location(), partition)
    manifest = stage(glue, run, date, version)
    write_json(run.manifest, manifest.to_json())

    def replace(table, directory: str, listed: tuple[DataFile, ...], summary: dict[str, str]) -> int:
        paths = [f"{directory}/{f.name}" for f in listed]
        return tables.replace_date(table, "date", date, lambda: tables.new_data_files(table, paths), summary)

    summary = tables.run_summary(run.run_id, date, manifest, run.manifest)
    named = replace(rejects, run.staged_rejects, manifest.rejects.files, summary)
    summary = {**summary, tables.REJECTS_SNAPSHOT: str(named)}
    return run, replace(scores, run.staged, manifest.output.files, summary)


def scan(table, date: dt.date, snapshot_id: int | None = None) -> pa.Table:
    from pyiceberg.expressions import EqualTo

    return table.scan(row_filter=EqualTo("date", date.isoformat()), snapshot_id=snapshot_id).to_arrow()


def version_at(table, date: dt.date, snapshot_id: int) -> dict[str, str] | None:
    """The summary of the snapshot that made the date's version current as of ``snapshot_id``."""
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    snapshot = by_id.get(snapshot_id)
    while snapshot is not None:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(tables.DATE) == date.isoformat():
            return summary
        snapshot = by_id.get(snapshot.parent_snapshot_id)
    return None


def assert_whole(scores, rejects, date: dt.date, snapshot_id: int) -> str | None:
    """The date at ``snapshot_id``: every input row once, scored or in the rejects its summary names.

    Returns the date's model version there (None: the snapshot holds no version of the date).
    """
    summary = version_at(scores, date, snapshot_id)
    scored = scan(scores, date, snapshot_id)
    if summary is None:
        assert scored.num_rows == 0
        return None
    rejected = scan(rejects, date, int(summary[tables.REJECTS_SNAPSHOT]))
    assert scored.num_rows == int(summary[tables.ROWS_SCORED])
    assert rejected.num_rows == int(summary[tables.ROWS_REJECTED])
    assert scored.num_rows + rejected.num_rows == int(summary[tables.ROWS_INPUT])
    ids = scored["customer_id"].to_pylist() + rejected["customer_id"].to_pylist()
    assert sorted(ids) == list(range(int(summary[tables.ROWS_INPUT])))
    assert set(scored["model_version"].to_pylist()) == {summary[tables.MODEL_VERSION]}
    return summary[tables.MODEL_VERSION]


def assert_every_snapshot_whole(glue: Glue) -> int:
    """Conservation of both dates in every snapshot of the scores; returns how many were checked."""
    scores, rejects = glue.tables()
    for snapshot in scores.metadata.snapshots:
        for date in (DATE, OTHER_DATE):
            assert_whole(scores, rejects, date, snapshot.snapshot_id)
    return len(scores.metadata.snapshots)


def assert_layout(glue: Glue, keys) -> None:
    """Every object lies in a run's directory or the tables' metadata: no staging, no _rejects, no swap."""
    location = glue.key(glue.tables()[0].location())
    layout = re.compile(rf"{re.escape(location)}(?:{tables.REJECTS_SUFFIX})?/(?:{RUN_KEY}|{METADATA_KEY})")
    assert keys and [key for key in keys if not layout.fullmatch(key)] == []
    assert not [k for k in keys if re.search(r"/_staging/|/_rejects/|/_previous/|_journal|_SUCCESS", k)]


def test_a_republish_replaces_that_date_alone_with_the_objects_it_wrote(glue, aws, monkeypatch):
    publish(glue, DATE, A1)
    commit(glue, *glue.tables(), OTHER_DATE, A1)
    scores, _ = glue.tables()
    other, other_history = scan(scores, OTHER_DATE), tables.history(scores, OTHER_DATE)

    # Another model version of DATE: its files written, then published; nothing copied on the way.
    copies: list[str] = []
    serve = aws.faults.app

    def watch(environ, start_response):
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            copies.append(environ.get("PATH_INFO", ""))
        return serve(environ, start_response)

    monkeypatch.setattr(aws.faults, "app", watch)
    publisher = start(glue, DATE)
    run = publisher.location
    manifest = stage(glue, run, DATE, A2)
    before = glue.keys()
    written = {k: before[k] for k in glue.under(before, run.staged) | glue.under(before, run.staged_rejects)}
    snapshot = publisher.publish(manifest).output.snapshot_id
    publisher.finish(True)
    monkeypatch.setattr(aws.faults, "app", serve)
    after = glue.keys()
    assert copies == []
    assert {k: after.get(k) for k in written} == written  # the very objects written, unchanged
    assert glue.key(run.manifest) in after  # the manifest lies beside them
    assert set(after) - set(before) <= {glue.key(run.manifest)} | {k for k in after if "/metadata/" in k}

    scores, rejects = glue.tables()
    assert scores.current_snapshot().snapshot_id == snapshot
    day = tables.table_day(scores, rejects, "date", DATE)
    assert {glue.key(f) for f in day.files} == {
        k for k in glue.under(written, run.staged) if k.endswith(".parquet")
    }
    assert {glue.key(f) for f in day.rejects} == glue.under(written, run.staged_rejects)
    assert (day.summary[tables.RUN_ID], day.summary[tables.MANIFEST_URI]) == (run.run_id, run.manifest)
    now = scan(scores, DATE)
    assert now.num_rows == A2.scored and set(now["model_version"].to_pylist()) == {"2"}
    assert [v.model for v in tables.history(scores, DATE)] == ["churn/1", "churn/2"]

    # The other date and its history are untouched.
    assert scan(scores, OTHER_DATE).sort_by("customer_id").equals(other.sort_by("customer_id"))
    assert tables.history(scores, OTHER_DATE) == other_history

    # Every snapshot whole; every file any snapshot references is an object a run wrote in its directory.
    assert assert_every_snapshot_whole(glue) == 3
    assert glue.referenced(scores, rejects) <= set(after)
    assert_layout(glue, after)


READER = """
import json, os, sys, time
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import EqualTo

properties, identifier, date, stop = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
catalog, table = load_catalog("reader", **properties), None
deadline = time.monotonic() + 60
while table is None and time.monotonic() < deadline:  # the test's first run creates it
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        time.sleep(0.05)
while not os.path.exists(stop) and time.monotonic() < deadline:
    table.refresh()
    scan = table.scan(row_filter=EqualTo("date", date))
    data, snapshot = scan.to_arrow(), scan.snapshot()
    versions = sorted(set(data["model_version"].to_pylist()))
    print(json.dumps([data.num_rows, versions, snapshot and snapshot.snapshot_id]), flush=True)
"""


def test_a_reader_in_another_process_never_sees_a_partial_or_mixed_date(glue, tmp_path, report):
    versions = {"1": A1, "2": A2}
    script, stop = tmp_path / "reader.py", tmp_path / "stop"
    script.write_text(READER)
    reader = subprocess.Popen(
        [sys.executable, str(script), json.dumps(glue.properties), glue.table, DATE.isoformat(), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads: list[tuple[int, list[str], int | None]] = []

    def read_until(snapshot_id: int) -> None:
        """Take the reader's lines until it has read ``snapshot_id`` (it polls: no sleep needed here)."""
        while not reads or reads[-1][2] != snapshot_id:
            line = reader.stdout.readline()
            assert line, f"the reader stopped: {reader.communicate()[1][-2000:]}"
            reads.append(tuple(json.loads(line)))

    try:
        _, first = publish(glue, DATE, A1)  # the job's first run makes the tables while the reader starts
        scores, rejects = glue.tables()
        read_until(first)
        started, published = time.monotonic(), [first]
        for model in ["2", "1"] * 2:  # the same date re-published, while the reader polls it
            published.append(commit(glue, scores, rejects, DATE, versions[model])[1])
            read_until(published[-1])
        elapsed = time.monotonic() - started
    finally:
        stop.touch()
        rest, errors = reader.communicate(timeout=60)
    assert reader.returncode == 0, errors[-2000:]
    reads.extend(tuple(json.loads(line)) for line in rest.splitlines())

    # Before the scores' first snapshot the date is empty; from it on, always one whole version.
    before = [r for r in reads if r[2] is None]
    assert all(r[:2] == (0, []) for r in before)
    after = reads[len(before) :]
    partial = [r for r in after if len(r[1]) != 1 or r[0] != versions[r[1][0]].scored]
    assert partial == []
    assert [r[2] for r in after if r[2] is None] == []
    assert {r[2] for r in after} == set(published)  # it read every version published...
    assert len(after) >= 2 * len(published)  # ...several times, while the next ones were committed
    report(
        f"iceberg on S3 (Glue, moto) | a reader in another process read the date {len(after)} times during "
        f"{len(published) - 1} re-publishes ({elapsed:.1f} s; {A1.files} and {A2.files} files a version): "
        f"{len(partial)} partial or mixed"
    )


def killed_run(glue: Glue, date: dt.date, alive: bool) -> tables.TableRun:
    """A run killed after writing its files and before its commits; its process gone unless ``alive``."""
    scores, rejects = glue.tables()
    run = tables.TableRun.new_run(glue.table, scores.location(), rejects.location(), f"date={date}")
    stage(glue, run, date, A2)
    lease = tables.lease()
    if not alive:
        gone = subprocess.Popen([sys.executable, "-c", ""])
        gone.wait()
        lease["pid"] = gone.pid
    write_json(f"{run.staged}/{tables.LEASE_FILE}", lease)
    return run


def test_history_restore_and_maintain_on_s3(glue):
    first, first_snapshot = publish(glue, DATE, A1)
    dead = killed_run(glue, DATE, alive=False)
    second, _ = publish(glue, DATE, A2)  # removes the dead run's directory, keeps the first version's
    keys = glue.keys()
    assert not [k for d in (dead.staged, dead.staged_rejects) for k in keys if k.startswith(glue.key(d))]
    assert glue.key(first.location.manifest) in keys
    commit(glue, *glue.tables(), OTHER_DATE, A1)
    killed = killed_run(glue, DATE, alive=True)  # a run of this process: only maintain removes it
    scores, rejects = glue.tables()
    other = scan(scores, OTHER_DATE)

    history = tables.history(scores, DATE)
    assert [(v.snapshot_id == first_snapshot, v.model, v.current) for v in history] == [
        (True, "churn/1", False),
        (False, "churn/2", True),
    ]
    restored = tables.restore(scores, rejects, "date", DATE, first_snapshot)
    scores, rejects = glue.tables()
    latest = tables.history(scores, DATE)[-1]
    assert (latest.snapshot_id, latest.action, latest.current) == (restored, "restore", True)
    assert f"restored from snapshot {first_snapshot}" in latest.note
    assert assert_whole(scores, rejects, DATE, restored) == "1"

    before = glue.keys()
    done = [tables.maintain(table, dt.timedelta(0)) for table in (scores, rejects)]
    scores, rejects = glue.tables()
    after = glue.keys()
    assert [len(t.metadata.snapshots) for t in (scores, rejects)] == [1, 1]  # only the current ones
    assert [m.expired for m in done] == [3, 3]
    referenced = glue.referenced(scores, rejects)
    assert referenced and referenced <= set(after)  # never a referenced object
    # Every file of the replaced version and of the killed run is removed; the first version's stay.
    gone = set().union(
        *(glue.under(before, d) for r in (second.location, killed) for d in (r.staged, r.staged_rejects))
    )
    assert gone and not gone & set(after)
    data = {k for k in before if "/data/" in k}
    assert sum(m.removed for m in done) == len(gone) == len(data - set(after))
    assert glue.key(first.location.manifest) in after
    assert {k for k in data & set(after) if k.endswith(".parquet")} == referenced
    assert assert_whole(scores, rejects, DATE, scores.current_snapshot().snapshot_id) == "1"
    assert scan(scores, OTHER_DATE).sort_by("customer_id").equals(other.sort_by("customer_id"))


@pytest.mark.xfail(
    strict=True,
    reason="on S3, clean_date (storage.discard -> delete_dir) and maintain (delete_file) delete through "
    "pyarrow, whose S3 deletes re-create the emptied parent as a zero-byte 'dir/' marker object: "
    "'data/date=D/' after clean_date, 'data/date=D/run-<id>/' after maintain; nothing removes them",
)
def test_clean_date_and_maintain_on_s3_leave_no_object_behind(glue):
    scores, rejects = create(glue)
    replaced, _ = commit(glue, scores, rejects, DATE, A2)
    commit(glue, scores, rejects, DATE, A1)
    dead = killed_run(glue, DATE, alive=False)
    assert tables.clean_date(scores, rejects, f"date={DATE}") == [dead.staged, dead.staged_rejects]
    for table in (scores, rejects):
        tables.maintain(table, dt.timedelta(0))
    after = glue.keys()
    markers = [k for k in after if k.endswith("/")]
    assert markers == [], "\n".join(markers)
    assert not [k for k in after for r in (replaced, dead) if k.startswith(glue.key(r.staged))]
    assert_layout(glue, after)


def test_a_live_runs_files_survive_another_runs_prepare(glue):
    running = start(glue, DATE)
    manifest = stage(glue, running.location, DATE, A2)
    keys = glue.keys()
    written = glue.under(keys, running.location.staged) | glue.under(keys, running.location.staged_rejects)
    start(glue, DATE)  # a concurrent run of the date prepares while the first one still runs
    assert sorted(written - set(glue.keys())) == []
    snapshot = running.publish(manifest).output.snapshot_id
    assert assert_whole(*glue.tables(), DATE, snapshot) == "2"


def test_a_glue_table_that_is_not_iceberg_is_refused_in_one_line(glue):
    """A plain parquet table of the same name in Glue (the README's Athena one, say) is not written over."""
    import boto3

    from scoring.dataset.destination import Destination
    from scoring.errors import OutputError

    database, name = glue.table.split(".")
    client = boto3.client("glue")
    client.create_database(DatabaseInput={"Name": database})
    client.create_table(
        DatabaseName=database,
        TableInput={
            "Name": name,
            "StorageDescriptor": {"Location": f"s3://{glue.bucket}/plain/"},
            "Parameters": {"classification": "parquet"},
        },
    )
    with pytest.raises(OutputError, match=f"table {glue.table} in catalog .* is not an Iceberg table"):
        tables.ensure_table(glue.catalog, glue.table, SCORES, "date")
    with pytest.raises(OutputError, match="is not an Iceberg table"):
        Destination(table=glue.table, catalog=CATALOG).day(DATE)
