"""The driver's peak memory for validation, drift and the report, at a given number of rows a date.

Generates two published dates of scored output on local disk, in the layout ``scoring validate`` and
``scoring report`` read (``OUTPUT/date=D/part-*.parquet``, ``_manifest.json``, ``_SUCCESS``), each of
``--rows`` rows: the columns the job writes for a binary model with one challenger, in files of
``--rows-per-file`` rows and row groups of the job's size. Then, in a child process each, runs what the
driver runs after publishing the later date: ``validate`` (``validate_partition``: the checks and the
drift against the earlier date) and ``report`` (``write_report``: the validation again, the drift's
histograms and the challenger's scatter). Each child reports its own peak resident memory (the
kernel's high-water mark, ``VmHWM``); each step runs ``--repeat`` times, and the medians are compared.

Usage::

    .venv/bin/python tools/driver_memory.py --rows 10000000 100000000 [--repeat 3] [--workdir DIR]

The generated dates are kept under ``--workdir`` and reused by later runs (``--regenerate`` writes
them again). Two dates of 100M rows take about 4 GB of disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DATES = (dt.date(2026, 11, 1), dt.date(2026, 11, 2))
# The job's row groups (scoring.batch.arrow_pass.ROW_GROUP_ROWS): the reader's unit of memory.
ROW_GROUP_ROWS = 1_048_576
CHALLENGER = "shadow"

SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64()),
        pa.field("prediction", pa.int64()),
        pa.field("probability", pa.float64()),
        pa.field(f"challenger_{CHALLENGER}_prediction", pa.int64()),
        pa.field(f"challenger_{CHALLENGER}_probability", pa.float64()),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)
_TYPE_NAMES = {pa.int64(): "bigint", pa.float64(): "double", pa.string(): "string"}

# What the child runs: the driver's work after publishing. It reports its own peak resident memory
# (VmHWM), not getrusage's: a child's ru_maxrss starts from its parent's peak at the fork.
_CHILD = """
import datetime as dt, json, sys, time
def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
start = time.perf_counter()
from scoring.dataset.report import write_report
from scoring.dataset.validate import report_json, validate_partition
imported = peak_kib()
root, date, what = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), sys.argv[3]
if what == "validate":
    drift = json.loads(report_json(validate_partition(root, date)))["drift"]
else:
    write_report(root, date)
    drift = None
print(json.dumps({"peak_kib": peak_kib(), "imports_kib": imported, "seconds": time.perf_counter() - start,
                  "drift": drift}))
