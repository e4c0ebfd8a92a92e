"""The Arrow pass writes what Spark's pass writes, row for row, and steps aside where it could differ."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATE

from scoring import demo
from scoring.batch.arrow_pass import UnreadableSlice, _batches, _StagedWriter, plan, unsuitable
from scoring.cli import main
from scoring.dataset.storage import filesystem
from scoring.model.signature import Feature

CHAMPION = f"models:/{demo.MODEL_NAME}@champion"
SKLEARN = f"models:/{demo.MODEL_NAME}@sklearn"
ROWS = 300


def spoiled_table() -> pa.Table:
    """Demo rows with every kind of bad value the Arrow pass checks, some rows failing several checks."""
    frame = demo.make_customers(ROWS, DATE, seed=11)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    columns["customer_id"][3] = None
    columns["income"][5] = None
    columns["income"][7] = float("nan")
    columns["debt_ratio"][7] = float("inf")  # income comes first in the signature: nan_feature wins
    columns["debt_ratio"][11] = float("-inf")
    columns["age"][13] = 150  # out of the declared range
    columns["age"][17] = 2**40  # overflows the signature's int32
    columns["age"][19] = None
    columns["income"][19] = float("nan")  # age comes first: null_feature:age
    columns["utilization"][23] = 1e300  # a double beyond float32: +inf once cast
    columns["utilization"][29] = -0.5
    columns["customer_id"][31] = None
    columns["income"][31] = None  # the id is checked before every feature
    types = {**{f.name: f.type for f in table.schema}, "age": pa.int64(), "utilization": pa.float64()}
    arrays = [pa.array(v, types[n]) for n, v in columns.items()]  # NaN stays NaN: not from pandas
    snapshot = pa.array([DATE - dt.timedelta(days=i % 7) for i in range(ROWS)], pa.date32())
    return pa.Table.from_arrays([*arrays, snapshot], names=[*columns, "snapshot"])


def write_input(tmp_path, table: pa.Table, row_group_size: int = 64) -> str:
    partition = tmp_path / "in" / f"date={DATE}"
    partition.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), partition / "part-0.parquet", row_group_size=row_group_size)
    pq.write_table(table.slice(half), partition / "part-1.parquet", row_group_size=row_group_size)
    return str(tmp_path / "in")


def score(input_dir: str, output, *args: str, model: str = CHAMPION) -> int:
    return main(
        ["score", "--model-uri", model, "--input", input_dir, "--output", str(output), "--date",
         DATE.isoformat(), "--id-column", "customer_id", "--max-reject-fraction", "0.5",
         "--keep-columns", "region", "--progress-seconds", "0", "--no-report", *args]
    )  # fmt: skip


def read(output) -> tuple[pa.Table, pa.Table, dict]:
    partition = output / f"date={DATE}"
    scored = pq.read_table(partition, partitioning=None).sort_by("customer_id")
    rejects = pq.read_table(output / "_rejects" / f"date={DATE}", partitioning=None)
    rejects = rejects.sort_by([("reject_reason", "ascending"), ("customer_id", "ascending")])
    return scored, rejects, json.loads((partition / "_manifest.json").read_text())


LINEUPS = {
    "champion alone": [],
    "a pyfunc challenger under an A/B split": [
        "--challenger",
        f"sk={SKLEARN}",
        "--ab",
        "champion=0.5,sk=0.5",
        "--ab-salt",
        "s1",
    ],
    "the pyfunc backend": ["--backend", "pyfunc"],
    "an A/B split keyed by an integer and a date id": [
        "--challenger",
        f"sk={SKLEARN}",
        "--ab",
        "champion=0.5,sk=0.5",
        "--ab-salt",
        "s2",
        "--id-column",
        "customer_id,snapshot",
    ],
}


RUNS = {  # the Arrow pass on either executor, and Spark's pass
    "local": ("--engine", "arrow", "--executor", "local"),
    "spark-arrow": ("--engine", "arrow", "--executor", "spark"),
    "spark": ("--engine", "spark"),
}


@pytest.mark.parametrize("lineup", list(LINEUPS))
def test_arrow_pass_writes_the_rows_and_rejects_spark_writes(spark, registry, tmp_path, lineup):
    """Both executors of the Arrow pass and Spark's own pass write the same rows, types and manifest."""
    input_dir = write_input(tmp_path, spoiled_table())
    args = LINEUPS[lineup]
    model = SKLEARN if "--backend" in args else CHAMPION
    # Ids of two columns are checked by Spark (``scoring.batch.unique_ids``): no local executor.
    ways = {n: how for n, how in RUNS.items() if n != "local" or "customer_id,snapshot" not in args}
    for name, how in ways.items():
        assert score(input_dir, tmp_path / name, *how, *args, model=model) == 0, name

    runs = {name: read(tmp_path / name) for name in ways}
    resources = {name: manifest["resources"] for name, (_, _, manifest) in runs.items()}
    assert {n: (r["engine"], r["executor"]) for n, r in resources.items()} == {
        n: e
        for n, e in {
            "local": ("arrow", "local"),
            "spark-arrow": ("arrow", "spark"),
            "spark": ("spark", "spark"),
        }.items()
        if n in ways
    }
    spark_scored, spark_rejects, spark_manifest = runs["spark"]
    for name in [n for n in ways if n != "spark"]:
        arrow_scored, arrow_rejects, arrow_manifest = runs[name]
        assert arrow_scored.schema.remove_metadata() == spark_scored.schema.remove_metadata(), name
        assert arrow_scored.equals(spark_scored), name
        assert arrow_rejects.schema.remove_metadata() == spark_rejects.schema.remove_metadata(), name
        # as text, so that NaN equals NaN and a null stays distinct from NaN
        assert repr(arrow_rejects.to_pylist()) == repr(spark_rejects.to_pylist()), name
        assert arrow_manifest["counts"] == spark_manifest["counts"], name
        assert arrow_manifest["rejects"]["by_reason"] == spark_manifest["rejects"]["by_reason"], name
        assert arrow_manifest["output"]["columns"] == spark_manifest["output"]["columns"], name
        assert arrow_manifest["challengers"] == spark_manifest["challengers"], name
    assert spark_manifest["counts"] == {"input": ROWS, "scored": 290, "rejected": 10}
    assert spark_manifest["rejects"]["by_reason"] == {
        "infinite_feature:debt_ratio": 1,
        "infinite_feature:utilization": 1,
        "nan_feature:income": 1,
        "not_castable:age": 1,
        "null_feature:age": 1,
        "null_feature:income": 1,
        "null_id:customer_id": 2,
        "out_of_range:age": 1,
        "out_of_range:utilization": 1,
    }
    # The same slices, so the same files: a run may move from one executor to the other.
    names = {
        name: [f["name"] for f in manifest["output"]["files"]] for name, (_, _, manifest) in runs.items()
    }
    assert names.get("local", names["spark-arrow"]) == names["spark-arrow"]


