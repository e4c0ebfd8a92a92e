"""The staging, swap and recovery protocol on S3 (moto's server on 127.0.0.1), where a move is a copy."""

from __future__ import annotations

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring import faults
from scoring.dataset import publish
from scoring.dataset.publish import OutputLocation, is_published, recover, staged_files
from scoring.dataset.storage import discard, filesystem

PARTITION = "date=2026-11-01"


@pytest.fixture(scope="module")
def s3_output(aws):
    """An S3 bucket on moto's server."""
    boto3.client("s3").create_bucket(Bucket="scores")
    return "s3://scores/daily"


def stage(location: OutputLocation, values: list[int], rejects: int = 0) -> None:
    """Write what Spark would write to staging: two data files, and a rejects file when asked."""
    fs, path = filesystem(location.staged)
    half = len(values) // 2
    for i, chunk in enumerate([values[:half], values[half:]]):
        pq.write_table(pa.table({"id": chunk}), f"{path}/part-{i}.parquet", filesystem=fs)
    if rejects:
        _, rejects_path = filesystem(location.staged_rejects)
        pq.write_table(
            pa.table({"id": list(range(rejects))}), f"{rejects_path}/part-0.parquet", filesystem=fs
        )


def ids(uri: str) -> list[int]:
    fs, path = filesystem(uri)
    return sorted(pq.read_table(path, filesystem=fs).column("id").to_pylist())


def test_publish_then_replace_on_s3(s3_output):
    first = OutputLocation.new_run(s3_output, PARTITION)
    stage(first, list(range(10)), rejects=2)
    publish.publish(first)
    discard(first.run_staging)

    assert is_published(first.final)
    assert [n for n, _ in staged_files(first.final)] == ["part-0.parquet", "part-1.parquet"]
    assert ids(first.final) == list(range(10))
    assert ids(first.final_rejects) == [0, 1]

    second = OutputLocation.new_run(s3_output, PARTITION)
    stage(second, list(range(100, 106)))
    publish.publish(second)
    discard(second.run_staging)

    assert is_published(second.final)
    assert ids(second.final) == list(range(100, 106))
    assert not staged_files(second.final_rejects)  # the old rejects went with the old partition


def test_crash_mid_swap_on_s3_is_rolled_back(s3_output, monkeypatch):
    old = OutputLocation.new_run(s3_output, "date=2026-11-02")
    stage(old, list(range(8)), rejects=1)
    publish.publish(old)
    discard(old.run_staging)

    def crash(point: str) -> None:
        if point == "mid-swap":
            raise KeyboardInterrupt("killed")  # not an Exception: nothing in the job may catch it

    new = OutputLocation.new_run(s3_output, "date=2026-11-02")
    stage(new, list(range(50, 60)))
    monkeypatch.setattr(faults, "at", crash)
    with pytest.raises(KeyboardInterrupt):
        publish.publish(new)

    assert not is_published(new.final)  # half-swapped: not published
    assert recover(s3_output, "date=2026-11-02") == [new.run_id]
    assert is_published(old.final)
    assert ids(old.final) == list(range(8))
    assert ids(old.final_rejects) == [0]
