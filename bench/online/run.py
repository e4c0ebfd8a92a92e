"""``python -m bench.online``: our server and ``mlflow models serve`` under the same load, one run.

1. The model: the batch benchmark's (``bench.model``: the 100-tree GradientBoosting classifier on 20
   float32 features), trained once and registered in ``WORKDIR/mlflow.db`` as sklearn (version
   ``S``, alias ``sklearn``) and as its ONNX export (alias ``onnx``); a later run reuses it.
2. The servers, one at a time, each a subprocess on 127.0.0.1 stopped with SIGTERM once measured:
   ``ours-onnx`` (``scoring serve --model-uri models:/bench@onnx``: ONNX Runtime, HTTP and gRPC),
   ``mlflow`` (``mlflow models serve -m models:/bench/S --env-manager local --workers 1``: pyfunc
   ``predict`` on uvicorn, its default of one worker process, as ours is one process), ``ours-pyfunc``
   (``scoring serve --model-uri models:/bench@sklearn --backend pyfunc``: the very model MLflow
   serves), and ``mlflow-2w`` (``--workers 2``: one uvicorn worker per core).
3. Per server and protocol (our HTTP ``/predict``, our gRPC ``Predict``, MLflow's ``/invocations``
   with one record in ``dataframe_split``): a short warm-up, then single-record latency at a fixed
   open-loop rate, then the most requests per second at each number of concurrent clients. Each load
   stops at ``--requests`` requests or ``--seconds`` seconds, whichever comes first.
4. ``WORKDIR/results.json`` (rewritten after every load) and the Markdown section (printed, written to
   ``WORKDIR/results.md`` and, with ``--markdown FILE``, put between the online markers of FILE).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench import model as bench_model
from bench import report as bench_report
from bench.online import bodies, load, report, servers
from scoring.cli import positive_int

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = (
    "mlflow",
    "onnxruntime",
    "scikit-learn",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "grpcio",
    "protobuf",
    "aiohttp",
    "pandas",
    "numpy",
)
SERVERS = ("ours-onnx", "mlflow", "ours-pyfunc", "mlflow-2w")
# Distinct records sent round-robin.
POOL = 1000
# Records each server scores once, answers decoded, to check they all serve the same model.
AGREEMENT_RECORDS = 20


@dataclass(frozen=True)
class Plan:
    """One server's loads.

    Attributes:
        server: Its name, one of ``SERVERS``.
        targets: ``(protocol, client)`` pairs: ``("http", "aiohttp")``, ``("grpc", "sync")`` ...
    """

    server: str
    targets: tuple[tuple[str, str], ...]


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.online",
        description="Load our server and `mlflow models serve` with single-record requests on loopback.",
    )
    add = parser.add_argument
    add("--requests", type=positive_int, default=3000, help="most requests per load (default: 3000)")
    add("--seconds", type=_positive_float, default=8.0, help="longest a load lasts, in s (default: 8)")
    add("--rate", type=_positive_float, default=200.0, help="requests/s of the latency load (default: 200)")
    add("--clients", type=_counts, default=(1, 8, 64), help="concurrent clients (default: 1,8,64)")
    add(
        "--servers",
        type=_servers,
        default=SERVERS,
        help=f"servers, comma-separated (default: all: {','.join(SERVERS)})",
    )
    add(
        "--grpc-clients",
        type=_grpc_clients,
        default=("aio", "sync"),
        help="gRPC load generators: aio (grpc.aio) and/or sync (the stub, a thread per client); the first "
        "one loads every server, the others ours-onnx only (default: aio,sync)",
    )
    add(
        "--train-rows",
        type=positive_int,
        default=20_000,
        help="rows the model is trained on (default: 20000)",
    )
    add(
        "--workdir", type=Path, default=REPO_ROOT / "bench-workdir" / "online", help="registry, logs, results"
    )
    add("--markdown", type=Path, default=None, help="put the results section between the markers of FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every load ran and no request failed, else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench.online: model (trained once into {workdir}) ...", flush=True)
    models = bench_model.ensure_models(workdir, args.train_rows, mlp=False)
    env = servers.server_env(models.tracking_uri)
    x = bodies.records(POOL)
    encoded = {
        "predict": bodies.predict_json(x),
        "invocations": bodies.mlflow_json(x),
        "grpc": bodies.predict_grpc(x),
    }
    # What is loaded by now (MLflow, scikit-learn, the bodies) stays: no collection needs to scan it.
    gc.collect()
    gc.freeze()
    results = {
        "command": bench_report.command_line("bench.online", argv),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": 0.0,
        "machine": _machine(),
        "code": _code(),
        "settings": {
            "requests": args.requests,
            "seconds": args.seconds,
            "rate": args.rate,
            "clients": list(args.clients),
            "servers": list(args.servers),
            "grpc_clients": list(args.grpc_clients),
            "request_timeout_s": load.REQUEST_TIMEOUT_S,
            "pool": POOL,
            "train_rows": args.train_rows,
            "workdir": str(workdir),
        },
        "model": asdict(models),
        "servers": [],
        "agreement": {},
        "measurements": [],
    }
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    for plan in plans(args.servers, args.grpc_clients):
        print(f"bench.online: starting {plan.server} ...", flush=True)
        record = {"name": plan.server, "status": "ok", "reason": None}
        results["servers"].append(record)
        try:
            server = _start(plan.server, models, env, logs / f"{plan.server}.log")
        except servers.ServerFailed as e:
            record.update(
                status="failed", reason=str(e).splitlines()[0], log=str(logs / f"{plan.server}.log")
            )
            print(f"bench.online: {plan.server} FAILED: {e}", flush=True)
            for protocol, client in plan.targets:
                for shape in _shapes(args):
                    results["measurements"].append(
                        {
                            **_cell(plan.server, protocol, client, *shape),
                            "status": "failed",
                            "reason": record["reason"],
                        }
                    )
            bench_report.write_json(workdir / "results.json", results)
            continue
        record.update(
            command=shlex.join(server.command),
            log=str(server.log),
            http=server.http,
            grpc=server.grpc,
            start_s=server.start_s,
            detail=server.detail,
        )
        try:
            try:
                results["agreement"][plan.server] = _agreement(server, x[:AGREEMENT_RECORDS])
            except (OSError, KeyError, IndexError, TypeError, ValueError) as e:  # HTTPError is an OSError
                results["agreement"][plan.server] = {"error": f"{type(e).__name__}: {e}"}
            for protocol, client in plan.targets:
                target = _target(server, protocol, client, encoded)
                warm = load.closed_loop(target, 8, min(200, args.requests), min(2.0, args.seconds))
                for shape in _shapes(args):
                    cell = _cell(plan.server, protocol, client, *shape)
                    print(f"bench.online: {_tag(cell)} ...", flush=True)
                    try:
                        measured = _measure(server, target, cell, args)
                    except Exception as e:  # a load that cannot run is reported, and the others still run
                        measured = {**cell, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
                    measured["warmup_errors"] = int(sum(warm.errors.values()))
                    results["measurements"].append(measured)
                    results["duration_s"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
                    bench_report.write_json(workdir / "results.json", results)
                    print(f"bench.online: {_tag(cell)}: {report.one_line(measured)}", flush=True)
        finally:
            record["exit_code"] = server.stop()
    results["machine"]["load_after"] = _load()
    results["code"]["scoring_sha256_after"] = _code()["scoring_sha256"]
    results["duration_s"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    bench_report.write_json(workdir / "results.json", results)
    section = report.render(results)
    (workdir / "results.md").write_text(section, encoding="utf-8")
    if args.markdown:
        report.update_file(args.markdown, section)
    print("\n" + section, flush=True)
    print(f"bench.online: results in {workdir / 'results.json'}", flush=True)
    failed = [m for m in results["measurements"] if m["status"] != "ok" or m.get("errors")]
    return 1 if failed else 0


def plans(names: Sequence[str], grpc_clients: Sequence[str]) -> list[Plan]:
    """What each server is loaded with: ours over HTTP and gRPC, MLflow's over HTTP."""
    out = []
    for name in names:
        if name.startswith("ours"):
            clients = grpc_clients if name == "ours-onnx" else grpc_clients[:1]
            out.append(Plan(name, (("http", "aiohttp"), *(("grpc", c) for c in clients))))
        else:
            out.append(Plan(name, (("http", "aiohttp"),)))
    return out