def test_auto_uses_the_arrow_pass_on_a_numeric_input(spark, registry, tmp_path):
    input_dir = write_input(tmp_path, spoiled_table())

    assert score(input_dir, tmp_path / "out") == 0

    scored, rejects, manifest = read(tmp_path / "out")
    assert (manifest["resources"]["engine"], manifest["resources"]["executor"]) == ("arrow", "local")
    assert manifest["spark_version"] is None  # no JVM started
    assert scored.num_rows + rejects.num_rows == ROWS
    assert len(manifest["output"]["files"]) >= 2  # a file per slice: the input is split for both cores


def _text_income(table: pa.Table) -> pa.Table:
    income = [None if v is None else str(v) for v in table.column("income").to_pylist()]
    return table.set_column(table.schema.get_field_index("income"), "income", pa.array(income, pa.string()))


def _repeated_id(table: pa.Table) -> pa.Table:
    ids = table.column("customer_id").to_pylist()
    ids[40] = ids[41]
    return table.set_column(table.schema.get_field_index("customer_id"), "customer_id", pa.array(ids))


@pytest.mark.parametrize(
    ("mutate", "why", "local_why"),
    [
        (_text_income, "feature 'income' has type string", "feature 'income' has type string"),
        (_repeated_id, "valid rows repeat an id", "ids repeat"),
    ],
)
def test_where_the_arrow_pass_could_differ_auto_takes_spark_and_arrow_refuses(
    spark, registry, tmp_path, capsys, caplog, mutate, why, local_why
):
    input_dir = write_input(tmp_path, mutate(spoiled_table()))

    assert score(input_dir, tmp_path / "arrow", "--engine", "arrow") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"--engine arrow cannot score it: {why}" in errors[0], errors
    assert not (tmp_path / "arrow" / f"date={DATE}").exists()

    with caplog.at_level("INFO", logger="scoring.batch.job"):
        assert score(input_dir, tmp_path / "auto", "--master", "local[*]") == 0
    # The local executor steps aside first, saying why; then Spark's pass is chosen, saying why.
    assert f"running as a Spark application: {local_why}" in caplog.text
    assert f"scoring with Spark's scan and UDF: {why}" in caplog.text
    _, _, manifest = read(tmp_path / "auto")
    assert (manifest["resources"]["engine"], manifest["resources"]["executor"]) == ("spark", "spark")

    assert score(input_dir, tmp_path / "local", "--executor", "local") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"--executor local cannot run it: {local_why}" in errors[0], errors


