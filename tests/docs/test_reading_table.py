"""docs/reading.md's "Reading the table (for analysts)", run as written against a table the job published.

The snippets are taken from the page itself (each fenced block follows a ``<!-- tested: NAME -->``
marker). The table is the job's own: the demo champion over two days with a few bad rows, then the first
day again with the sklearn version, in a SQL catalog that a ``.pyiceberg.yaml`` configures as ``demo``,
as ``make demo`` configures it. Beside the committed files lie a later run's, written under the table's
location but never committed (more rows, another model version): no reader may return them.

The SQL for Athena, EMR's Spark and Trino cannot run here. Spark's own parser parses the Spark SQL, and
every statement runs in DuckDB against the table, with the table's name and its ``AS OF`` clause
replaced by a pyiceberg scan of the snapshot it names, and its answer is checked.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE, ROWS

from scoring import demo
from scoring.cli import main
from scoring.dataset import table as tables

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "reading.md"  # the readers' snippets
CATALOGS = DOCS / "output.md"  # the catalogs' configuration
SECTION = "## Reading the table (for analysts)"
SNIPPETS = {
    "table": "python",
    "table_pandas": "python",
    "table_polars": "python",
    "table_duckdb": "python",
    "table_summary": "python",
    "table_rejects": "python",
    "table_time_travel": "python",
    "athena_table": "sql",
    "spark_table": "sql",
    "trino_table": "sql",
}
CATALOG, TABLE = "demo", "demo.scores"  # what the snippets name, and what make demo writes
CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"
DAY = OTHER_DATE.isoformat()  # the snippets' DAY
OUT_OF_RANGE_ROWS = [5, 6]  # rows of DATE whose age the model's range refuses
PLANTED_VERSION = "999"  # the uncommitted run's model version
PLANTED_IDS = 10**15  # added to the ids of the rows the uncommitted run wrote
PLANTED_RUN = "run-0123456789ab"


def marked_blocks(text: str) -> list[tuple[str, str, str]]:
    return re.findall(r"<!-- tested: (\w+) -->\n```(\w+)\n(.*?)\n```", text, flags=re.DOTALL)


def readme_snippets() -> dict[str, tuple[str, str]]:
    """The table section's tested blocks: name -> (language, code)."""
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = marked_blocks(text[start : end if end != -1 else len(text)])
    names = [name for name, _, _ in blocks]
    assert len(names) == len(set(names)), f"a tested snippet name repeats: {names}"
    return {name: (language, code) for name, language, code in blocks}