def _shapes(args: argparse.Namespace) -> list[tuple[str, float]]:
    return [("rate", args.rate)] + [("clients", c) for c in args.clients]


def _cell(server: str, protocol: str, client: str, shape: str, value: float) -> dict:
    path = "Predict" if protocol == "grpc" else "/invocations" if server.startswith("mlflow") else "/predict"
    return {
        "server": server,
        "protocol": protocol,
        "client": client,
        "path": path,
        "load": shape,
        "rate": value if shape == "rate" else None,
        "clients": int(value) if shape == "clients" else None,
    }


def _tag(cell: dict) -> str:
    shape = f"{cell['rate']:g} req/s" if cell["load"] == "rate" else f"{cell['clients']} clients"
    return f"{cell['server']} {cell['protocol']} {cell['path']} ({cell['client']}), {shape}"


def _start(name: str, models: bench_model.Models, env: dict, log: Path) -> servers.Server:
    if name == "ours-onnx":
        return servers.start_ours(name, models.onnx_uri, [], env, log)
    if name == "ours-pyfunc":
        return servers.start_ours(name, models.sklearn_uri, ["--backend", "pyfunc"], env, log)
    version_uri = f"models:/{bench_model.MODEL_NAME}/{models.sklearn_version}"
    return servers.start_mlflow(name, version_uri, 2 if name == "mlflow-2w" else 1, env, log)


