"""docs/reading.md's "Reading the output directory (for analysts)", run as written against the job's output.

The snippets are taken from the page itself (each fenced block follows a ``<!-- tested: NAME -->``
marker), so the page cannot drift from what the readers do. The output is the job's own: the demo
champion over two days with a few bad rows, plus one copied day without ``_SUCCESS`` and a staging
leftover that the published-only forms must not return. The Athena DDL is checked against the written
files' parquet schema, and the Glue snippet runs against moto.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import DATE, OTHER_DATE, ROWS, run_score

from scoring import demo

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reading.md"
SECTION = "## Reading the output directory (for analysts)"
SNIPPETS = {
    "published": "python",
    "pandas": "python",
    "duckdb": "python",
    "polars": "python",
    "rejects": "python",
    "manifest": "python",
    "athena": "sql",
    "glue": "python",
    "alter": "sql",
}
OUTPUT_LINE = 'OUTPUT = "demo-workdir/output"'
CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
PUBLISHED = [DATE.isoformat(), OTHER_DATE.isoformat()]
UNPUBLISHED = "2026-11-03"  # a copied day without _SUCCESS, as a killed swap leaves one
OUT_OF_RANGE_ROWS = [5, 6]  # rows of DATE whose age the model's range refuses
# Java's date pattern letters (Athena's projection.*.format) -> strftime, for the ones the DDL may use.
JAVA_DATE = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H"}
PARQUET_TABLE = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
}


def readme_snippets() -> dict[str, tuple[str, str]]:
    """The analysts' section's tested blocks: name -> (language, code)."""
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"<!-- tested: (\w+) -->\n```(\w+)\n(.*?)\n```", section, flags=re.DOTALL)
    names = [name for name, _, _ in blocks]
    assert len(names) == len(set(names)), f"a tested snippet name repeats: {names}"
    return {name: (language, code) for name, language, code in blocks}


def run_snippets(output: Path, *names: str) -> dict:
    """Exec the ``published`` block, then ``names``, in one namespace, with OUTPUT pointing at ``output``."""
    snippets = readme_snippets()
    setup = snippets["published"][1]
    assert setup.count(OUTPUT_LINE) == 1, "the published snippet must set OUTPUT on one line"
    namespace: dict = {}
    codes = {"published": setup.replace(OUTPUT_LINE, f"OUTPUT = {str(output)!r}")}
    for name in ("published", *names):
        exec(compile(codes.get(name, snippets[name][1]), f"docs/reading.md:{name}", "exec"), namespace)
    return namespace


def hive_type(arrow_type: pa.DataType) -> str:
    """The Hive (Athena/Glue) type of a parquet column as pyarrow reads it."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"array<{hive_type(arrow_type.value_type)}>"
    names = {
        pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
        pa.float32(): "float", pa.float64(): "double", pa.bool_(): "boolean",
        pa.string(): "string", pa.large_string(): "string", pa.date32(): "date",
    }  # fmt: skip
    return names[arrow_type]


def parse_ddl(ddl: str) -> dict:
    """The parts of the page's ``CREATE EXTERNAL TABLE`` that Glue and the tests need."""
    match = re.fullmatch(
        r"CREATE EXTERNAL TABLE (?P<table>\w+) \((?P<columns>.*?)\)\s*"
        r"PARTITIONED BY \((?P<partitions>.*?)\)\s*STORED AS (?P<stored>\w+)\s*"
        r"LOCATION '(?P<location>[^']+)'\s*TBLPROPERTIES \((?P<properties>.*)\)\s*;?",
        ddl.strip(),
        flags=re.DOTALL,
    )
    assert match, "the Athena snippet is not CREATE EXTERNAL TABLE ... PARTITIONED BY ... TBLPROPERTIES (...)"

    def columns(text: str) -> list[tuple[str, str]]:
        pairs = [part.split() for part in text.split(",") if part.strip()]
        return [(name.strip("`"), kind) for name, kind in pairs]

    return {
        "table": match["table"],
        "columns": columns(match["columns"]),
        "partitions": columns(match["partitions"]),
        "stored": match["stored"],
        "location": match["location"],
        "properties": dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", match["properties"])),
    }


def strftime_format(java_format: str) -> str:
    """``yyyy-MM-dd`` -> ``%Y-%m-%d``."""
    return re.sub("|".join(JAVA_DATE), lambda m: JAVA_DATE[m[0]], java_format)


