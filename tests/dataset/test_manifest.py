"""The manifest as one typed value: the job's file reads back to the same JSON; older files read too."""

from __future__ import annotations

import dataclasses
import json

from conftest import DATE, run_score

from scoring import demo
from scoring.dataset.manifest import MANIFEST_FILE, Counts, Manifest, Resources, read_manifest, summary
from scoring.dataset.validate import validate_partition

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"


def test_the_jobs_manifest_reads_back_to_the_same_json(spark, registry, input_dir, tmp_path):
    challenger = f"sk=models:/{demo.MODEL_NAME}@sklearn"
    ab = ["--ab", "champion=0.5,sk=0.5", "--ab-salt", "s", "--ensemble", "champion=1,sk=1"]
    assert run_score(CHAMPION, input_dir, tmp_path, "--challenger", challenger, *ab) == 0
    partition = tmp_path / f"date={DATE}"
    data = json.loads((partition / MANIFEST_FILE).read_text())

    manifest = Manifest.from_json(data)
    assert manifest.to_json() == data  # every key and value
    assert read_manifest(str(partition)) == manifest
    assert manifest.counts.input == manifest.counts.scored + manifest.counts.rejected
    assert [c.name for c in manifest.challengers] == ["sk"]
    assert manifest.ab.split == {"champion": 0.5, "sk": 0.5}
    assert manifest.model.version == registry["onnx"] and manifest.resources.engine == "arrow"
    counts = manifest.counts
    assert summary(manifest).startswith(f"scored {counts.scored:,} of {counts.input:,} rows")


def test_an_older_manifest_reads_with_defaults_and_its_partition_still_validates(
    spark, registry, input_dir, tmp_path
):
    assert run_score(CHAMPION, input_dir, tmp_path) == 0
    path = tmp_path / f"date={DATE}" / MANIFEST_FILE
    data = json.loads(path.read_text())
    newer = ("resources", "cost", "drift", "package_version", "ab")
    older = {k: v for k, v in data.items() if k not in newer}
    older["output"] = {k: v for k, v in data["output"].items() if k != "table"}
    path.write_text(json.dumps(older))

    manifest = read_manifest(str(path.parent))
    assert manifest.resources == Resources() and manifest.cost is None and manifest.output.table is None
    assert manifest.counts == Counts(**data["counts"])
    assert manifest.to_json()["output"] == {**older["output"], "table": None}
    assert validate_partition(str(tmp_path), DATE).ok


def test_a_table_publish_adds_its_snapshot_outside_the_file():
    output = {"path": "p", "files": [{"name": "a", "rows": 2}]}
    manifest = Manifest.from_json({"run_id": "r", "output": output})
    published = manifest.with_snapshot(7)
    assert published.output.snapshot_id == 7 and published.output.files == manifest.output.files
    assert "snapshot_id" not in manifest.to_json()["output"]
    assert published.to_json()["output"]["snapshot_id"] == 7
    assert dataclasses.replace(published, run_id="r") == published
