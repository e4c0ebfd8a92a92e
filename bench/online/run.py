"""``python -m bench.online``: our server, with 1 and 2 workers, and ``mlflow models serve``, in one run.

1. The models, trained once into ``WORKDIR`` and reused by later runs: the batch benchmark's
   (``bench.model``: a 100-tree GradientBoosting classifier on 20 float32 features, registered as sklearn,
   alias ``sklearn``, and as its ONNX export, alias ``onnx``), and a scikit-learn pipeline logged the
   ordinary way (``bench.online.pipeline``: StandardScaler and LogisticRegression on 30 features).
2. The servers (``SPECS``), one at a time, each a subprocess on 127.0.0.1 stopped with SIGTERM once
   measured: ``scoring serve`` on the ONNX export (``ours-onnx``), on the sklearn model through
   ``--backend pyfunc`` (``ours-pyfunc``) and on the pipeline (``ours-pipeline``), with ``--workers 2``
   for ``-2w``; ``mlflow models serve --env-manager local`` on the sklearn model (``mlflow``: its
   default of one worker; ``mlflow-2w``) and on the pipeline (``mlflow-pipeline``).
3. Per server and protocol (our HTTP ``/predict``, our gRPC ``Predict``, MLflow's ``/invocations``
   with one record in ``dataframe_split``): a short warm-up; single-record latency at a fixed open-loop
   rate (the Python client, ``bench.online.load``); the most requests per second at each number of
   concurrent clients (wrk for HTTP, h2load for gRPC: ``bench.online.generators``; the Python client
   where they are not installed); then, for our HTTP, a burst at ``--burst-factor`` times the
   requests/s measured at the most clients (h2load), with the 503s counted and timed apart.
4. ``WORKDIR/results.json`` (rewritten after every server) and the Markdown section (printed, written to
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

import numpy as np
import psutil

from bench import data
from bench import model as bench_model
from bench import report as bench_report
from bench.online import bodies, generators, load, pipeline, report, servers
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
# Distinct records per model, sent round-robin (h2load sends the first one only).
POOL = 1000
# Records each server scores once, answers decoded, to check they all serve their model.
AGREEMENT_RECORDS = 20
LOAD_GENERATORS = ("auto", "c", "python")


@dataclass(frozen=True)
class ServerSpec:
    """What one server of the benchmark is.

    Attributes:
        kind: ``ours`` (``scoring serve``) or ``mlflow`` (``mlflow models serve``).
        model: ``onnx`` or ``sklearn`` (the batch benchmark's classifier, exported or not), or
            ``pipeline``.
        workers: Processes serving its port.
        baseline: The ``mlflow models serve`` of the same model with one worker, its ratios' reference.
        one_worker: For a server of 2 workers, the same server with one.
    """

    kind: str
    model: str
    workers: int = 1
    baseline: str = "mlflow"
    one_worker: str | None = None


SPECS = {
    "ours-onnx": ServerSpec("ours", "onnx"),
    "ours-onnx-2w": ServerSpec("ours", "onnx", 2, one_worker="ours-onnx"),
    "ours-pyfunc": ServerSpec("ours", "sklearn"),
    "ours-pipeline": ServerSpec("ours", "pipeline", baseline="mlflow-pipeline"),
    "ours-pipeline-2w": ServerSpec("ours", "pipeline", 2, "mlflow-pipeline", "ours-pipeline"),
    "mlflow": ServerSpec("mlflow", "sklearn"),
    "mlflow-2w": ServerSpec("mlflow", "sklearn", 2, one_worker="mlflow"),
    "mlflow-pipeline": ServerSpec("mlflow", "pipeline", baseline="mlflow-pipeline"),
}
SERVERS = tuple(SPECS)


@dataclass(frozen=True)
class Requests:
    """One model's requests, encoded once, and the files the C load generators read.

    Attributes:
        features: The model's input columns.
        records: The records, a row each.
        predict: Our ``/predict`` bodies.
        invocations: MLflow's ``/invocations`` bodies.
        grpc: Serialized ``PredictRequest`` messages.
        files: ``predict``, ``invocations`` (a body per line, for wrk), ``predict-one`` (the first
            ``/predict`` body, for the burst) and ``grpc-frame`` (the first message framed, for h2load).
    """

    features: tuple[str, ...]
    records: np.ndarray
    predict: list[bytes]
    invocations: list[bytes]
    grpc: list[bytes]
    files: dict[str, Path]


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.online",
        description="Load our server (1 and 2 workers) and `mlflow models serve` with single-record "
        "requests on loopback.",
    )
    add = parser.add_argument
    add("--requests", type=positive_int, default=3000, help="most requests per Python load (default: 3000)")
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
        "--load-generator",
        choices=LOAD_GENERATORS,
        default="auto",
        help="closed loops and the burst on wrk and h2load (c), on the Python client (python: no burst), "
        "or on the C ones where both are installed (auto, the default)",
    )
    add(
        "--burst-factor",
        type=_positive_float,
        default=4.0,
        help="the burst offers this times the req/s measured at the most clients (default: 4)",
    )
    add("--burst-seconds", type=_positive_float, default=4.0, help="how long the burst lasts (default: 4)")
    add(
        "--serve-flags",
        type=shlex.split,
        default=[],
        help='more flags for every `scoring serve`, as one string: --serve-flags="--max-queue 8"',
    )
    add(
        "--train-rows",
        type=positive_int,
        default=20_000,
        help="rows the models are trained on (default: 20000)",
    )
    add(
        "--workdir", type=Path, default=REPO_ROOT / "bench-workdir" / "online", help="registry, logs, results"
    )
    add("--markdown", type=Path, default=None, help="put the results section between the markers of FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every load ran and no request failed, else 1.

    A burst's 503s are what it measures, not failures.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    generator = _generator(args.load_generator)
    started = dt.datetime.now(dt.UTC)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench.online: models (trained once into {workdir}) ...", flush=True)
    models = bench_model.ensure_models(workdir, args.train_rows, mlp=False)
    uris = _model_uris(args.servers, models, workdir, args.train_rows)
    requests = _requests(args.servers, workdir)
    references = {family: _reference(uris[family], requests[family]) for family in requests}
    env = servers.server_env(models.tracking_uri)
    # What is loaded by now (MLflow, scikit-learn, the bodies) stays: no collection needs to scan it.
    gc.collect()
    gc.freeze()
    results = _results(argv, args, started, workdir, models, uris, generator, references)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    for name in args.servers:
        _run_server(name, uris, requests, env, logs, args, generator, results)
        results["duration_s"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
        bench_report.write_json(workdir / "results.json", results)
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
    return 1 if failed_loads(results["measurements"]) else 0


def failed_loads(measurements: Sequence[dict]) -> list[dict]:
    """The loads that make the run fail: any that could not run, and our servers' errors.

    A burst's 503s and the errors of its overload are what it measures (the goals judge them), and
    ``mlflow models serve`` timing out at a rate it cannot keep up with is a result, not a failure.
    """
    return [
        m
        for m in measurements
        if m["status"] != "ok" or (m["load"] != "burst" and m["errors"] and m["server"].startswith("ours"))
    ]


def plans(name: str, generator: str, clients: Sequence[int]) -> list[dict]:
    """The loads of one server, in order, as cells of ``results.json`` (what, not yet how much).

    Ours: HTTP then gRPC, each at the rate and at every number of clients, and a burst after HTTP's
    (C generators only). MLflow's: HTTP only.
    """
    spec = SPECS[name]
    protocols = ("http", "grpc") if spec.kind == "ours" else ("http",)
    cells = []
    for protocol in protocols:
        cells.append(_cell(name, protocol, _client(protocol, "rate", generator), "rate", None))
        for count in clients:
            cells.append(_cell(name, protocol, _client(protocol, "clients", generator), "clients", count))
        if spec.kind == "ours" and protocol == "http" and generator == "c":
            cells.append(_cell(name, protocol, "h2load", "burst", None))
    return cells


def _client(protocol: str, shape: str, generator: str) -> str:
    if shape == "rate" or generator == "python":
        return "grpc.aio" if protocol == "grpc" else "aiohttp"
    return "h2load" if protocol == "grpc" else "wrk"


def _cell(server: str, protocol: str, client: str, shape: str, clients: int | None) -> dict:
    mlflow = SPECS[server].kind == "mlflow"
    path = "Predict" if protocol == "grpc" else "/invocations" if mlflow else "/predict"
    return {
        "server": server,
        "protocol": protocol,
        "client": client,
        "path": path,
        "load": shape,
        "rate": None,
        "clients": clients,
    }


def _run_server(
    name: str,
    uris: dict[str, str],
    requests: dict[str, Requests],
    env: dict,
    logs: Path,
    args: argparse.Namespace,
    generator: str,
    results: dict,
) -> None:
    """Start one server, measure each of its loads, stop it; a server that fails is reported, not fatal."""
    spec = SPECS[name]
    cells = plans(name, generator, args.clients)
    print(f"bench.online: starting {name} ...", flush=True)
    record = {"name": name, "status": "ok", "reason": None, **asdict(spec)}
    results["servers"].append(record)
    log = logs / f"{name}.log"
    try:
        server = _start(name, _uri(name, uris), env, log, args.serve_flags)
    except servers.ServerFailed as e:
        record.update(status="failed", reason=str(e).splitlines()[0], log=str(log))
        print(f"bench.online: {name} FAILED: {e}", flush=True)
        results["measurements"] += [{**c, "status": "failed", "reason": record["reason"]} for c in cells]
        return
    record.update(
        command=shlex.join(server.command),
        log=str(server.log),
        http=server.http,
        grpc=server.grpc,
        start_s=server.start_s,
        detail=server.detail,
    )
    mine = requests[_family(spec.model)]
    try:
        results["agreement"][name] = _agreement(server, mine)
        warmed: set[str] = set()
        for cell in cells:
            if cell["protocol"] not in warmed:
                warmed.add(cell["protocol"])
                warm = _warm_up(server, cell["protocol"], mine, args)
            measured = _measure_cell(server, cell, mine, args, results["measurements"], logs)
            measured["warmup_errors"] = warm
            results["measurements"].append(measured)
            print(f"bench.online: {_tag(measured)}: {report.one_line(measured)}", flush=True)
    finally:
        record["exit_code"] = server.stop()


def _measure_cell(
    server: servers.Server, cell: dict, mine: Requests, args: argparse.Namespace, done: list, logs: Path
) -> dict:
    """One load, measured; a load that cannot run is reported as failed, and the others still run."""
    if cell["load"] == "rate":
        cell = {**cell, "rate": args.rate}
    print(f"bench.online: {_tag(cell)} ...", flush=True)
    try:
        if cell["load"] == "burst":
            return _burst(server, cell, mine, args, done, logs)
        return _measure(server, cell, lambda: _run_load(server, cell, mine, args, logs))
    except Exception as e:  # reported in the results and the table
        return {**cell, "status": "failed", "reason": f"{type(e).__name__}: {e}"}


def _run_load(
    server: servers.Server, cell: dict, mine: Requests, args: argparse.Namespace, logs: Path
) -> dict:
    """Run one rate or clients load on its generator; its summary (``load.Tally.summary``'s keys)."""
    if cell["load"] == "rate":
        return load.open_loop(_target(server, cell, mine), args.rate, args.requests, args.seconds).summary()
    if cell["client"] == "wrk":
        key = "invocations" if cell["path"] == "/invocations" else "predict"
        return generators.wrk(server.http + cell["path"], mine.files[key], cell["clients"], args.seconds)
    if cell["client"] == "h2load":
        answer = _grpc_answer_bytes(server.grpc, mine.grpc[0])
        log = logs / f"{server.name}-grpc-{cell['clients']}.h2load.tsv"
        return generators.h2load_grpc(
            server.grpc, mine.files["grpc-frame"], answer, cell["clients"], args.seconds, log
        )
    target = _target(server, cell, mine)
    return load.closed_loop(target, cell["clients"], args.requests, args.seconds).summary()


def _burst(
    server: servers.Server, cell: dict, mine: Requests, args: argparse.Namespace, done: list, logs: Path
) -> dict:
    """Offer ``--burst-factor`` times this server's HTTP capacity: its req/s at the most clients."""
    most = max(args.clients)
    capacity = _find(done, server.name, "http", "clients", most)
    unloaded = _find(done, server.name, "http", "rate", args.rate)
    if capacity is None or not capacity["answered_per_s"] or capacity["errors"]:
        return {**cell, "status": "failed", "reason": f"no clean HTTP measurement at {most} clients"}
    rate = args.burst_factor * capacity["answered_per_s"]
    cell = {**cell, "rate": rate, "clients": generators.burst_connections(rate)}
    log = logs / f"{server.name}-burst.h2load.tsv"

    def run() -> dict:
        body = mine.files["predict-one"]
        return generators.h2load_burst(server.http + "/predict", body, rate, args.burst_seconds, log)

    measured = _measure(server, cell, run)
    measured.update(
        capacity_per_s=capacity["answered_per_s"],
        factor=args.burst_factor,
        unloaded_p99_ms=unloaded["p99_ms"] if unloaded else None,
    )
    return measured


def _measure(server: servers.Server, cell: dict, run) -> dict:
    """Run a load, with the CPU the server, the load generator and everything else used meanwhile."""
    machine_before, server_before, load_before = _busy_s(), server.cpu_s(), _load()
    summary = run()
    server_s, machine_s = server.cpu_s() - server_before, _busy_s() - machine_before
    sent = max(summary.get("sent", summary.get("started", 0)), 1)
    elapsed = max(summary["elapsed_s"], 1e-9)
    client_s = summary["client_cpu_s"]
    return {
        **cell,
        "status": "ok",
        "reason": None,
        **summary,
        "server_cpu_s": server_s,
        # The server's CPU time covers the uncounted requests too (each Python client's first).
        "server_cpu_ms_per_request": server_s / (sent + summary.get("uncounted", 0)) * 1000.0,
        "client_cpu_us_per_request": client_s / sent * 1e6,
        "server_cores": server_s / elapsed,
        "client_cores": client_s / elapsed,
        # What else ran on the machine meanwhile (other users of a shared machine), in cores.
        "other_cores": max(machine_s - server_s - client_s, 0.0) / elapsed,
        "load_average_before": load_before,
    }


def _warm_up(server: servers.Server, protocol: str, mine: Requests, args: argparse.Namespace) -> int:
    """An uncounted load before a protocol's first (every worker gets connections); its error count."""
    cell = _cell(server.name, protocol, "", "clients", 8)
    try:
        warm = load.closed_loop(
            _target(server, cell, mine), 8, min(200, args.requests), min(2.0, args.seconds)
        )
    except Exception:  # the loads after it report what is wrong
        return -1
    return int(sum(warm.errors.values()))


def _target(server: servers.Server, cell: dict, mine: Requests) -> load.Target:
    if cell["protocol"] == "grpc":
        return load.Target("grpc", server.grpc, mine.grpc, bodies.PREDICT_METHOD)
    if cell["path"] == "/invocations":
        return load.Target("http", server.http + "/invocations", mine.invocations)
    return load.Target("http", server.http + "/predict", mine.predict)


def _grpc_answer_bytes(address: str, message: bytes) -> int:
    """The framed size of the OK answer to ``message``: how h2load's received data counts OK answers."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        answer = channel.unary_unary(bodies.PREDICT_METHOD)(message, timeout=load.REQUEST_TIMEOUT_S)
    return len(bodies.grpc_frame(answer))


def _find(measurements: Sequence[dict], server: str, protocol: str, shape: str, value: float) -> dict | None:
    key = "rate" if shape == "rate" else "clients"
    for m in measurements:
        if (m["server"], m["protocol"], m["load"], m[key]) == (server, protocol, shape, value):
            return m if m["status"] == "ok" else None
    return None


def _tag(cell: dict) -> str:
    if cell["load"] == "rate":
        shape = f"{cell['rate']:g} req/s"
    elif cell["load"] == "burst":
        shape = "burst" if cell["rate"] is None else f"burst of {cell['rate']:,.0f} req/s"
    else:
        shape = f"{cell['clients']} clients"
    return f"{cell['server']} {cell['protocol']} {cell['path']} ({cell['client']}), {shape}"


def _start(name: str, uri: str, env: dict, log: Path, serve_flags: Sequence[str]) -> servers.Server:
    spec = SPECS[name]
    if spec.kind == "mlflow":
        return servers.start_mlflow(name, uri, spec.workers, env, log)
    flags = ["--backend", "pyfunc"] if spec.model in ("sklearn", "pipeline") else []
    return servers.start_ours(name, uri, [*flags, *serve_flags], env, log, workers=spec.workers)


def _model_uris(names: Sequence[str], models: bench_model.Models, workdir: Path, rows: int) -> dict[str, str]:
    """Each model's reference, by model (``SPECS``) and by family (``_family``).

    Ours take the aliases, as the batch job does; ``mlflow models serve`` the version (its users' URI).
    """
    version = f"models:/{bench_model.MODEL_NAME}/{models.sklearn_version}"
    uris = {
        "onnx": models.onnx_uri,
        "sklearn": models.sklearn_uri,
        "mlflow-sklearn": version,
        "bench": version,
    }
    if any(SPECS[n].model == "pipeline" for n in names):
        uris["pipeline"] = uris["mlflow-pipeline"] = pipeline.ensure_pipeline(workdir, rows).uri
    return uris


def _uri(name: str, uris: dict[str, str]) -> str:
    spec = SPECS[name]
    return uris[f"mlflow-{spec.model}" if spec.kind == "mlflow" else spec.model]


def _family(model: str) -> str:
    """Which records a model takes: the batch benchmark's (``bench``) or the pipeline's."""
    return "pipeline" if model == "pipeline" else "bench"


def _families(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(_family(SPECS[n].model) for n in names))


def _requests(names: Sequence[str], workdir: Path) -> dict[str, Requests]:
    """The requests of every model family the servers named need, written where the C tools read them."""
    directory = workdir / "requests"
    directory.mkdir(exist_ok=True)
    out = {}
    for family in _families(names):
        features = pipeline.FEATURES if family == "pipeline" else data.FEATURES
        x = bodies.records(POOL, features)
        predict, invocations = bodies.predict_json(x, features), bodies.mlflow_json(x, features)
        grpc = bodies.predict_grpc(x, features)
        files = {
            "predict": bodies.write_lines(directory / f"{family}-predict.txt", predict),
            "invocations": bodies.write_lines(directory / f"{family}-invocations.txt", invocations),
            "grpc-frame": bodies.write_grpc_frame(directory / f"{family}-predict.grpc", grpc[0]),
            "predict-one": directory / f"{family}-predict-one.json",
        }
        files["predict-one"].write_bytes(predict[0])
        out[family] = Requests(tuple(features), x, predict, invocations, grpc, files)
    return out


def _reference(uri: str, mine: Requests) -> dict:
    """The model's own answers to the agreement records: scikit-learn's, in this process."""
    import mlflow.sklearn
    import pandas as pd

    classifier = mlflow.sklearn.load_model(uri)
    # The batch benchmark's model is fitted on float32 features, the pipeline on float64 ones.
    dtype = np.float32 if mine.features == data.FEATURES else np.float64
    probabilities, labels = [], []
    # One record at a time, as the servers get them: a matrix product of one row and of several may
    # round differently in the last bit.
    for record in mine.records[:AGREEMENT_RECORDS]:
        frame = pd.DataFrame([record], columns=list(mine.features)).astype(dtype)
        probabilities.append(float(classifier.predict_proba(frame)[0, 1]))
        labels.append(classifier.predict(frame)[0].item())
    return {"uri": uri, "probability": probabilities, "labels": labels}


def _agreement(server: servers.Server, mine: Requests) -> dict:
    """Each server's answers to a few records, one request each, decoded: labels and P(class 1).

    Ours answer both; MLflow's pyfunc ``predict`` answers probabilities for the classifier logged with
    ``pyfunc_predict_fn="predict_proba"`` and labels for the pipeline logged the ordinary way.
    """
    mlflow = SPECS[server.name].kind == "mlflow"
    path = "/invocations" if mlflow else "/predict"
    encoded = (mine.invocations if mlflow else mine.predict)[:AGREEMENT_RECORDS]
    probabilities, labels = [], []
    try:
        for body in encoded:
            request = urllib.request.Request(
                server.http + path, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                got = json.loads(answer.read())
            if "predictions" not in got:  # ours: {"prediction": label, "probability": p1, ...}
                probabilities.append(got["probability"])
                labels.append(got["prediction"])
            elif isinstance(got["predictions"][0], list):  # MLflow's predict_proba: [[p0, p1]]
                probabilities.append(got["predictions"][0][1])
            else:  # MLflow's predict: [label]
                labels.append(got["predictions"][0])
    except (OSError, KeyError, IndexError, TypeError, ValueError) as e:  # HTTPError is an OSError
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        "model": _family(SPECS[server.name].model),
        "records": len(encoded),
        "probability": probabilities or None,
        "labels": labels or None,
    }


def _generator(choice: str) -> str:
    """``c`` or ``python``, from ``--load-generator``.

    Raises:
        SystemExit: ``c`` was asked for and wrk or h2load is not installed.
    """
    missing = generators.missing()
    if choice == "c" and missing:
        raise SystemExit(
            f"bench.online: {' and '.join(missing)} not installed (apt-get install wrk nghttp2-client)"
        )
    if choice == "auto" and missing:
        print(
            f"bench.online: {', '.join(missing)} not installed: the Python client loads instead", flush=True
        )
    return "c" if choice == "c" or (choice == "auto" and not missing) else "python"


def _results(
    argv: Sequence[str],
    args: argparse.Namespace,
    started: dt.datetime,
    workdir: Path,
    models: bench_model.Models,
    uris: dict[str, str],
    generator: str,
    references: dict,
) -> dict:
    return {
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
            "load_generator": generator,
            "burst_factor": args.burst_factor,
            "burst_seconds": args.burst_seconds,
            "serve_flags": list(args.serve_flags),
            "request_timeout_s": load.REQUEST_TIMEOUT_S,
            "grpc_channels": load.GRPC_CHANNELS,
            "pool": POOL,
            "train_rows": args.train_rows,
            "workdir": str(workdir),
        },
        "model": {**asdict(models), "uris": uris},
        "reference": references,
        "servers": [],
        "agreement": {},
        "measurements": [],
    }


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
    versions.update(_tool_versions())
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "versions": versions,
        "load_before": _load(),
        "load_after": None,
    }


def _tool_versions() -> dict[str, str]:
    """The versions of wrk and h2load, as they print them (absent when not installed)."""
    out = {}
    for tool, flag in (("wrk", "--version"), ("h2load", "--version")):
        try:
            printed = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            out[tool] = "absent"
            continue
        words = (printed.stdout + printed.stderr).split()
        out[tool] = words[1] if len(words) > 1 else "unknown"
    return out


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
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in SERVERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    return names
