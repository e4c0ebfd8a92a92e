"""Scores as an Iceberg table: the real job publishing into a SQL catalog (SQLite), read by pyiceberg."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import DATE, OTHER_DATE, ROWS

from scoring import demo
from scoring.cli import main
from scoring.dataset import table as tables
from scoring.dataset.catalog import open_catalog
from scoring.dataset.destination import Destination
from scoring.dataset.manifest import Manifest
from scoring.dataset.storage import read_json
from scoring.dataset.validate import validate_partition
from scoring.orchestration import cost

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"
TABLE = "analytics.scores"


@pytest.fixture
def catalog(tmp_path, monkeypatch) -> str:
    """A SQL catalog on SQLite in a temporary directory, configured as pyiceberg users configure one."""
    root = tmp_path / "catalog"
    root.mkdir()
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__URI", f"sqlite:///{root}/catalog.db")
    monkeypatch.setenv("PYICEBERG_CATALOG__LOCAL__WAREHOUSE", f"file://{root}/warehouse")
    return "local"


def score_table(
    input_dir: Path, catalog: str, model_uri: str = CHAMPION, date: dt.date = DATE, *extra: str
) -> int:
    return main(
        ["score", "--model-uri", model_uri, "--input", str(input_dir), "--table", TABLE, "--catalog", catalog,
         "--date", date.isoformat(), "--id-column", "customer_id", "--keep-columns", "region", *extra]
    )  # fmt: skip


def scan(catalog: str, date: dt.date, snapshot_id: int | None = None, name: str = TABLE) -> pa.Table:
    from pyiceberg.expressions import EqualTo

    table = open_catalog(catalog).load_table(name)
    return table.scan(row_filter=EqualTo("date", date.isoformat()), snapshot_id=snapshot_id).to_arrow()


def summaries(catalog: str, date: dt.date) -> list[dict[str, str]]:
    table = open_catalog(catalog).load_table(TABLE)
    found = [(s.snapshot_id, s.summary.additional_properties) for s in table.metadata.snapshots]
    return [{"snapshot": str(i), **p} for i, p in found if p.get(tables.DATE) == date.isoformat()]


def assert_version_whole(catalog: str, date: dt.date, summary: dict[str, str]) -> None:
    """The date in the summary's snapshot: every input row once, scored or in the rejects it names."""
    scored = scan(catalog, date, int(summary["snapshot"]))
    named = summary[tables.REJECTS_SNAPSHOT]  # empty while the rejects' table has no snapshot
    rejects = (
        scan(catalog, date, int(named), tables.rejects_identifier(TABLE)) if named else scored.slice(0, 0)
    )
    assert scored.num_rows == int(summary[tables.ROWS_SCORED])
    assert rejects.num_rows == int(summary[tables.ROWS_REJECTED])
    assert scored.num_rows + rejects.num_rows == int(summary[tables.ROWS_INPUT]) == ROWS
    ids = pa.concat_arrays([scored["customer_id"].combine_chunks(), rejects["customer_id"].combine_chunks()])
    assert len(pc.unique(ids)) == ROWS
    assert set(scored["model_version"].to_pylist()) == {summary[tables.MODEL_VERSION]}