@pytest.fixture(scope="module")
def output(spark, registry, customers, tmp_path_factory) -> Path:
    """Two days the real job published (with rejects), one unpublished copy and a staging leftover."""
    root = tmp_path_factory.mktemp("analysts")
    inputs, output = root / "input", root / "output"
    for seed, (date, frame) in enumerate(customers.items()):
        spoiled = demo.spoil(frame, 0.01, seed=seed)  # null incomes, as the demo's feed has
        if date == DATE:
            spoiled.loc[spoiled.index[OUT_OF_RANGE_ROWS], "age"] = 150
        demo.write_partitioned(spoiled, inputs, date, files=2)
    for date in (DATE, OTHER_DATE):
        extra = ("--keep-columns", "region,segment", "--max-reject-fraction", "0.05", "--no-report")
        assert run_score(CHAMPION, inputs, output, *extra, date=date) == 0
    # A day whose swap was killed: its files are there, its _SUCCESS is not.
    for parent in (output, output / "_rejects"):
        shutil.copytree(parent / f"date={OTHER_DATE}", parent / f"date={UNPUBLISHED}")
    (output / f"date={UNPUBLISHED}" / "_SUCCESS").unlink()
    (output / f"date={UNPUBLISHED}" / "_manifest.json").unlink()
    # A run in progress for that day.
    shutil.copytree(
        output / f"date={OTHER_DATE}",
        output / "_staging" / f"date={UNPUBLISHED}--0123456789ab" / "data" / f"date={UNPUBLISHED}",
    )
    return output


def manifest(output: Path, day: str) -> dict:
    return json.loads((output / f"date={day}" / "_manifest.json").read_text())


def days(column: pd.Series) -> pd.Series:
    """``date`` as ``YYYY-MM-DD`` text, whether a reader gave it as text, a category or a date."""
    return pd.to_datetime(column.astype(str)).dt.strftime("%Y-%m-%d")


