"""Progress lines: a slow run logs rising counts from Spark's status store and ends at the footers' total."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
from conftest import DATE, OTHER_DATE

from scoring import demo, faults
from scoring.batch import local
from scoring.batch.backfill import DateResult, ProgressPrinter, range_progress
from scoring.batch.progress import duration_text, eta_seconds, progress_line
from scoring.cli import main

ROWS = 3_000
FILES = 6
LINE = re.compile(
    r"progress date=(?P<date>[\d-]+): (?P<done>[\d,]+) of (?P<total>[\d,]+) rows \((?P<share>[\d.]+)%\), "
    r"(?P<rate>[\d,]+) rows/s, (?P<left>ETA \w+|done)"
)


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """One date in several files: each file is a task, whose end moves the count."""
    root = tmp_path_factory.mktemp("progress-input")
    demo.write_partitioned(demo.make_customers(ROWS, DATE, seed=5), root, DATE, files=FILES)
    return root


@pytest.mark.parametrize("executor", ["spark", "local"])
def test_a_slow_run_logs_rising_counts_that_end_at_the_total(
    spark, registry, many_files, tmp_path, caplog, monkeypatch, executor
):
    # Every 100-row batch takes 0.15 s more, so each of the 6 tasks scores for 0.75 s and the run lasts
    # a few seconds on 2 cores. Spark's Python workers take their environment from the UDF's; the
    # local workers, from the driver's.
    slow = "slow-batches:0.15"
    if executor == "spark":
        monkeypatch.setitem(spark.sparkContext.environment, faults.ENV, slow)
        # Spark packs small files into one task up to the bytes per core; a large open cost keeps each
        # file its own task, as files of production size are.
        packing = spark.conf.get("spark.sql.files.openCostInBytes")
        spark.conf.set("spark.sql.files.openCostInBytes", str(256 << 20))
    else:
        monkeypatch.setenv(faults.ENV, slow)
        # Slices of a row group each, as slices of production size are many per core.
        monkeypatch.setattr(local, "PARTITION_BYTES", 1)
    try:
        with caplog.at_level(logging.INFO, logger="scoring.batch.progress"):
            code = main(
                ["score", "--model-uri", f"models:/{demo.MODEL_NAME}@champion", "--input", str(many_files),
                 "--output", str(tmp_path / "out"), "--date", DATE.isoformat(), "--id-column", "customer_id",
                 "--batch-size", "100", "--progress-seconds", "0.25", "--no-report", "--executor", executor]
            )  # fmt: skip
    finally:
        if executor == "spark":
            spark.conf.set("spark.sql.files.openCostInBytes", packing)
    assert code == 0

    lines = [m for m in map(LINE.fullmatch, caplog.messages) if m]
    assert len(lines) >= 3, caplog.messages
    done = [int(m["done"].replace(",", "")) for m in lines]
    assert {m["date"] for m in lines} == {DATE.isoformat()}
    assert {int(m["total"].replace(",", "")) for m in lines} == {ROWS}, "the total comes from the footers"
    assert done == sorted(done), f"counts went down: {done}"
    assert any(0 < n < ROWS for n in done), f"no count between 0 and the total: {done}"
    assert done[-1] == ROWS and lines[-1]["left"] == "done" and lines[-1]["share"] == "100.0"
    # The count is of the scoring pass alone: the earlier duplicate check read the ids already.
    assert all(n <= ROWS for n in done)


def test_progress_seconds_zero_logs_no_line(spark, registry, many_files, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="scoring.batch.progress"):
        code = main(
            ["score", "--model-uri", f"models:/{demo.MODEL_NAME}@champion", "--input", str(many_files),
             "--output", str(tmp_path / "out"), "--date", DATE.isoformat(), "--id-column", "customer_id",
             "--progress-seconds", "0", "--no-report"]
        )  # fmt: skip
    assert code == 0
    assert not [m for m in caplog.messages if m.startswith("progress ")]


def test_the_line_reads_as_people_read_it():
    assert progress_line("date=2026-11-01", 1_200_000, 10_000_000, 14.0) == (
        "progress date=2026-11-01: 1,200,000 of 10,000,000 rows (12.0%), 85,714 rows/s, ETA 1m43s"
    )
    assert progress_line("date=2026-11-01", 0, 500, 3.0).endswith("0 rows/s, ETA unknown")
    assert progress_line("date=2026-11-01", 500, 500, 2.0).endswith("(100.0%), 250 rows/s, done")
    assert eta_seconds(0, 10, 5.0) is None and eta_seconds(5, 10, 5.0) == 5.0
    assert [duration_text(s) for s in (0.4, 42, 187, 3720)] == ["0s", "42s", "3m07s", "1h02m"]


def test_backfill_prints_each_date_as_it_finishes_with_the_ranges_eta(
    spark, registry, input_dir, tmp_path, capsys
):
    code = main(
        ["backfill", "--model-uri", f"models:/{demo.MODEL_NAME}@champion", "--input", str(input_dir),
         "--output", str(tmp_path), "--start", DATE.isoformat(), "--end", OTHER_DATE.isoformat(),
         "--id-column", "customer_id", "--no-report"]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scored = "scored   400 scored, 0 rejected"
    assert re.fullmatch(rf"{DATE}  {scored}  \(1 of 2 dates in \w+, ETA \w+\)", lines[0]), lines
    assert re.fullmatch(rf"{OTHER_DATE}  {scored}  \(2 of 2 dates in \w+, done\)", lines[1]), lines
    assert lines[2] == "2 scored, 0 skipped, 0 failed"


def test_the_ranges_eta_is_the_mean_time_per_date_times_the_dates_left(capsys):
    assert range_progress(2, 30, 250.0) == "2 of 30 dates in 4m10s, ETA 58m20s"
    assert range_progress(0, 3, 0.0) == "0 of 3 dates in 0s, ETA unknown"
    ticks = iter([100.0, 130.0])
    printer = ProgressPrinter(clock=lambda: next(ticks))
    printer(DateResult(dt.date(2026, 11, 1), "failed", "input x: no rows"), 1, 4)
    expected = "2026-11-01  failed   input x: no rows  (1 of 4 dates in 30s, ETA 1m30s)\n"
    assert capsys.readouterr().out == expected