def group_bytes(path, columns: int) -> list[int]:
    footer = pq.ParquetFile(path).metadata
    groups = [footer.row_group(g) for g in range(footer.num_row_groups)]
    return [sum(g.column(c).total_compressed_size for c in range(columns)) for g in groups]


def test_plan_cuts_big_files_and_packs_small_ones_in_whole_rounds_of_even_slices(tmp_path):
    table = pa.table({"id": np.arange(10_000, dtype=np.int64), "x": np.random.default_rng(0).random(10_000)})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=1_000)
    for name in ("b", "c", "d"):
        pq.write_table(table.slice(0, 300), tmp_path / f"{name}.parquet")
    files = [(f"file:{tmp_path}/a.parquet", 10_000)] + [(f"file:{tmp_path}/{n}.parquet", 300) for n in "bcd"]
    sizes = {name: group_bytes(tmp_path / f"{name.rsplit('/', 1)[-1]}", 2) for name, _ in files}
    largest = max(sizes[files[0][0]])
    a, b, c, d = (name for name, _ in files)

    # at most about three of a's row groups a slice: 10.9 groups' worth need two rounds on two cores
    slices = plan(files, ["id", "x"], parallelism=2, max_partition_bytes=3 * largest, open_cost=0).slices

    assert len(slices) == 4
    assert [s.index for s in slices] == [0, 1, 2, 3]
    read = [(file, g) for s in slices for file, groups in s.parts for g in groups]
    assert read == [(a, g) for g in range(10)] + [(b, 0), (c, 0), (d, 0)]  # each group once, in order
    assert slices[-1].parts[-3:] == ((b, (0,)), (c, (0,)), (d, (0,)))  # small files share a slice
    assert sum(s.rows for s in slices) == 10_900
    load = [sum(sizes[f][g] for f, gs in s.parts for g in gs) for s in slices]
    assert max(load) - min(load) <= largest  # even, to a row group

    # Equal one-group files on two cores: three make two slices (two rounds would idle a core), a file
    # kept whole; four make two slices, or four when a slice may hold one file's bytes only.
    for name in ("e", "f", "g", "h"):
        pq.write_table(table.slice(0, 1_000), tmp_path / f"{name}.parquet")
    equal = [(f"file:{tmp_path}/{n}.parquet", 1_000) for n in "efgh"]
    one = group_bytes(tmp_path / "e.parquet", 2)[0]
    assert [len(s.parts) for s in plan(equal[:3], ["id", "x"], 2, 2**27, 2**22).slices] == [1, 2]
    assert [len(s.parts) for s in plan(equal, ["id", "x"], 2, 2 * one, 0).slices] == [2, 2]
    assert [len(s.parts) for s in plan(equal, ["id", "x"], 2, one, 0).slices] == [1, 1, 1, 1]
    assert len(plan(equal[:1], ["id", "x"], 16, 2**27, 2**22).slices) == 1  # a row group is never split


