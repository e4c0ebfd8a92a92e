"""``scoring backfill``: dates in order, one pinned model, published dates skipped, failures reported."""

from __future__ import annotations

import json

from conftest import DATE, OTHER_DATE

from scoring import demo
from scoring.cli import main


def backfill(input_dir, output, end, *extra: str) -> int:
    return main(
        ["backfill", "--model-uri", f"models:/{demo.MODEL_NAME}@champion", "--input", str(input_dir),
         "--output", str(output), "--start", DATE.isoformat(), "--end", end.isoformat(),
         "--id-column", "customer_id", *extra]
    )  # fmt: skip


def test_backfill_reports_each_date_and_skips_what_is_published(spark, registry, input_dir, tmp_path, capsys):
    missing = OTHER_DATE.replace(day=OTHER_DATE.day + 1)  # no input for this date

    assert backfill(input_dir, tmp_path, missing) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{DATE}  scored ")
    assert lines[1].startswith(f"{OTHER_DATE}  scored ")
    assert lines[2].startswith(f"{missing}  failed ") and "no rows for date=" in lines[2]
    assert lines[3] == "2 scored, 0 skipped, 1 failed"
    manifest = json.loads((tmp_path / f"date={DATE}" / "_manifest.json").read_text())
    assert manifest["model"]["pinned_uri"] == f"models:/{demo.MODEL_NAME}/{registry['onnx']}"

    before = (tmp_path / f"date={DATE}" / "_manifest.json").read_bytes()
    assert backfill(input_dir, tmp_path, OTHER_DATE) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0 scored, 2 skipped, 0 failed"
    assert (tmp_path / f"date={DATE}" / "_manifest.json").read_bytes() == before

    assert backfill(input_dir, tmp_path, DATE, "--force") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 scored, 0 skipped, 0 failed"
    assert (tmp_path / f"date={DATE}" / "_manifest.json").read_bytes() != before


def test_backfill_refuses_an_empty_range(spark, registry, input_dir, tmp_path, capsys):
    code = main(
        ["backfill", "--model-uri", f"models:/{demo.MODEL_NAME}@champion", "--input", str(input_dir),
         "--output", str(tmp_path), "--start", OTHER_DATE.isoformat(), "--end", DATE.isoformat()]
    )  # fmt: skip
    assert code == 1
    assert f"error: --end {DATE} is before --start {OTHER_DATE}" in capsys.readouterr().err


def test_backfill_pins_its_challengers_and_rescores_when_the_lineup_changes(
    spark, registry, input_dir, tmp_path, capsys
):
    challenger = ("--challenger", f"sk=models:/{demo.MODEL_NAME}@sklearn")
    assert backfill(input_dir, tmp_path, DATE, *challenger) == 0
    manifest = json.loads((tmp_path / f"date={DATE}" / "_manifest.json").read_text())
    assert [(c["name"], c["model"]["pinned_uri"]) for c in manifest["challengers"]] == [
        ("sk", f"models:/{demo.MODEL_NAME}/{registry['sklearn']}")
    ]
    assert manifest["arguments"]["lineup"]["challengers"] == {
        "sk": f"models:/{demo.MODEL_NAME}/{registry['sklearn']}"
    }
    capsys.readouterr()
    assert backfill(input_dir, tmp_path, DATE, *challenger) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0 scored, 1 skipped, 0 failed"
    assert backfill(input_dir, tmp_path, DATE) == 0  # the champion alone: another lineup, rescored
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 scored, 0 skipped, 0 failed"
