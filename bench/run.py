"""``python -m bench``: measure every way as a whole process, in interleaved rounds, and report medians.

1. The datasets (one per size, and the row-at-a-time way's small one) are generated, or reused from
   the work directory; the models are trained, exported and registered once.
2. Each round runs every (way, size) once, in an order shuffled with a fixed seed per round. Every run
   is a fresh subprocess writing to a fresh directory, which is deleted after its rows are counted from
   the parquet footers (a table way's, ``ours_table``, from a pyiceberg scan of the date in the fresh
   catalog in that directory, its rejects from ``TABLE__rejects``). A run that exits non-zero, times
   out or writes fewer (or more) rows than its input has is failed and never timed.
3. ``WORKDIR/results.json`` holds every measurement, the machine and the command (rewritten after each
   run); the Markdown report is printed, written to ``WORKDIR/results.md`` and, with ``--markdown
   FILE``, put between the markers of FILE's ``--section`` (``results``, or ``lineup`` for a run of the
   several-models-in-one-pass ways that leaves the other ways' results alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench import data, measure, report
from bench.ways import (
    CATALOG,
    CATALOG_FILE,
    GPU_WAYS,
    PEER_MODULES,
    RETRAINED_WAYS,
    TABLE,
    WAYS,
    Way,
    catalog_properties,
    command,
    environment,
)
from scoring.cli import positive_int

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSIONS = (
    "pyspark",
    "onnxruntime",
    "mlflow",
    "scikit-learn",
    "skl2onnx",
    "pyarrow",
    "pandas",
    "numpy",
    "daft",
    "ray",
)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark batch scoring ways, each as a whole process: medians of interleaved rounds.",
    )
    add = parser.add_argument
    add(
        "--sizes",
        type=_sizes,
        default=(1_000_000, 4_000_000),
        help="input rows, comma-separated (default: 1000000,4000000)",
    )
    add("--rounds", type=positive_int, default=3, help="runs of every way at every size (default: 3)")
    add(
        "--ways",
        type=_ways,
        default=tuple(WAYS),
        help=f"ways, comma-separated (default: all: {','.join(WAYS)})",
    )
    add("--workdir", type=Path, default=REPO_ROOT / "bench-workdir", help="data, registry, logs and results")
    add("--master", default="local[2]", help="Spark master of every Spark way (default: local[2])")
    add("--seed", type=int, default=0, help="seed of the rounds' shuffles (default: 0)")
    add(
        "--row-udf-rows",
        type=positive_int,
        default=50_000,
        help="rows of row_udf's own dataset (default: 50000)",
    )
    add(
        "--train-rows",
        type=positive_int,
        default=20_000,
        help="rows the models are trained on (default: 20000)",
    )
    add(
        "--gpu",
        action="store_true",
        help="also the MLP on CUDA vs CPU (the raw way), where CUDA is available",
    )
    add(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Spark setting for every Spark process, ours included (through PYSPARK_SUBMIT_ARGS); repeatable",
    )
    add("--timeout", type=positive_int, default=3600, help="seconds before a run is killed and failed")
    add("--markdown", type=Path, help="put the report between the markers of this file (or write it there)")
    add(
        "--section",
        choices=tuple(report.SECTIONS),
        default="results",
        help="which section of --markdown the report is: results (every way; default) or lineup "
        "(several models in one pass, apart from the other ways' results)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run succeeded, 1 when any failed, 2 when a peer is not installed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    missing = missing_peers(args.ways)
    if missing:
        print(
            f"bench: {', '.join(missing)} need the bench extra (Daft, Ray), not installed here: "
            f'run `make bench`, or `{sys.executable} -m pip install -e ".[bench]"`, '
            "or leave them out of --ways",
            file=sys.stderr,
        )
        return 2
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    main_ways = [WAYS[name] for name in args.ways if not WAYS[name].subset]
    subset_ways = [WAYS[name] for name in args.ways if WAYS[name].subset]
    gpu_status = _gpu_status(args.gpu)
    gpu_ways = list(GPU_WAYS.values()) if gpu_status == "measured" else []

    print(f"bench: work directory {workdir}", flush=True)
    inputs = {rows: data.ensure_dataset(workdir, rows) for rows in args.sizes if main_ways or gpu_ways}
    if subset_ways:
        inputs[args.row_udf_rows] = data.ensure_dataset(workdir, args.row_udf_rows)
    from bench.model import ensure_models

    retrained = any(name in RETRAINED_WAYS for name in args.ways)
    models = ensure_models(workdir, args.train_rows, mlp=bool(gpu_ways), retrained=retrained)
    env = _environment(models.tracking_uri, args.spark_conf)

    results = {
        "command": report.command_line("bench", argv),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": 0.0,
        "machine": _machine(),
        "settings": {
            "sizes": list(args.sizes),
            "rounds": args.rounds,
            "ways": list(args.ways),
            "master": args.master,
            "cores": _spark_cores(args.master),
            "seed": args.seed,
            "row_udf_rows": args.row_udf_rows,
            "train_rows": args.train_rows,
            "spark_conf": list(args.spark_conf),
            "timeout_s": args.timeout,
            "workdir": str(workdir),
        },
        "models": dataclasses.asdict(models),
        "gpu": {"status": gpu_status},
        "measurements": [],
    }
    logs = workdir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    plan = [(way, rows) for way in main_ways + gpu_ways for rows in args.sizes] + [
        (way, args.row_udf_rows) for way in subset_ways
    ]
    for round_number in range(1, args.rounds + 1):
        order = list(plan)
        random.Random(args.seed * 1_000_003 + round_number).shuffle(order)
        for position, (way, rows) in enumerate(order, start=1):
            tag = f"[round {round_number}/{args.rounds}, {position}/{len(order)}] {way.name} rows={rows:,}"
            print(f"bench: {tag} ...", flush=True)
            record = _run_once(way, rows, inputs[rows], models, env, args, workdir, logs)
            record.update({"round": round_number, "order": position})
            results["measurements"].append(record)
            results["duration_s"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
            report.write_json(workdir / "results.json", results)
            if record["status"] == "ok":
                peak = record["peak_rss_bytes"] / report.MIB
                print(f"bench: {tag}: {record['wall_s']:.1f} s, peak {peak:,.0f} MiB", flush=True)
            else:
                print(f"bench: {tag}: FAILED ({record['reason']}); log: {record['log']}", flush=True)

    results["machine"]["load_after"] = _load()
    results["duration_s"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    report.write_json(workdir / "results.json", results)
    section = report.render(results, args.section)
    (workdir / "results.md").write_text(section, encoding="utf-8")
    if args.markdown:
        report.update_file(args.markdown, section, args.section)
    print("\n" + section, flush=True)
    print(f"bench: results in {workdir / 'results.json'}", flush=True)
    return 0 if all(m["status"] == "ok" for m in results["measurements"]) else 1


def missing_peers(ways: Sequence[str]) -> list[str]:
    """The ways among ``ways`` whose package (of setup.py's ``bench`` extra) is not installed."""
    return [
        name for name in ways if name in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[name]) is None
    ]