def test_unsuitable_names_what_the_arrow_pass_cannot_read(tmp_path):
    when = pa.array([1, 2], pa.timestamp("us"))
    pq.write_table(pa.table({"id": [1, 2], "x": [1.0, 2.0], "when": when}), tmp_path / "a.parquet")
    narrow = pa.array([1, 2], pa.int32())
    pq.write_table(pa.table({"id": [3, 4], "x": narrow, "when": when}), tmp_path / "b.parquet")
    one = plan([(str(tmp_path / "a.parquet"), 2)], ["id", "x", "when"], 2, 2**27, 2**22)
    both = plan(
        [(str(tmp_path / "a.parquet"), 2), (str(tmp_path / "b.parquet"), 1)], ["id", "x"], 2, 2**27, 2**22
    )
    x = Feature("x", "double")

    assert unsuitable(one, [x], ["id"], ids_marked=False) is None
    assert unsuitable(one, [x], ["id", "when"], ids_marked=False) == "column 'when' has type timestamp[us]"
    assert (
        unsuitable(one, [Feature("y", "double")], ["id"], False) == "feature 'y' is not in every input file"
    )
    assert unsuitable(both, [x], ["id"], False).startswith("input files differ in column types")


def test_an_attempt_writes_outside_the_staged_files_until_it_moves_its_file_in(tmp_path):
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "probability": [0.1, 0.5, 0.9]})
    staged, attempts = tmp_path / "run" / "data" / f"date={DATE}", tmp_path / "run" / "_attempts"

    dying = _StagedWriter(str(staged), str(attempts), 0, table.schema, "snappy")
    dying.add(table)  # a worker killed here leaves this file, never a staged one
    assert not staged.exists() or not list(staged.iterdir())
    assert len(list(attempts.iterdir())) == 1
    retry = _StagedWriter(str(staged), str(attempts), 0, table.schema, "snappy")
    retry.add(table)
    assert retry.commit() == 3

    assert [p.name for p in staged.iterdir()] == ["part-00000.snappy.parquet"]
    assert pq.read_table(staged / "part-00000.snappy.parquet").equals(table)
    dying.abandon()
    assert [p.name for p in attempts.iterdir()] == []


@pytest.mark.parametrize("engine", ["arrow", "spark"])
def test_a_file_corrupt_behind_a_good_footer_is_named_in_one_line(spark, registry, tmp_path, capsys, engine):
    partition = tmp_path / "in" / f"date={DATE}"
    partition.mkdir(parents=True)
    table = spoiled_table()
    pq.write_table(table.slice(0, 150), partition / "part-0.parquet")
    pq.write_table(table.slice(150), partition / "part-1.parquet", compression="snappy")
    # one feature's pages, not the footer and not the ids (which the driver reads before scoring)
    footer = pq.ParquetFile(partition / "part-1.parquet").metadata
    chunk = footer.row_group(0).column(table.column_names.index("income"))
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    data = bytearray((partition / "part-1.parquet").read_bytes())
    data[start : start + size] = b"\xff" * size
    (partition / "part-1.parquet").write_bytes(bytes(data))
    assert pq.ParquetFile(partition / "part-1.parquet").metadata.num_rows == 150

    assert score(str(tmp_path / "in"), tmp_path / "out", "--engine", engine) == 1

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(partition / "part-1.parquet") in errors[0], errors
    assert "is not readable parquet" in errors[0]
    assert not (tmp_path / "out" / f"date={DATE}").exists()


