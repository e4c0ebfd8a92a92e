"""The publish step alone on S3 (``python -m bench.publish_s3``), at a tiny size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not installed: it lives beside scoring/ in the checkout
    sys.path.insert(0, str(ROOT))

from bench import publish_s3  # noqa: E402


def cells(text: str, way: str) -> dict[str, str]:
    """The row of ``way`` (``directory`` or ``table``) in the printed table, by column title."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        if row[0] == publish_s3.WAY_NAMES[way]:
            return dict(zip(header, row, strict=True))
    raise AssertionError(f"no row for {way} in:\n{text}")


def test_both_outputs_are_published_and_only_the_directory_copies(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    flags = ["--files", "2", "--rows", "1000", "--rounds", "1", "--markdown", str(doc)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.publish_s3", *flags],
        cwd=tmp_path,  # an unconfigured catalog would show up as ./warehouse here
        env={**_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "2 parquet files, 1,000 rows" in out
    directory, table = cells(out, "directory"), cells(out, "table")
    # The table's commit moves no data: no object copied, no byte; the swap copies every file (and the
    # manifest) of the new version in and of the old one aside, each copy followed by a delete.
    assert (table["objects copied"], table["bytes copied"], table["deletes"]) == ("0", "0", "0")
    assert int(directory["objects copied"]) >= 2 * 2 and int(directory["deletes"]) >= 4
    assert int(directory["bytes copied"].replace(",", "")) > 0
    assert "UpdateTable" in table["catalog calls"] and directory["catalog calls"] == "none"
    for row in (directory, table):
        assert float(row["publish (s), median"]) > 0
    assert not (tmp_path / "warehouse").exists()
    # --markdown: the same section, appended to a file without its markers.
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n" + publish_s3.START) and text.rstrip().endswith(publish_s3.END)
    assert cells(text, "table")["bytes copied"] == "0"


def _env() -> dict[str, str]:
    # Only this run's moto: no inherited endpoint or catalog.
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYICEBERG_"))}