def _run_once(way: Way, rows: int, input_root: Path, models, env, args, workdir: Path, logs: Path) -> dict:
    """One run of ``way`` on ``rows`` rows, in a fresh directory that is deleted afterwards."""
    number = len(list(logs.iterdir())) + 1
    scratch = workdir / "runs" / f"{number:04d}-{way.name}-{rows}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    output = scratch / "out"
    if way.table:
        output.mkdir()  # the fresh catalog's SQLite file is made in it, which needs its directory
    line = command(way, models, input_root, output, args.master)
    log = logs / f"{number:04d}-{way.name}-rows={rows}.log"
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    unreadable = None
    try:
        outcome = measure.run_process(line, environment(way, output, env), scratch, log, args.timeout)
        try:
            written, columns, rejected = _count(way, output)
        except Exception as e:  # pyarrow's ArrowInvalid is a ValueError; pyiceberg's and SQLite's vary
            written, columns, rejected, unreadable = 0, [], 0, f"unreadable output: {e}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reason = None
    if outcome.timed_out:
        reason = f"killed after {args.timeout} s"
    elif outcome.returncode != 0:
        reason = f"exit {outcome.returncode}" + (": provider missing" if outcome.returncode == 3 else "")
    elif unreadable:
        reason = unreadable
    elif written != rows:
        reason = f"wrote {written:,} of {rows:,} rows" + (f" ({rejected:,} rejected)" if rejected else "")
    ok = reason is None
    return {
        "way": way.name,
        "rows": rows,
        "status": "ok" if ok else "failed",
        "reason": reason,
        "returncode": outcome.returncode,
        "wall_s": outcome.wall_s if ok else None,
        "peak_rss_bytes": outcome.peak_rss_bytes if ok else None,
        "elapsed_s": outcome.wall_s,
        "memory_samples": outcome.samples,
        "rows_written": written,
        "rows_rejected": rejected,
        "rows_verified": written == rows,
        "columns": columns,
        "started_at": started,
        "command": shlex.join(line),
        "log": str(log),
    }


def _count(way: Way, output: Path) -> tuple[int, list[str], int]:
    """Rows a run wrote, its columns, and the rows it rejected: of its directory, or of its table."""
    if way.table:
        if not (output / CATALOG_FILE).is_file():  # the run failed before it made its catalog
            return 0, [], 0
        return data.count_table_rows(CATALOG, catalog_properties(output), TABLE)
    written, columns = data.count_rows(output) if output.is_dir() else (0, [])
    rejects = output / "_rejects"
    return written, columns, data.count_rows(rejects)[0] if rejects.is_dir() else 0


def _environment(tracking_uri: str, spark_conf: Sequence[str]) -> dict[str, str]:
    """The environment of every run: this interpreter's packages, the bench registry, loopback Spark."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYSPARK_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_REGISTRY_URI"] = tracking_uri
    # Spark's Python workers import the ways' functions from the bench package by name.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    if spark_conf:
        env["PYSPARK_SUBMIT_ARGS"] = (
            " ".join(f"--conf {shlex.quote(kv)}" for kv in spark_conf) + " pyspark-shell"
        )
    return env


def _gpu_status(asked: bool) -> str:
    if not asked:
        return "not run (pass --gpu to measure it)"
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (
            f"not measured: no CUDA provider (onnxruntime {onnxruntime.__version__} has "
            f"{', '.join(providers)})"
        )
    return "measured"


def _machine() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        versions["java"] = (java.stderr or java.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        versions["java"] = "unknown"
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "versions": versions,
        "load_before": _load(),
        "load_after": None,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _spark_cores(master: str) -> int:
    """Cores a local master gives Spark: ``local[N]`` (or ``local[N,F]``) is N, ``local[*]`` all."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if found is None or found.group(1) == "*":
        return os.cpu_count() or 1
    return int(found.group(1) or 1)


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(v.replace("_", "")) for v in value.split(",") if v.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < data.FILES:
        raise argparse.ArgumentTypeError(f"expected comma-separated row counts of at least {data.FILES}")
    return sizes


def _ways(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in WAYS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown ways {unknown}; known: {', '.join(WAYS)}")
    return names