def test_probabilities_equal_the_models_own(spark, registry, tmp_path):
    table = spoiled_table()
    input_dir = write_input(tmp_path, table)

    assert score(input_dir, tmp_path / "out", "--engine", "arrow") == 0

    scored, _, _ = read(tmp_path / "out")
    frame = demo.make_customers(ROWS, DATE, seed=11).set_index("customer_id")
    kept = frame.loc[scored.column("customer_id").to_pylist(), list(demo.FEATURE_TYPES)]
    expected = registry["model"].predict_proba(kept)[:, 1]
    np.testing.assert_allclose(scored.column("probability").to_numpy(), expected, atol=1e-5)
    assert pd.Series(scored.column("customer_id").to_pylist()).is_unique


def test_a_slices_file_appears_whole_on_s3_or_not_at_all(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="arrow-pass")
    keys = lambda: sorted(o["Key"] for o in s3.list_objects_v2(Bucket="arrow-pass").get("Contents", []))  # noqa: E731
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "probability": [0.1, 0.5, 0.9]})

    staged, attempts = "s3://arrow-pass/run/data/p", "s3://arrow-pass/run/_attempts"
    kept = _StagedWriter(staged, attempts, 3, table.schema, "snappy")
    kept.add(table)
    kept.add(table)
    assert kept.commit() == 6
    dropped = _StagedWriter(staged, attempts, 4, table.schema, "snappy")
    dropped.add(table)
    dropped.abandon()

    # pyarrow keeps an empty "_attempts/" marker when it deletes a directory's last object: not a file
    assert [k for k in keys() if not k.endswith("/")] == ["run/data/p/part-00003.snappy.parquet"]
    fs, path = filesystem("s3://arrow-pass/run/data/p/part-00003.snappy.parquet")
    written = pq.ParquetFile(path, filesystem=fs)
    assert written.metadata.num_rows == 6 and written.metadata.num_row_groups == 1
    assert written.schema_arrow == table.schema


def test_a_task_reads_its_row_groups_from_s3_and_blames_only_a_corrupt_file(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="arrow-in")
    table = pa.table({"id": np.arange(1_000, dtype=np.int64), "x": np.random.default_rng(1).random(1_000)})
    pq.write_table(table, tmp_path / "good.parquet", row_group_size=100)
    pq.write_table(table, tmp_path / "bad.parquet", row_group_size=1_000)
    # x's pages overwritten, its footer kept: planned as any file, unreadable when a task reads it
    chunk = pq.ParquetFile(tmp_path / "bad.parquet").metadata.row_group(0).column(1)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray((tmp_path / "bad.parquet").read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    prefix = f"in/date={DATE}"
    s3.put_object(
        Bucket="arrow-in", Key=f"{prefix}/part-0.parquet", Body=(tmp_path / "good.parquet").read_bytes()
    )
    s3.put_object(Bucket="arrow-in", Key=f"{prefix}/part-1.parquet", Body=bytes(data))
    # as Spark names them on EMR: s3a:// (Hadoop's connector) or s3:// (EMRFS)
    good, bad = f"s3a://arrow-in/{prefix}/part-0.parquet", f"s3://arrow-in/{prefix}/part-1.parquet"

    # a split of one byte: a slice per row group, each read on its own
    input_plan = plan([(good, 1_000), (bad, 1_000)], ["id", "x"], 2, max_partition_bytes=1, open_cost=0)
    slices: dict[str, list] = {}
    for piece in input_plan.slices:
        slices.setdefault(piece.parts[0][0], []).append(piece)

    assert input_plan.schema == table.schema
    assert [piece.parts for piece in slices[good]] == [((good, (g,)),) for g in range(10)]
    read = [batch for piece in slices[good] for batch in _batches(piece, ["id", "x"], 64)]
    assert pa.Table.from_batches(read).equals(table)
    with pytest.raises(UnreadableSlice, match=f"^{bad} is not a Parquet file, or not a whole one"):
        list(_batches(slices[bad][0], ["id", "x"], 64))
    # the object gone after planning is the storage's answer, not the file's fault: raised as it is
    s3.delete_object(Bucket="arrow-in", Key=f"{prefix}/part-0.parquet")
    with pytest.raises(OSError) as gone:
        list(_batches(slices[good][0], ["id", "x"], 64))
    assert not isinstance(gone.value, UnreadableSlice)