def run_snippets(*names: str) -> dict:
    """Exec the ``table`` block, then ``names``, in one namespace."""
    snippets = readme_snippets()
    namespace: dict = {}
    for name in ("table", *names):
        exec(compile(snippets[name][1], f"docs/reading.md:{name}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def table(spark, registry, customers, tmp_path_factory) -> dict:
    """The table the job wrote (DATE twice, OTHER_DATE once) and an uncommitted run's files beside it.

    Returns:
        The catalog's directory, the versions' snapshot summaries per date (oldest first), the input ids.
    """
    root = tmp_path_factory.mktemp("iceberg")
    inputs = root / "input"
    for seed, (date, frame) in enumerate(customers.items()):
        spoiled = demo.spoil(frame, 0.01, seed=seed)  # null incomes, as the demo's feed has
        if date == DATE:
            spoiled.loc[spoiled.index[OUT_OF_RANGE_ROWS], "age"] = 150
        demo.write_partitioned(spoiled, inputs, date, files=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYICEBERG_HOME", str(root))  # restored when the module is done
        demo.use_local_catalog(root)  # root/.pyiceberg.yaml, PYICEBERG_HOME=root: as make demo does
        for model, date in ((CHAMPION, DATE), (CHAMPION, OTHER_DATE), (SKLEARN, DATE)):
            code = main(
                ["score", "--model-uri", model, "--input", str(inputs), "--table", TABLE,
                 "--catalog", CATALOG, "--date", date.isoformat(), "--id-column", "customer_id",
                 "--keep-columns", "region,segment", "--max-reject-fraction", "0.05", "--no-report"]
            )  # fmt: skip
            assert code == 0
        import pyiceberg.catalog
        from pyiceberg.utils.config import Config

        # pyiceberg's load_catalog reads the configuration it found when first imported (a new
        # process, as the page's readers are, finds root's): read it again for this one.
        patch.setattr(pyiceberg.catalog, "_ENV_CONFIG", Config())
        scores = pyiceberg.catalog.load_catalog(CATALOG).load_table(TABLE)
        rejects = pyiceberg.catalog.load_catalog(CATALOG).load_table(tables.rejects_identifier(TABLE))
        versions = {
            date: [
                {"snapshot": s.snapshot_id, "timestamp_ms": s.timestamp_ms, **s.summary.additional_properties}
                for s in scores.snapshots()
                if s.summary.additional_properties.get(tables.DATE) == date.isoformat()
            ]
            for date in (DATE, OTHER_DATE)
        }
        planted = {date: plant_uncommitted_run(scores, rejects, date) for date in (DATE, OTHER_DATE)}
        yield {"root": root, "versions": versions, "planted": planted, "location": local(scores.location())}


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def plant_uncommitted_run(scores, rejects, date: dt.date) -> int:
    """A later run's files of ``date``, written where a run writes them, never committed.

    Returns:
        The rows of its scores file.
    """
    for table, directory in ((scores, "data"), (rejects, "data")):
        committed = next(
            local(table.location()).joinpath(directory, f"date={date}").glob("run-*/part-*.parquet")
        )
        rows = pq.read_table(committed)
        rows = rows.set_column(0, "customer_id", pc.add(rows["customer_id"], PLANTED_IDS))
        if "model_version" in rows.column_names:
            index = rows.column_names.index("model_version")
            rows = rows.set_column(index, "model_version", pa.array([PLANTED_VERSION] * len(rows)))
        run = local(table.location()) / directory / f"date={date}" / PLANTED_RUN
        run.mkdir()
        pq.write_table(pa.concat_tables([rows, rows.slice(0, 3)]), run / "part-00000.parquet")
        (run / "_manifest.json").write_text("{}")
        if table is scores:
            planted = len(rows) + 3
    return planted


def fresh_pyiceberg_config(monkeypatch) -> None:
    """Make ``load_catalog`` read the configuration as a new process would.

    pyiceberg reads ``.pyiceberg.yaml`` and the variables once, when ``pyiceberg.catalog`` is first
    imported; in this test session that may have been before PYICEBERG_HOME was set.
    """
    import pyiceberg.catalog
    from pyiceberg.utils.config import Config

    monkeypatch.setattr(pyiceberg.catalog, "_ENV_CONFIG", Config())


@pytest.fixture
def readers_env(table, monkeypatch):
    """The snippets' environment: pyiceberg finds the catalog ``demo`` through PYICEBERG_HOME."""
    monkeypatch.setenv("PYICEBERG_HOME", str(table["root"]))
    fresh_pyiceberg_config(monkeypatch)
    return table


def scored_of(table: dict, date: dt.date, version: int = -1) -> int:
    return int(table["versions"][date][version][tables.ROWS_SCORED])


def assert_committed_only(frame: pd.DataFrame) -> None:
    """No row of the uncommitted run: its model version and its ids are nowhere."""
    assert PLANTED_VERSION not in set(frame["model_version"].astype(str))
    assert (frame["customer_id"] < PLANTED_IDS).all()


def days(column: pd.Series) -> pd.Series:
    """``date`` as ``YYYY-MM-DD`` text, whichever type a reader gave it."""
    return pd.to_datetime(column.astype(str)).dt.strftime("%Y-%m-%d")


def test_the_section_has_every_tested_snippet():
    assert {name: language for name, (language, _) in readme_snippets().items()} == SNIPPETS


def test_the_uncommitted_run_is_there_for_a_reader_that_lists_files(readers_env):
    # What a reader of the directory would get: the planted rows are among the files.
    listed = pq.read_table(readers_env["location"] / "data" / f"date={DAY}", partitioning=None)
    assert PLANTED_VERSION in set(listed["model_version"].to_pylist())
    assert len(listed) == scored_of(readers_env, OTHER_DATE) + readers_env["planted"][OTHER_DATE]


def test_pyiceberg_reads_the_committed_day(readers_env, registry, customers):
    ns = run_snippets()
    day = ns["day"].to_pandas()
    assert_committed_only(day)
    assert len(day) == scored_of(readers_env, OTHER_DATE) < ROWS
    assert day["customer_id"].is_unique
    assert set(day["customer_id"]) <= set(customers[OTHER_DATE]["customer_id"])
    assert set(days(day["date"])) == {DAY}
    assert set(day["model_version"]) == {registry["onnx"]}


def test_pandas_polars_and_duckdb_read_the_same_rows(readers_env, registry):
    ns = run_snippets("table_pandas", "table_polars", "table_duckdb")
    frame = ns["frame"]
    assert_committed_only(frame)
    expected = {DATE.isoformat(): scored_of(readers_env, DATE), DAY: scored_of(readers_env, OTHER_DATE)}
    assert days(frame["date"]).value_counts().to_dict() == expected
    assert not frame.duplicated(["date", "customer_id"]).any()
    current = {DATE.isoformat(): registry["sklearn"], DAY: registry["onnx"]}
    assert dict(zip(days(frame["date"]), frame["model_version"], strict=True)) == current

    per_day = ns["per_day"].collect().to_pandas()
    assert dict(zip(days(per_day["date"]), per_day["scored"], strict=True)) == expected
    means = frame.assign(date=days(frame["date"])).groupby("date")["probability"].mean()
    assert per_day["mean_probability"].tolist() == pytest.approx(means.sort_index().tolist())

    per_model = ns["per_model"].fetchall()
    day = frame[days(frame["date"]) == DAY]
    assert len(per_model) == 1
    assert per_model[0][:2] == (registry["onnx"], len(day))
    assert per_model[0][2] == pytest.approx(day["probability"].mean())


def test_the_summary_and_the_rejects_are_the_same_runs(readers_env, registry):
    ns = run_snippets("table_summary", "table_rejects")
    version = readers_env["versions"][OTHER_DATE][-1]
    assert ns["version"].snapshot_id == version["snapshot"]
    assert ns["model"] == (demo.MODEL_NAME, registry["onnx"])
    counts = ns["counts"]
    assert counts["input"] == ROWS == counts["scored"] + counts["rejected"]

    rejects = ns["rejects"].to_pandas()
    assert (rejects["customer_id"] < PLANTED_IDS).all()  # not the uncommitted run's
    assert len(rejects) == counts["rejected"] > 0
    assert rejects["reject_reason"].value_counts().to_dict() == ns["by_reason"]
    scored = ns["scored"].to_pandas()
    assert_committed_only(scored)
    assert len(scored) == counts["scored"]
    assert not set(scored["customer_id"]) & set(rejects["customer_id"])

    manifest = json.loads(local(ns["manifest_uri"]).read_text())
    assert manifest["run_id"] == version[tables.RUN_ID]
    assert manifest["counts"] == counts


def test_time_travel_reads_the_earlier_version(readers_env, registry):
    ns = run_snippets("table_time_travel")
    first, latest = readers_env["versions"][DATE]
    assert [s.snapshot_id for s in ns["versions"]] == [first["snapshot"], latest["snapshot"]]
    earlier = ns["earlier"].to_pandas()
    assert_committed_only(earlier)
    assert len(earlier) == int(first[tables.ROWS_SCORED])
    assert set(earlier["model_version"]) == {registry["onnx"]}
    assert first[tables.MODEL_VERSION] == registry["onnx"] != latest[tables.MODEL_VERSION]
    # A millisecond before the latest version the table was at that version's parent: OTHER_DATE's commit.
    assert ns["before"].snapshot_id == readers_env["versions"][OTHER_DATE][-1]["snapshot"]


def sql_statements(code: str) -> list[str]:
    """A SQL block's statements, comments dropped."""
    text = re.sub(r"--[^\n]*", "", code)
    return [statement.strip() for statement in text.split(";") if statement.strip()]


# The SQL's references to the table, each as the relation DuckDB reads in its place.
TABLE_REFERENCES = [
    ("snapshots", r'[\w."]*analytics"?\.(?:"scores\$snapshots"|scores\.snapshots)(?![\w.])'),
    ("rejects_version", r'[\w."]*analytics"?\.scores__rejects\s+(FOR\s+)?VERSION\s+AS\s+OF\s+(\d+)'),
    ("scores_version", r'[\w."]*analytics"?\.scores\s+(FOR\s+)?VERSION\s+AS\s+OF\s+(\d+)'),
    (
        "scores_at_time",
        r"""[\w."]*analytics"?\.scores\s+(FOR\s+)?TIMESTAMP\s+AS\s+OF\s+(TIMESTAMP\s+)?'([^']+)'""",
    ),
]


def as_duckdb(statement: str, engine: str) -> tuple[str, str]:
    """The statement with its table reference replaced by a DuckDB relation: (relation, SQL)."""
    found = [(name, re.search(pattern, statement)) for name, pattern in TABLE_REFERENCES]
    found = [(name, match) for name, match in found if match]
    assert len(found) == 1, f"{engine}: expected one reference to the table in {statement!r}"
    name, match = found[0]
    if name != "snapshots":
        # Athena and Trino write FOR VERSION AS OF / FOR TIMESTAMP AS OF TIMESTAMP '...'; Spark drops both.
        assert bool(match[1]) == (engine != "spark"), f"{engine}'s time travel: {match[0]!r}"
    if name == "scores_at_time":
        assert bool(match[2]) == (engine != "spark"), f"{engine}'s timestamp literal: {match[0]!r}"
        dt.datetime.fromisoformat(match[3].removesuffix(" UTC"))
    elif name != "snapshots":
        assert 0 < int(match[2]) < 2**63, "a snapshot id is a positive 64-bit integer"
    sql = statement[: match.start()] + name + statement[match.end() :]
    assert "analytics" not in sql
    # Trino's element_at(map, key) (NULL for a missing key) is DuckDB's map_extract_value.
    return name, sql.replace("element_at(", "map_extract_value(")


def test_athena_spark_and_trino_sql_answer_as_the_table_does(readers_env, spark, registry):
    import duckdb
    from pyiceberg.catalog import load_catalog
    from pyiceberg.expressions import EqualTo

    catalog = load_catalog(CATALOG)
    scores, rejects = catalog.load_table(TABLE), catalog.load_table(tables.rejects_identifier(TABLE))
    first, latest = readers_env["versions"][DATE]
    at_time = readers_env["versions"][OTHER_DATE][-1]  # the table before DATE's second version
    day = EqualTo("date", DATE.isoformat())
    relations = {
        "snapshots": scores.inspect.snapshots(),
        "scores_version": scores.scan(row_filter=day, snapshot_id=first["snapshot"]).to_arrow(),
        "rejects_version": rejects.scan(
            row_filter=day, snapshot_id=int(first[tables.REJECTS_SNAPSHOT])
        ).to_arrow(),
        "scores_at_time": scores.scan(snapshot_id=at_time["snapshot"]).to_arrow(),
    }
    con = duckdb.connect()
    for name, relation in relations.items():
        con.register(name, relation)

    snippets = readme_snippets()
    for engine in ("athena", "spark", "trino"):
        statements = sql_statements(snippets[f"{engine}_table"][1])
        answered = set()
        for statement in statements:
            if engine == "spark":
                spark._jsparkSession.sessionState().sqlParser().parsePlan(statement)  # raises on bad syntax
            name, sql = as_duckdb(statement, engine)
            answer = con.sql(sql).df()
            answered.add(name)
            if name == "snapshots":  # DATE's versions, latest first
                assert answer["snapshot_id"].tolist() == [latest["snapshot"], first["snapshot"]]
                assert answer["model_version"].tolist() == [registry["sklearn"], registry["onnx"]]
                for column, key in (
                    ("scored", tables.ROWS_SCORED),
                    ("rejects_snapshot", tables.REJECTS_SNAPSHOT),
                ):
                    if column in answer:
                        assert answer[column].tolist() == [latest[key], first[key]]
            elif name == "scores_version":  # DATE as its first version published it
                assert answer["model_version"].tolist() == [registry["onnx"]]
                assert answer["scored"].tolist() == [int(first[tables.ROWS_SCORED])]
                expected = relations["scores_version"]["probability"].to_pandas().mean()
                assert answer["mean_probability"].tolist() == pytest.approx([expected])
            elif name == "rejects_version":  # that version's rejects, per reason
                by_reason = dict(zip(answer["reject_reason"], answer["rejected"], strict=True))
                assert by_reason == json.loads(first[tables.REJECTS_BY_REASON])
                assert by_reason["out_of_range:age"] == len(OUT_OF_RANGE_ROWS)
            else:  # the table at a time: both dates, DATE still at its first version
                counts = dict(zip(days(answer["date"]), answer["scored"], strict=True))
                assert counts == {
                    DATE.isoformat(): int(first[tables.ROWS_SCORED]),
                    DAY: int(at_time[tables.ROWS_SCORED]),
                }
        wanted = {"snapshots", "scores_version", "scores_at_time"} | (
            {"rejects_version"} if engine == "athena" else set()
        )
        assert answered == wanted, f"{engine}: {sorted(answered)}"


def test_the_catalogs_configure_pyiceberg(tmp_path, monkeypatch):
    """The output page's .pyiceberg.yaml and variables make the catalogs they say (Glue is built, offline)."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.utils.config import Config

    text = CATALOGS.read_text()
    (block,) = [code for name, language, code in marked_blocks(text) if name == "catalogs"]
    assert [language for name, language, _ in marked_blocks(text) if name == "catalogs"] == ["yaml"]
    (tmp_path / ".pyiceberg.yaml").write_text(block)
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fresh_pyiceberg_config(monkeypatch)
    config = Config()
    glue = config.get_catalog_config("glue")
    assert glue["type"] == "glue" and glue["warehouse"].startswith("s3://") and glue["glue.region"]
    rest = config.get_catalog_config("s3tables")
    assert (
        rest["type"] == "rest" and rest["uri"].startswith("https://") and rest["rest.sigv4-enabled"] == "true"
    )
    assert type(load_catalog("glue")).__name__ == "GlueCatalog"

    # The same catalog from the variables the page names.
    (tmp_path / ".pyiceberg.yaml").unlink()
    variables = dict(re.findall(r"`(PYICEBERG_CATALOG__\w+)=([^`]+)`", text))
    assert variables, "the output page names no PYICEBERG_CATALOG__ variable"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    from_environment = Config().get_catalog_config("glue")
    assert {key: from_environment[key] for key in ("type", "glue.region")} == {
        "type": glue["type"],
        "glue.region": glue["glue.region"],
    }