def _target(server: servers.Server, protocol: str, client: str, encoded: dict) -> load.Target:
    if protocol == "grpc":
        return load.Target("grpc", server.grpc, encoded["grpc"], bodies.PREDICT_METHOD, client)
    if server.name.startswith("mlflow"):
        return load.Target("http", server.http + "/invocations", encoded["invocations"])
    return load.Target("http", server.http + "/predict", encoded["predict"])


def _measure(server: servers.Server, target: load.Target, cell: dict, args: argparse.Namespace) -> dict:
    """One load, with the CPU the server, this process and everything else on the machine used meanwhile."""
    machine_before, server_before, load_before = _busy_s(), server.cpu_s(), _load()
    if cell["load"] == "rate":
        tally = load.open_loop(target, cell["rate"], args.requests, args.seconds)
    else:
        tally = load.closed_loop(target, cell["clients"], args.requests, args.seconds)
    server_s, machine_s = server.cpu_s() - server_before, _busy_s() - machine_before
    summary = tally.summary()
    sent = max(summary["sent"], 1)
    elapsed = max(summary["elapsed_s"], 1e-9)
    return {
        **cell,
        "status": "ok",
        "reason": None,
        **summary,
        "server_cpu_s": server_s,
        # The server's CPU time covers the uncounted requests too (each client's first).
        "server_cpu_ms_per_request": server_s / (sent + summary["uncounted"]) * 1000.0,
        "client_cpu_us_per_request": summary["client_cpu_s"] / sent * 1e6,
        "server_cores": server_s / elapsed,
        "client_cores": summary["client_cpu_s"] / elapsed,
        # What else ran on the machine meanwhile (other users of a shared machine), in cores.
        "other_cores": max(machine_s - server_s - summary["client_cpu_s"], 0.0) / elapsed,
        "load_average_before": load_before,
    }


def _agreement(server: servers.Server, x) -> dict:
    """The positive class's probability of a few records, one request each, answers decoded."""
    mlflow = server.name.startswith("mlflow")
    path = "/invocations" if mlflow else "/predict"
    probabilities = []
    for row_bytes in bodies.mlflow_json(x) if mlflow else bodies.predict_json(x):
        request = urllib.request.Request(
            server.http + path, data=row_bytes, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        # MLflow: {"predictions": [[p0, p1]]} (predict_proba); ours: {"probability": p1, ...}.
        probabilities.append(body["predictions"][0][1] if "predictions" in body else body["probability"])
    return {"records": len(probabilities), "probability": probabilities}


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, idle and I/O wait excluded)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _machine() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "versions": versions,
        "load_before": _load(),
        "load_after": None,
    }


def _code() -> dict:
    """The commit, and a digest of the ``scoring`` package's sources: a server changed mid-run shows."""
    package = REPO_ROOT / "scoring"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"commit": commit or "unknown", "scoring_sha256": digest.hexdigest()}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _counts(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated client counts of at least 1")
    return counts


def _servers(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in SERVERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    return names


def _grpc_clients(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in load.GRPC_CLIENTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown gRPC clients {unknown}; known: {', '.join(load.GRPC_CLIENTS)}"
        )
    return names