"""


def main(argv: list[str] | None = None) -> int:
    """Generate the dates at each size, measure each step, print one JSON line each and the ratios."""
    args = _parser().parse_args(argv)
    results = []
    for rows in args.rows:
        root = args.workdir / f"rows={rows}"
        if args.regenerate or not (root / f"date={DATES[1]}" / "_SUCCESS").exists():
            # In a child of its own, so that this process stays small (see _CHILD).
            subprocess.run([sys.executable, __file__, "--generate", str(root), str(rows),
                            str(args.rows_per_file)], check=True)  # fmt: skip
        for what in args.steps:
            for attempt in range(args.repeat):
                result = {"rows": rows, "step": what, "attempt": attempt + 1, **measure(root, what)}
                print(json.dumps(result), flush=True)
                results.append(result)
    _print_ratios(results, args.rows, args.steps)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--rows-per-file", type=int, default=5_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/driver-memory"))
    parser.add_argument("--steps", nargs="+", choices=("validate", "report"), default=["validate", "report"])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step (the median is compared)")
    parser.add_argument("--regenerate", action="store_true", help="write the dates again")
    return parser


def generate(root: Path, rows: int, rows_per_file: int) -> None:
    """Write both dates under ``root`` as published partitions of ``rows`` rows each."""
    shutil.rmtree(root, ignore_errors=True)
    for offset, date in enumerate(DATES):
        started = time.perf_counter()
        directory = root / f"date={date}"
        directory.mkdir(parents=True)
        files = _write_files(directory, rows, rows_per_file, seed=offset, shift=0.2 * offset)
        manifest = _manifest(root, date, files)
        (directory / "_manifest.json").write_text(json.dumps(manifest, indent=2))
        (directory / "_SUCCESS").write_text("")
        took = time.perf_counter() - started
        print(f"generated {directory}: {rows:,} rows in {len(files)} files, {took:.0f} s", file=sys.stderr)


def _write_files(directory: Path, rows: int, rows_per_file: int, seed: int, shift: float) -> list[dict]:
    """Write the date's files, and list them as the manifest does.

    The ids are unique, the probability beta-distributed (``shift`` added to its first parameter, so
    that the later date drifts a little), and the challenger mostly agrees with it.
    """
    rng = np.random.default_rng(seed)
    files, first = [], 0
    for index in range((rows + rows_per_file - 1) // rows_per_file):
        count = min(rows_per_file, rows - first)
        name = f"part-{index:05d}.snappy.parquet"
        with pq.ParquetWriter(directory / name, SCHEMA, compression="snappy") as writer:
            for start in range(0, count, ROW_GROUP_ROWS):
                size = min(ROW_GROUP_ROWS, count - start)
                writer.write_table(_rows(rng, first + start, size, shift), row_group_size=ROW_GROUP_ROWS)
        files.append({"name": name, "rows": count})
        first += count
    return files


def _rows(rng: np.random.Generator, first: int, size: int, shift: float) -> pa.Table:
    probability = rng.beta(2.0 + shift, 5.0, size)
    challenger = np.clip(probability + rng.normal(0.0, 0.03, size), 0.0, 1.0)
    return pa.table(
        [
            pa.array(np.arange(first, first + size, dtype=np.int64)),
            pa.array((probability > 0.5).astype(np.int64)),
            pa.array(probability),
            pa.array((challenger > 0.5).astype(np.int64)),
            pa.array(challenger),
            pa.array(["bench"] * size, pa.string()),
            pa.array(["2"] * size, pa.string()),
        ],
        schema=SCHEMA,
    )


def _manifest(root: Path, date: dt.date, files: list[dict]) -> dict:
    """A manifest with the fields the validator checks and the report shows, as the job writes them."""
    rows = sum(f["rows"] for f in files)
    now = dt.datetime.now(dt.UTC)
    model = {
        "backend": "onnx", "features": [{"name": "f00", "type": "float"}], "name": "bench",
        "pinned_uri": "models:/bench/2", "run_id": "generated", "uri": "models:/bench@champion",
        "version": "2",
        "scores": {"classes": [0, 1], "methods": {"prediction": "onnx output label",
                   "probability": "onnx output probabilities"}, "prediction_type": "long",
                   "probability": "binary", "requested": "auto"},
    }  # fmt: skip
    challenger = {
        "name": CHALLENGER, "model": {**model, "pinned_uri": "models:/bench/3", "version": "3"},
        "agreement": {"pearson": 0.99, "spearman": 0.99, "mean_abs_diff": 0.02, "p99_abs_diff": 0.08,
                      "flip_share": 0.01, "rows": rows},
    }  # fmt: skip
    return {
        "ab": None, "challengers": [challenger], "cost": None, "decision_threshold": 0.5, "ensemble": None,
        "manifest_version": 1, "package_version": "0.1.0", "spark_version": "none",
        "run_id": f"date={date}--generated", "arguments": {"id_columns": ["customer_id"]},
        "counts": {"input": rows, "rejected": 0, "scored": rows},
        "started_at": (now - dt.timedelta(seconds=60)).isoformat(), "finished_at": now.isoformat(),
        "input": {"files": len(files), "path": "generated", "rows": rows, "skipped_files": []},
        "model": model,
        "output": {"columns": [{"name": f.name, "type": _TYPE_NAMES[f.type]} for f in SCHEMA],
                   "files": files, "path": str(root), "rows": rows, "table": None},
        "partition": {"column": "date", "value": date.isoformat()},
        "rejects": {"by_reason": {}, "files": [], "path": f"{root}/_rejects", "rows": 0},
        "resources": {"cores": os.cpu_count(), "engine": "arrow"},
    }  # fmt: skip


def measure(root: Path, what: str) -> dict:
    """Run ``what`` on the later date in a child process: its peak RSS, duration and what it printed."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), DATES[1].isoformat(), what],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    printed = json.loads(child.stdout.strip().splitlines()[-1])
    drift = printed["drift"]
    return {
        "peak_rss_mib": round(printed["peak_kib"] / 1024, 1),
        "imports_mib": round(printed["imports_kib"] / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "psi": drift and drift["psi"],
        "method": drift and drift.get("method"),
    }


def _print_ratios(results: list[dict], sizes: list[int], steps: list[str]) -> None:
    """Each step's median peak at each size, and the largest size's over the smallest's."""
    medians = {}
    for step in steps:
        for rows in sizes:
            peaks = [r["peak_rss_mib"] for r in results if (r["rows"], r["step"]) == (rows, step)]
            medians[(rows, step)] = float(np.median(peaks))
            print(f"{step} at {rows:,} rows: median peak {medians[(rows, step)]} MiB of {sorted(peaks)}")
        if len(sizes) > 1:
            low, high = medians[(sizes[0], step)], medians[(sizes[-1], step)]
            print(f"{step}: x{high / low:.2f} from {sizes[0]:,} to {sizes[-1]:,} rows")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--generate"]:
        generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