def test_a_run_publishes_a_date_and_a_rerun_replaces_that_date_alone(
    spark, registry, input_dir, catalog, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert score_table(input_dir, catalog) == 0
    assert score_table(input_dir, catalog, CHAMPION, OTHER_DATE) == 0
    other = scan(catalog, OTHER_DATE)
    assert score_table(input_dir, catalog, SKLEARN) == 0

    first, second = summaries(catalog, DATE)
    assert (first[tables.MODEL_VERSION], second[tables.MODEL_VERSION]) == (
        registry["onnx"],
        registry["sklearn"],
    )
    for summary in (first, second):
        assert_version_whole(catalog, DATE, summary)
    now = scan(catalog, DATE)
    assert set(now["model_version"].to_pylist()) == {registry["sklearn"]}
    assert scan(catalog, OTHER_DATE).sort_by("customer_id").equals(other.sort_by("customer_id"))
    assert len(summaries(catalog, OTHER_DATE)) == 1

    # The manifest lies beside the run's files, named by the snapshot; the files were written once.
    manifest = json.loads(Path(second[tables.MANIFEST_URI].removeprefix("file://")).read_text())
    assert manifest["run_id"] == second[tables.RUN_ID]
    assert manifest["output"]["table"] == TABLE
    assert {f.name for f in Path(manifest["output"]["path"].removeprefix("file://")).glob("*.parquet")} == {
        f["name"] for f in manifest["output"]["files"]
    }
    # The table's files carry the date and no Spark marker; the report is written beside the manifest.
    assert now.schema.field("date").type == pa.date32()
    run_dir = Path(manifest["output"]["path"].removeprefix("file://"))
    assert not (run_dir / "_SUCCESS").exists() and not (run_dir / "_attempts").exists()
    assert (run_dir / "_report.html").exists()

    destination = Destination(table=TABLE, catalog=catalog)
    report = validate_partition(destination, DATE)
    assert report.ok, report.summary()
    assert report.drift is None  # nothing earlier than DATE
    later = validate_partition(destination, OTHER_DATE)
    assert later.ok and later.drift is not None and later.drift.previous == f"date={DATE}"
    # The commands read the table: validate (exit 0), report (the page rewritten beside the manifest).
    day = ["--table", TABLE, "--catalog", catalog, "--date", OTHER_DATE.isoformat()]
    assert main(["validate", *day]) == 0
    page = Path(summaries(catalog, OTHER_DATE)[-1][tables.MANIFEST_URI].removeprefix("file://")).parent
    (page / "_report.html").unlink()
    assert main(["report", *day]) == 0
    assert (page / "_report.html").exists()
    # The cost estimate's throughput history: the manifest of the version the table holds now.
    earlier = cost.earlier_manifests(destination, "date", OTHER_DATE)
    assert [m.run_id for m in earlier] == [second[tables.RUN_ID]]
    assert cost.throughput(earlier)[1] == "1 earlier run"


def test_history_restore_and_maintain(spark, registry, input_dir, catalog, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert score_table(input_dir, catalog) == 0
    assert score_table(input_dir, catalog, SKLEARN) == 0
    first, second = summaries(catalog, DATE)
    capsys.readouterr()

    assert main(["history", "--table", TABLE, "--catalog", catalog, "--date", DATE.isoformat()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("*") and second["snapshot"] in lines[2]
    assert f"{demo.MODEL_NAME}/{registry['onnx']}" in lines[1]

    restore = [
        "restore",
        "--table",
        TABLE,
        "--catalog",
        catalog,
        "--date",
        DATE.isoformat(),
        "--to",
        first["snapshot"],
    ]
    assert main(restore) == 0
    restored = summaries(catalog, DATE)[-1]
    assert restored[tables.ACTION] == "restore" and restored[tables.RESTORED_FROM] == first["snapshot"]
    assert set(scan(catalog, DATE)["model_version"].to_pylist()) == {registry["onnx"]}
    assert_version_whole(catalog, DATE, restored)
    assert validate_partition(Destination(table=TABLE, catalog=catalog), DATE).ok

    sklearn_dir = Path(second[tables.MANIFEST_URI].removeprefix("file://")).parent
    assert main(["maintain", "--table", TABLE, "--catalog", catalog, "--older-than", "0m"]) == 0
    table = open_catalog(catalog).load_table(TABLE)
    assert len(table.metadata.snapshots) == 1  # only the current one is kept
    assert not list(sklearn_dir.glob("*.parquet"))  # the replaced version's files are gone...
    assert_version_whole(catalog, DATE, {**restored, "snapshot": str(table.current_snapshot().snapshot_id)})
    # ...and every file the kept snapshot references is still there
    for path in tables.referenced_files(table):
        assert Path(path.removeprefix("file://")).exists()

    bad = [
        "restore",
        "--table",
        TABLE,
        "--catalog",
        catalog,
        "--date",
        DATE.isoformat(),
        "--to",
        second["snapshot"],
    ]
    assert main(bad) == 1
    assert "no snapshot" in capsys.readouterr().err


def test_a_new_challenger_adds_columns_and_a_changed_type_is_refused(
    spark, registry, input_dir, catalog, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert score_table(input_dir, catalog) == 0
    assert score_table(input_dir, catalog, CHAMPION, DATE, "--challenger", f"sk={SKLEARN}") == 0
    names = open_catalog(catalog).load_table(TABLE).schema().column_names
    assert "challenger_sk_probability" in names
    assert scan(catalog, DATE)["challenger_sk_probability"].null_count == 0
    checked = validate_partition(Destination(table=TABLE, catalog=catalog), DATE)
    assert checked.ok, checked.summary()
    assert any(c.name == "challenger columns" and c.status == "ok" for c in checked.checks)

    # A table whose region column is a number: the run stops before it scores, in one line.
    tables.ensure_table(
        open_catalog(catalog),
        "analytics.other",
        pa.schema([("region", pa.int64()), ("date", pa.date32())]),
        "date",
    )
    capsys.readouterr()
    code = main(
        ["score", "--model-uri", CHAMPION, "--input", str(input_dir), "--table", "analytics.other",
         "--catalog", catalog, "--date", DATE.isoformat(), "--id-column", "customer_id",
         "--keep-columns", "region"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "column 'region' is long in the table but string in this run" in err
    # Refused before a model was shipped: the next run in this SparkContext finds no missing file.
    assert score_table(input_dir, catalog, SKLEARN) == 0


def test_two_commits_of_one_date_never_mix_the_later_wins(tmp_path, monkeypatch, catalog):
    """Both load the table before either commits: the second finds the date changed, re-plans, replaces."""
    monkeypatch.chdir(tmp_path)
    first = open_catalog(catalog)
    schema = pa.schema([("id", pa.int64()), ("model_version", pa.string()), ("date", pa.date32())])
    table = tables.ensure_table(first, TABLE, schema, "date")
    other = open_catalog(catalog).load_table(TABLE)

    def files(into, version: str, rows: int) -> list[str]:
        import pyarrow.parquet as pq

        path = f"{into.location().removeprefix('file://')}/data/date={DATE}/run-{version}/part-0.parquet"
        Path(path).parent.mkdir(parents=True)
        pq.write_table(
            pa.table({"id": range(rows), "model_version": [version] * rows, "date": [DATE] * rows}, schema),
            path,
        )
        return [path]

    a, b = files(table, "a", 10), files(other, "b", 20)
    tables.replace_date(
        table,
        "date",
        DATE,
        lambda: tables.new_data_files(table, a),
        {tables.RUN_ID: "a", tables.DATE: str(DATE)},
    )
    tables.replace_date(
        other,
        "date",
        DATE,
        lambda: tables.new_data_files(other, b),
        {tables.RUN_ID: "b", tables.DATE: str(DATE)},
    )

    now = scan(catalog, DATE)
    assert now.num_rows == 20 and set(now["model_version"].to_pylist()) == {"b"}
    latest = summaries(catalog, DATE)[-1]
    assert latest[tables.RUN_ID] == "b" and latest[tables.REPLACED_RUN] == "a"


def test_interleaved_runs_leave_the_rejects_of_the_version_published(tmp_path, monkeypatch, catalog):
    """A's rejects, then all of B, then A's scores: A's version is published, with A's rejects current.

    Otherwise A's rejects would be referenced by an expired snapshot only once ``maintain`` ran.
    """
    from scoring import faults
    from scoring.config import JobConfig
    from scoring.dataset.publisher import TablePublisher

    monkeypatch.chdir(tmp_path)
    schemas = (
        pa.schema([("id", pa.int64()), ("model_version", pa.string()), ("date", pa.date32())]),
        pa.schema([("id", pa.int64()), ("reject_reason", pa.string()), ("date", pa.date32())]),
    )
    config = JobConfig(model_uri="x", input="x", table=TABLE, catalog=catalog, date=DATE)

    def written(version: str, rows: int) -> tuple[TablePublisher, Manifest]:
        import pyarrow.parquet as pq

        publisher = TablePublisher(config, *schemas)
        run = publisher.location
        publisher.prepare()
        for directory, schema, n in ((run.staged, schemas[0], rows), (run.staged_rejects, schemas[1], 1)):
            columns = {"id": range(n), schema.names[1]: [version] * n, "date": [DATE] * n}
            Path(directory.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns, schema), f"{directory.removeprefix('file://')}/part-0.parquet")
        manifest = {
            "counts": {"input": rows + 1, "scored": rows, "rejected": 1},
            "model": {"name": "m", "version": version, "run_id": version},
            "rejects": {"by_reason": {"r": 1}, "files": [{"name": "part-0.parquet", "rows": 1}]},
            "output": {"files": [{"name": "part-0.parquet", "rows": rows}]},
            "resources": {"engine": "arrow"},
        }
        return publisher, Manifest.from_json(manifest)

    a, a_manifest = written("a", 10)
    b, b_manifest = written("b", 20)
    real_at = faults.at

    def b_runs_between_a_commits(point: str) -> None:
        if point == "between-commits":
            monkeypatch.setattr(faults, "at", real_at)
            b.publish(b_manifest)
            b.finish(True)
            monkeypatch.setattr(faults, "at", b_runs_between_a_commits)

    monkeypatch.setattr(faults, "at", b_runs_between_a_commits)
    a.publish(a_manifest)
    a.finish(True)
    monkeypatch.setattr(faults, "at", real_at)

    assert set(scan(catalog, DATE)["model_version"].to_pylist()) == {"a"}
    assert set(scan(catalog, DATE, name=tables.rejects_identifier(TABLE))["reject_reason"].to_pylist()) == {
        "a"
    }
    for name in (TABLE, tables.rejects_identifier(TABLE)):
        tables.maintain(open_catalog(catalog).load_table(name), dt.timedelta(0))
    assert set(scan(catalog, DATE, name=tables.rejects_identifier(TABLE))["reject_reason"].to_pylist()) == {
        "a"
    }
    assert validate_partition(Destination(table=TABLE, catalog=catalog), DATE).checks[0].status == "ok"


def test_backfill_into_a_table_skips_the_dates_it_already_published(
    spark, registry, input_dir, catalog, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    backfill = ["backfill", "--model-uri", CHAMPION, "--input", str(input_dir), "--table", TABLE,
                "--catalog", catalog, "--start", DATE.isoformat(), "--end", OTHER_DATE.isoformat(),
                "--id-column", "customer_id"]  # fmt: skip
    assert main(backfill) == 0
    assert [len(summaries(catalog, d)) for d in (DATE, OTHER_DATE)] == [1, 1]
    capsys.readouterr()
    assert main(backfill) == 0
    out = capsys.readouterr().out
    assert out.count("  skipped  ") == 2 and f"already published by version {registry['onnx']}" in out
    assert [len(summaries(catalog, d)) for d in (DATE, OTHER_DATE)] == [1, 1]  # nothing committed again


def test_either_executor_publishes_to_the_same_table_without_changing_its_schema(
    spark, registry, input_dir, catalog
):
    """The local executor builds the output's schemas as Spark's plans give them, nullability included."""
    assert score_table(input_dir, catalog, CHAMPION, DATE, "--executor", "local") == 0
    created = open_catalog(catalog).load_table(TABLE).schema()
    assert score_table(input_dir, catalog, CHAMPION, OTHER_DATE, "--executor", "spark") == 0
    table = open_catalog(catalog).load_table(TABLE)
    assert table.schema() == created and len(table.metadata.schemas) == 1  # no evolution
    manifests = [read_json(summaries(catalog, d)[-1][tables.MANIFEST_URI]) for d in (DATE, OTHER_DATE)]
    assert [m["resources"]["executor"] for m in manifests] == ["local", "spark"]
    scored = {d: scan(catalog, d) for d in (DATE, OTHER_DATE)}
    assert scored[DATE].schema == scored[OTHER_DATE].schema