def scored_rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as comparable tuples, whatever type the reader gave ``date``."""
    frame = frame.assign(date=days(frame["date"]))
    columns = ["date", "customer_id", "region", "segment", "prediction", "probability", "model_version"]
    return sorted(frame[columns].itertuples(index=False, name=None))


def test_the_section_has_every_tested_snippet():
    assert {name: language for name, (language, _) in readme_snippets().items()} == SNIPPETS


def test_published_days_are_those_with_success(output):
    assert run_snippets(output)["published"] == PUBLISHED


def test_pandas_reads_every_day_and_the_published_ones(output):
    ns = run_snippets(output, "pandas")
    assert sorted(days(ns["every_day"]["date"]).unique()) == [*PUBLISHED, UNPUBLISHED]
    scores = ns["scores"]
    per_day = days(scores["date"]).value_counts().sort_index().to_dict()
    assert per_day == {day: manifest(output, day)["counts"]["scored"] for day in PUBLISHED}
    assert all(count < ROWS for count in per_day.values())  # the bad rows are not among the scores
    assert not scores.duplicated(["date", "customer_id"]).any()
    assert list(scores.columns) == [
        c["name"] for c in manifest(output, DATE.isoformat())["output"]["columns"]
    ] + ["date"]


def test_duckdb_and_polars_give_pandas_rows(output):
    expected = scored_rows(run_snippets(output, "pandas")["scores"])
    duck, polars = run_snippets(output, "duckdb"), run_snippets(output, "polars")
    assert scored_rows(duck["scores"].df()) == expected
    assert scored_rows(polars["scores"].collect().to_pandas()) == expected

    scored = {day: manifest(output, day)["counts"]["scored"] for day in PUBLISHED}
    duck_days = duck["per_day"].df()
    polars_days = polars["per_day"].collect().to_pandas()
    for per_day in (duck_days, polars_days):
        assert dict(zip(days(per_day["date"]), per_day["scored"], strict=True)) == scored
    assert np.allclose(duck_days["mean_probability"], polars_days["mean_probability"])

    # The every-day forms see the unpublished copy, and neither _staging nor _rejects.
    assert sorted(days(duck["every_day"].df()["date"]).unique()) == [*PUBLISHED, UNPUBLISHED]
    every_polars = polars["every_day"].select("date").unique().collect()["date"].cast(str).to_list()
    assert sorted(every_polars) == [*PUBLISHED, UNPUBLISHED]
    assert len(duck["every_day"].df()) == sum(scored.values()) + scored[OTHER_DATE.isoformat()]


def test_rejects_per_reason_equal_the_manifests(output):
    rejects = run_snippets(output, "rejects")["rejects"].df()
    reasons = rejects["failed_check"] + ":" + rejects["column_name"]
    counted = dict(zip(zip(days(rejects["date"]), reasons, strict=True), rejects["rejected"], strict=True))
    expected = {
        (day, reason): count
        for day in PUBLISHED
        for reason, count in manifest(output, day)["rejects"]["by_reason"].items()
    }
    assert counted == expected
    assert {reason for _, reason in expected} == {"null_feature:income", "out_of_range:age"}
    assert expected[(DATE.isoformat(), "out_of_range:age")] == len(OUT_OF_RANGE_ROWS)


def test_manifest_snippet_reads_the_last_published_day(output):
    ns = run_snippets(output, "manifest")
    day = OTHER_DATE.isoformat()
    counts = ns["counts"]
    assert ns["day"] == day and counts["input"] == ROWS == counts["scored"] + counts["rejected"]
    # The manifest against the files themselves.
    assert counts["scored"] == pq.read_table(output / f"date={day}").num_rows
    reasons = pq.read_table(output / "_rejects" / f"date={day}").column("reject_reason")
    assert ns["by_reason"] == {v["values"].as_py(): v["counts"].as_py() for v in pc.value_counts(reasons)}
    assert ns["model"] == (CHAMPION, ns["manifest"]["model"]["version"])
    assert [c["name"] for c in ns["columns"]][:3] == ["customer_id", "region", "segment"]


def test_athena_ddl_matches_the_written_files(output):
    ddl = parse_ddl(readme_snippets()["athena"][1])
    schema = pq.read_schema(next((output / f"date={DATE}").glob("*.parquet")))
    assert ddl["columns"] == [(field.name, hive_type(field.type)) for field in schema]
    # The manifest's columns name the same types, so other runs can take theirs from it.
    assert ddl["columns"] == [
        (c["name"], c["type"]) for c in manifest(output, DATE.isoformat())["output"]["columns"]
    ]
    assert ddl["partitions"] == [("date", "string")] and ddl["stored"] == "PARQUET"

    location, properties = ddl["location"], ddl["properties"]
    assert location.startswith("s3://") and location.endswith("/")
    assert properties["projection.enabled"] == "true"
    assert properties["projection.date.type"] == "date"
    assert properties["storage.location.template"] == f"{location}date=${{date}}/"
    # The format reads and writes the job's directory names back unchanged.
    form = strftime_format(properties["projection.date.format"])
    days = sorted(p.name.removeprefix("date=") for p in output.glob("date=*"))
    assert [dt.datetime.strptime(day, form).strftime(form) for day in days] == days
    start, end = properties["projection.date.range"].split(",")
    assert dt.datetime.strptime(start, form).date() <= DATE and end == "NOW"
    assert (properties["projection.date.interval"], properties["projection.date.interval.unit"]) == (
        "1",
        "DAYS",
    )

    alter = re.fullmatch(
        rf"ALTER TABLE {ddl['table']} ADD IF NOT EXISTS PARTITION \(`date` = '([^']+)'\) LOCATION '([^']+)'",
        readme_snippets()["alter"][1].strip().rstrip(";"),
    )
    assert alter, "the ALTER TABLE snippet does not add one date partition of the table"
    assert alter[2] == properties["storage.location.template"].replace("${date}", alter[1])
    assert dt.datetime.strptime(alter[1], form).strftime(form) == alter[1]


def glue_constants(code: str) -> dict[str, str]:
    """The ``BUCKET, PREFIX, DATABASE, TABLE = ...`` line of the Glue snippet."""
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [target.id for target in node.targets[0].elts]
            if "BUCKET" in names:
                return dict(zip(names, ast.literal_eval(node.value), strict=True))
    raise AssertionError("the Glue snippet names no BUCKET")


def test_glue_registers_published_days_only(aws, output):
    import boto3

    ddl = parse_ddl(readme_snippets()["athena"][1])
    names = glue_constants(readme_snippets()["glue"][1])
    bucket, prefix = names["BUCKET"], names["PREFIX"]
    assert ddl["location"] == f"s3://{bucket}/{prefix}/" and ddl["table"] == names["TABLE"]

    # The output on "S3": the published days, the unpublished copy, staging and rejects.
    s3, glue = boto3.client("s3"), boto3.client("glue")
    s3.create_bucket(Bucket=bucket)
    for path in output.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(output).as_posix()}")
    # The table as the DDL without its projection properties makes it.
    glue.create_database(DatabaseInput={"Name": names["DATABASE"]})
    glue.create_table(
        DatabaseName=names["DATABASE"],
        TableInput={
            "Name": ddl["table"],
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"EXTERNAL": "TRUE", "classification": "parquet"},
            "PartitionKeys": [{"Name": name, "Type": kind} for name, kind in ddl["partitions"]],
            "StorageDescriptor": {
                "Columns": [{"Name": name, "Type": kind} for name, kind in ddl["columns"]],
                "Location": ddl["location"],
                **PARQUET_TABLE,
            },
        },
    )

    def registered() -> dict[str, str]:
        pages = glue.get_paginator("get_partitions").paginate(
            DatabaseName=names["DATABASE"], TableName=ddl["table"]
        )
        partitions = [p for page in pages for p in page["Partitions"]]
        return {p["Values"][0]: p["StorageDescriptor"]["Location"] for p in partitions}

    ns = run_snippets(output, "glue")  # its catch-up loop registers what is published
    expected = {day: f"{ddl['location']}date={day}/" for day in PUBLISHED}
    assert registered() == expected
    partition = glue.get_partition(
        DatabaseName=names["DATABASE"], TableName=ddl["table"], PartitionValues=[DATE.isoformat()]
    )["Partition"]
    assert [c["Name"] for c in partition["StorageDescriptor"]["Columns"]] == [n for n, _ in ddl["columns"]]

    # A re-run is harmless; the unpublished day is registered once its _SUCCESS exists.
    assert ns["register_if_published"](DATE.isoformat()) is True
    assert ns["register_if_published"](UNPUBLISHED) is False
    s3.put_object(Bucket=bucket, Key=f"{prefix}/date={UNPUBLISHED}/_SUCCESS", Body=b"")
    assert ns["register_if_published"](UNPUBLISHED) is True
    assert registered() == {**expected, UNPUBLISHED: f"{ddl['location']}date={UNPUBLISHED}/"}
