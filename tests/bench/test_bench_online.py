"""The online benchmark: its goals and tables from numbers, the C generators' outputs read, and one real
run with tiny counts."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not installed: it lives beside scoring/ in the checkout
    sys.path.insert(0, str(ROOT))

from bench import report as batch_report  # noqa: E402
from bench.online import bodies, generators, report  # noqa: E402
from bench.online.run import SPECS, build_parser, plans  # noqa: E402


def measurement(server, protocol, load, value, rps=100.0, p99=5.0, errors=0, client=None):
    path = "Predict" if protocol == "grpc" else "/invocations" if server.startswith("mlflow") else "/predict"
    client = client or ("aiohttp" if load == "rate" else "h2load" if protocol == "grpc" else "wrk")
    return {
        "server": server,
        "protocol": protocol,
        "client": client,
        "path": path,
        "load": load,
        "rate": value if load == "rate" else None,
        "clients": value if load == "clients" else None,
        "status": "ok",
        "reason": None,
        "sent": 1000,
        "ok": 1000 - errors,
        "errors": errors,
        "error_kinds": {"http 503": errors} if errors else {},
        "elapsed_s": 5.0,
        "answered_per_s": rps,
        "p50_ms": p99 / 2,
        "p90_ms": p99 * 0.8,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "mean_ms": p99 / 2,
        "client_cpu_s": 0.1,
        "client_cpu_us_per_request": 100.0,
        "server_cpu_ms_per_request": 1.25,
        "server_cores": 0.9,
        "client_cores": 0.1,
        "other_cores": 0.05,
    }


def burst(server, capacity=1000.0, accepted_p99=6.0, refused_p99=1.0, refused=3000, unloaded=4.0, errors=0):
    latency = {"p50_ms": accepted_p99 / 2, "p90_ms": accepted_p99, "p99_ms": accepted_p99}
    return {
        "server": server,
        "protocol": "http",
        "client": "h2load",
        "path": "/predict",
        "load": "burst",
        "rate": 4 * capacity,
        "clients": 400,
        "status": "ok",
        "reason": None,
        "offered_per_s": 4 * capacity,
        "connections": 400,
        "started": 4000 + errors,
        "sent_per_s": 4 * capacity,
        "answered": 4000,
        "unanswered": 0,
        "ok": 4000 - refused,
        "refused": refused,
        "errors": errors,
        "error_kinds": {"timeout": errors} if errors else {},
        "elapsed_s": 1.0,
        "answered_per_s": 4000.0 - refused,
        "refused_per_s": float(refused),
        "accepted": {**latency, "max_ms": accepted_p99, "mean_ms": accepted_p99 / 2},
        "refused_latency": {
            "p50_ms": 0.5,
            "p90_ms": 0.8,
            "p99_ms": refused_p99,
            "max_ms": 2.0,
            "mean_ms": 0.5,
        },
        "client_cpu_s": 0.05,
        "server_cpu_ms_per_request": 0.2,
        "client_cpu_us_per_request": 12.0,
        "server_cores": 1.9,
        "client_cores": 0.05,
        "other_cores": 0.0,
        "capacity_per_s": capacity,
        "factor": 4.0,
        "unloaded_p99_ms": unloaded,
    }


def server_record(name, command="/x/bin/scoring serve --model-uri m", code=0):
    spec = SPECS[name]
    return {
        "name": name,
        "status": "ok",
        "kind": spec.kind,
        "model": spec.model,
        "workers": spec.workers,
        "baseline": spec.baseline,
        "one_worker": spec.one_worker,
        "command": command,
        "start_s": 3.0,
        "exit_code": code,
        "detail": {"processes": 1 + (spec.workers if spec.workers > 1 else 0)},
    }


def results(measurements, clients=(1, 8, 64), rate=200.0, names=None):
    names = names or ["ours-onnx", "ours-onnx-2w", "ours-pyfunc", "ours-pipeline", "mlflow", "mlflow-2w"]
    return {
        "command": ".venv/bin/python -m bench.online",
        "started_at": "2026-12-02T07:00:00+00:00",
        "duration_s": 360.0,
        "machine": {
            "cores": 2,
            "memory_bytes": 24 * 1024**3,
            "platform": "Linux",
            "versions": {"mlflow": "3.17.2"},
            "load_before": [0.1, 0.1, 0.1],
            "load_after": [1.0, 1.0, 1.0],
        },
        "settings": {
            "requests": 3000,
            "seconds": 8.0,
            "rate": rate,
            "clients": list(clients),
            "request_timeout_s": 10.0,
            "load_generator": "c",
            "burst_factor": 4.0,
        },
        "servers": [
            server_record(
                n, "/x/bin/mlflow models serve -m m" if n.startswith("mlflow") else "/x/bin/scoring serve"
            )
            for n in names
        ],
        "reference": {
            "bench": {"probability": [0.25, 0.5], "labels": [0, 1]},
            "pipeline": {"probability": [0.125, 0.75], "labels": [0, 1]},
        },
        "agreement": {
            "ours-onnx": {"model": "bench", "records": 2, "probability": [0.25, 0.5000001], "labels": [0, 1]},
            "mlflow": {"model": "bench", "records": 2, "probability": [0.25, 0.5], "labels": None},
            "mlflow-pipeline": {"model": "pipeline", "records": 2, "probability": None, "labels": [0, 0]},
        },
        "measurements": measurements,
    }


def goal_measurements():
    return [
        measurement("ours-onnx", "http", "rate", 200.0, p99=4.0),
        measurement("ours-onnx", "grpc", "rate", 200.0, p99=12.5),
        measurement("ours-onnx-2w", "http", "rate", 200.0, p99=3.0),
        measurement("ours-onnx-2w", "grpc", "rate", 200.0, p99=3.0),
        measurement("ours-pyfunc", "http", "rate", 200.0, p99=6.0),
        measurement("ours-pyfunc", "grpc", "rate", 200.0, p99=7.0),
        measurement("ours-pipeline", "http", "rate", 200.0, p99=9.0),
        measurement("ours-pipeline", "grpc", "rate", 200.0, p99=11.0),
        measurement("ours-onnx", "http", "clients", 64, rps=2000.0),
        measurement("ours-onnx-2w", "http", "clients", 64, rps=3800.0),
        measurement("ours-onnx", "grpc", "clients", 64, rps=1200.0),
        measurement("ours-onnx-2w", "grpc", "clients", 64, rps=2000.0),
        measurement("mlflow", "http", "clients", 64, rps=190.0),
        measurement("mlflow-2w", "http", "clients", 64, rps=400.0),
        burst("ours-onnx-2w", capacity=3800.0, accepted_p99=7.0, refused_p99=2.0, unloaded=4.0),
        burst("ours-onnx", capacity=2000.0, accepted_p99=9.0, refused_p99=2.0, unloaded=4.0),
    ]


def test_goals_met_and_not_met_from_the_numbers():
    rows = report.goals(results(goal_measurements()))
    assert len(rows) == 9
    assert [row[2] for row in rows] == [
        "met",
        "not met",
        "met",
        "met",
        "not met",
        "met",
        "not met",
        "met",
        "not met",
    ]
    assert rows[0][1] == "3,800 vs 2,000 req/s: x1.90 (load: wrk)"
    assert rows[1][1] == "2,000 vs 1,200 req/s: x1.67 (load: h2load)"
    assert rows[2][1] == "2,000 vs 190 req/s: x10.53; x5.00 of `--workers 2` (400 req/s) (load: h2load)"
    assert rows[3][1] == (
        "worst p99 4.00 ms (ours-onnx 4.00, ours-onnx-2w 3.00): x0.40 of the bound, 0 errors of 2,000 "
        "(load: aiohttp)"
    )
    assert rows[4][1].startswith("worst p99 12.5 ms (ours-onnx 12.5, ours-onnx-2w 3.00): x1.25")
    # The pyfunc backend: the sklearn classifier and the pipeline, the worst of them.
    assert rows[6][1].startswith("worst p99 11.0 ms (ours-pyfunc 7.00, ours-pipeline 11.0)")
    assert rows[7][0].startswith("burst at 4x capacity, HTTP `/predict`, ours-onnx-2w: fast 503s")
    assert rows[7][1] == (
        "offered 15,200 req/s (x4.00 of 3,800), sent 15,200/s: 3,000 503s (p99 2.00 ms), 1,000 accepted "
        "(p99 7.00 ms) vs unloaded p99 4.00 ms: x1.75, 0 other errors"
    )
    assert "x2.25" in rows[8][1]  # 9 ms accepted against 4 ms unloaded


def test_goals_fail_on_errors_and_stay_untested_without_measurements():
    ms = goal_measurements()
    ms[0] = measurement("ours-onnx", "http", "rate", 200.0, p99=4.0, errors=3)
    ms[-1] = burst("ours-onnx", capacity=2000.0, accepted_p99=5.0, refused_p99=2.0, errors=2)
    rows = report.goals(results(ms))
    assert rows[3][2] == "not met" and "3 errors of 2,000" in rows[3][1]
    assert rows[8][2] == "not met" and rows[8][1].endswith("2 other errors")
    # A burst without 503s is not shedding, however fast.
    ms[-1] = burst("ours-onnx", capacity=2000.0, accepted_p99=5.0, refused=0)
    assert report.goals(results(ms))[8][2] == "not met"
    # No pipeline among the pyfunc servers measured: the pyfunc rows are untested.
    no_pipeline = [m for m in ms if m["server"] != "ours-pipeline"]
    rows = report.goals(results(no_pipeline))
    assert rows[5][1:] == ["not measured", "untested"] and rows[6][1:] == ["not measured", "untested"]
    # Nothing measured: every goal untested, a burst row saying what it needs.
    rows = report.goals(results([]))
    assert {row[2] for row in rows} == {"untested"} and rows[-1][1] == "not measured (the burst needs h2load)"


def test_tables_with_real_numbers():
    ms = [
        measurement("ours-onnx", "http", "rate", 200.0, p99=4.0),
        measurement("ours-onnx", "http", "clients", 64, rps=1200.0, p99=80.0),
        measurement("ours-onnx-2w", "http", "clients", 64, rps=2280.0, p99=50.0),
        measurement("ours-onnx", "grpc", "clients", 64, rps=900.0),
        measurement("mlflow", "http", "clients", 64, rps=200.0, errors=2),
        {**measurement("mlflow", "http", "rate", 200.0), "status": "failed", "reason": "TimeoutError: x"},
        burst("ours-onnx-2w", capacity=2280.0, accepted_p99=7.0, refused_p99=2.0, unloaded=4.0),
    ]
    text = report.render(results(ms))
    lines = text.splitlines()
    assert lines[0] == report.START and lines[-1] == report.END
    assert "changed during the run" not in text and "### Goals of issue 32" in lines
    code = {"commit": "a" * 40, "scoring_sha256": "b" * 64, "scoring_sha256_after": "c" * 64}
    changed = report.render({**results(ms), "code": code})
    assert "**the server's code changed during the run**." in changed
    assert "Made by `.venv/bin/python -m bench.online` on 2026-12-02 (07:00 UTC, 6 min)." in lines
    assert "on wrk (HTTP) and h2load (gRPC)" in text
    assert (
        "| ours-onnx | HTTP `/predict` | aiohttp | 1,000 | 0 | 100 | 2.00 | 4.00 | 8.00 | 1.25 | 100 | 0.05 |"
        in lines
    )
    assert (
        "| mlflow | HTTP `/invocations` | aiohttp | FAILED | TimeoutError: x | - | - | - | - | - | - | - |"
        in lines
    )
    assert (
        "| ours-onnx | HTTP `/predict` | wrk | 64 | 1,000 | 0 | 1,200 | - | x6.00 | 40.0 | 80.0 | 1.25 | 100 "
        "| 0.90 | 0.10 | 0.05 |" in lines
    )
    assert "| ours-onnx-2w | HTTP `/predict` | wrk | 64 | 1,000 | 0 | 2,280 | x1.90 | x11.40 |" in text
    assert "| ours-onnx | gRPC `Predict` | h2load | 64 | 1,000 | 0 | 900 | - | x4.50 |" in text
    assert "| mlflow | HTTP `/invocations` | wrk | 64 | 1,000 | 2 (http 503: 2) | 200 | - | x1.00 |" in text
    assert (
        "| ours-onnx-2w | 9,120 | x4.00 | 400 | 4,000 | 1,000 | 3,000 | 0 | 1,000 | 3.50 | 7.00 | 4.00 "
        "| x1.75 | 0.50 | 2.00 | 1.90 | 0.05 |" in lines
    )
    assert "| ours-onnx | bench | 2 | 1.0e-07 | 2/2 |" in lines
    assert "| mlflow-pipeline | pipeline | 2 | - | 1/2 |" in lines
    assert "| mlflow | `mlflow models serve -m m` | 1 | 3.0 | SIGTERM: exit 0 |" in lines
    assert "| ours-onnx-2w | `scoring serve` | 3 | 3.0 | SIGTERM: exit 0 |" in lines


def test_update_file_leaves_the_batch_section_alone(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    batch = f"{batch_report.START}\nbatch table\n{batch_report.END}\n"
    doc.write_text(f"# Benchmarks\n\n{batch}\n## Online\n\n{report.START}\nold\n{report.END}\n\nafter\n")
    report.update_file(doc, f"{report.START}\nnew\n{report.END}\n")
    assert (
        doc.read_text()
        == f"# Benchmarks\n\n{batch}\n## Online\n\n{report.START}\nnew\n{report.END}\n\nafter\n"
    )
    # A marker quoted in prose is not a marker: only lines of their own are.
    quoted = tmp_path / "quoted.md"
    prose = f"between `{report.START}` and `{report.END}`\n\n"
    quoted.write_text(f"{prose}{report.START}\nold\n{report.END}\n")
    report.update_file(quoted, f"{report.START}\nnew\n{report.END}\n")
    assert quoted.read_text() == f"{prose}{report.START}\nnew\n{report.END}\n"
    # Without the markers the section is appended.
    other = tmp_path / "other.md"
    other.write_text("intro")
    report.update_file(other, "section\n")
    assert other.read_text() == "intro\nsection\n"


def test_flags_and_plans():
    args = build_parser().parse_args(
        ["--servers", "mlflow,ours-onnx-2w", "--clients", "1,64", "--serve-flags", "--max-queue 8"]
    )
    assert args.servers == ("mlflow", "ours-onnx-2w") and args.clients == (1, 64)
    assert args.serve_flags == ["--max-queue", "8"] and args.load_generator == "auto"
    for bad in (
        ["--servers", "triton"],
        ["--clients", "0"],
        ["--load-generator", "httpx"],
        ["--seconds", "0"],
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)

    def shape(cell):
        return (cell["protocol"], cell["client"], cell["load"], cell["clients"])

    assert [shape(c) for c in plans("ours-onnx-2w", "c", (1, 64))] == [
        ("http", "aiohttp", "rate", None),
        ("http", "wrk", "clients", 1),
        ("http", "wrk", "clients", 64),
        ("http", "h2load", "burst", None),
        ("grpc", "grpc.aio", "rate", None),
        ("grpc", "h2load", "clients", 1),
        ("grpc", "h2load", "clients", 64),
    ]
    # Without the C generators: the Python client, and no burst; MLflow's servers over HTTP only.
    assert [shape(c) for c in plans("ours-pipeline", "python", (8,))] == [
        ("http", "aiohttp", "rate", None),
        ("http", "aiohttp", "clients", 8),
        ("grpc", "grpc.aio", "rate", None),
        ("grpc", "grpc.aio", "clients", 8),
    ]
    assert [(c["path"], c["client"]) for c in plans("mlflow-pipeline", "c", (8,))] == [
        ("/invocations", "aiohttp"),
        ("/invocations", "wrk"),
    ]
    # Every 2-worker server has its 1-worker twin, and every server a baseline of its model.
    for name, spec in SPECS.items():
        assert spec.one_worker is None or SPECS[spec.one_worker].model == spec.model, name
        assert SPECS[spec.baseline].kind == "mlflow" and SPECS[spec.baseline].workers == 1, name


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:1/predict
  1 threads and 64 connections
BENCH-RESULT {"requests": 5012, "duration_us": 2004000, "connect": 0, "read": 1, "write": 0, "status": 12, \
"timeout": 2, "p50_us": 25939, "p90_us": 37198, "p99_us": 47301, "max_us": 133428, "mean_us": 27557.9, \
"statuses": {"200": 5000, "503": 12}}
"""

H2LOAD_OUTPUT = """finished in 2.00s, 1251.09 req/s, 111.78KB/s
requests: 2510 total, 2512 started, 2500 done, 2500 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 2500 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 178.70KB (182984) total, 6.15KB (6300) headers (space savings 96.11%), 78.12KB (80000) data
"""


def test_wrk_and_h2load_outputs_read():
    summary = generators.wrk_summary(WRK_OUTPUT, cpu_s=0.2)
    assert summary["ok"] == 5000 and summary["errors"] == 15 and summary["sent"] == 5015
    assert summary["error_kinds"] == {"http 503": 12, "read": 1, "timeout": 2}
    assert summary["elapsed_s"] == pytest.approx(2.004) and summary["p99_ms"] == pytest.approx(47.301)
    with pytest.raises(generators.GeneratorFailed):
        generators.wrk_summary("Running 2s test\nunable to connect", cpu_s=0.0)

    counts = generators.h2load_counts(H2LOAD_OUTPUT)
    assert counts["done"] == 2500 and counts["data_bytes"] == 80000 and counts["elapsed_s"] == 2.0
    rows = np.array([[1, 200, 1000], [2, 200, 3000]], dtype=np.int64)
    # Every OK answer is 32 bytes: all 2,500 done were OK.
    ok = generators.grpc_summary(counts, rows, 32, cpu_s=0.1)
    assert ok["ok"] == 2500 and ok["errors"] == 0 and ok["p50_ms"] == pytest.approx(2.0)
    # Answers of 40 bytes: only 2,000 OK answers arrived; the other 500 were gRPC errors (HTTP 200).
    partial = generators.grpc_summary(counts, rows, 40, cpu_s=0.1)
    assert partial["ok"] == 2000 and partial["error_kinds"] == {"grpc not OK (no answer message)": 500}
    assert generators.h2load_counts(H2LOAD_OUTPUT.replace("2.00s", "900.5ms"))["elapsed_s"] == 0.9005


def test_burst_summary_tells_the_503s_from_the_accepted():
    rows = np.array(
        [[1, 200, 4000], [2, 503, 500], [3, 503, 700], [4, 200, 6000], [5, 500, 100]], dtype=np.int64
    )
    counts = {"started": 7, "errored": 1, "timeout": 0, "elapsed_s": 1.0}
    got = generators.burst_summary(rows, counts, rate=400.0, connections=64, cpu_s=0.01)
    assert (got["ok"], got["refused"], got["answered"], got["unanswered"]) == (2, 2, 5, 2)
    assert got["error_kinds"] == {"http 500": 1, "stream error": 1} and got["errors"] == 2
    assert got["accepted"]["p50_ms"] == pytest.approx(5.0) and got["accepted"]["max_ms"] == 6.0
    assert got["refused_latency"]["max_ms"] == pytest.approx(0.7) and got["sent_per_s"] == 7.0
    assert generators.burst_connections(100.0) == 64 and generators.burst_connections(12_000.0) == 2400


def test_bodies_files(tmp_path):
    x = bodies.records(3, ("a", "b"))
    assert x.shape == (3, 2) and x.dtype == np.float64
    lines = bodies.write_lines(tmp_path / "b.txt", bodies.predict_json(x, ("a", "b"))).read_bytes()
    assert [list(json.loads(line)["features"]) for line in lines.splitlines()] == [["a", "b"]] * 3
    frame = bodies.grpc_frame(b"abc")
    assert frame == b"\0\0\0\0\3abc"
    with pytest.raises(ValueError):
        bodies.write_lines(tmp_path / "bad.txt", [b"{}\n"])


def test_smoke_run_against_both_servers(tmp_path):
    workdir = tmp_path / "work"
    doc = tmp_path / "BENCHMARKS.md"
    batch = f"{batch_report.START}\nbatch\n{batch_report.END}\n"
    doc.write_text(f"# Benchmarks\n\n{batch}\n{report.START}\n{report.END}\n")
    flags = ["--requests", "30", "--seconds", "1", "--burst-seconds", "1", "--servers", "ours-onnx,mlflow"]
    flags += ["--train-rows", "500", "--workdir", str(workdir), "--markdown", str(doc)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.online", *flags], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((workdir / "results.json").read_text())
    assert results["command"].endswith("-m bench.online " + shlex.join(flags))
    assert results["machine"]["cores"] >= 1 and results["machine"]["versions"]["mlflow"]
    assert len(results["code"]["scoring_sha256"]) == 64 and results["code"]["scoring_sha256_after"]
    c = not generators.missing()  # wrk and h2load installed: they run the closed loops and the burst
    assert results["settings"]["load_generator"] == ("c" if c else "python")
    http, grpc = ("wrk", "h2load") if c else ("aiohttp", "grpc.aio")
    expected = {
        (server, protocol, client, load, value)
        for server, protocol, rated, closed in [
            ("ours-onnx", "http", "aiohttp", http),
            ("ours-onnx", "grpc", "grpc.aio", grpc),
            ("mlflow", "http", "aiohttp", http),
        ]
        for client, load, value in [(rated, "rate", 200.0), *((closed, "clients", n) for n in (1, 8, 64))]
    }
    expected |= {("ours-onnx", "http", "h2load", "burst", "burst")} if c else set()
    rows = {
        (
            m["server"],
            m["protocol"],
            m["client"],
            m["load"],
            m["rate"] if m["load"] == "rate" else m["clients"],
        )
        for m in results["measurements"]
    }
    rows = {row if row[3] != "burst" else (*row[:4], "burst") for row in rows}
    assert rows == expected and len(results["measurements"]) == len(expected)
    for m in results["measurements"]:
        where = f"{m['server']} {m['protocol']} {m['client']} {m['load']}"
        assert m["status"] == "ok" and m["warmup_errors"] == 0, where
        if m["load"] == "burst":
            assert m["answered"] > 0 and m["rate"] == pytest.approx(4 * m["capacity_per_s"]), where
            assert m["ok"] + m["refused"] + m["errors"] >= m["answered"] > 0 and m["unloaded_p99_ms"] > 0, (
                where
            )
            continue
        assert m["errors"] == 0 and m["ok"] == m["sent"] > 0, where
        if m["client"] in ("aiohttp", "grpc.aio"):
            assert m["sent"] == 30, where
        assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"] < 10_000, where
        assert m["answered_per_s"] > 0 and m["elapsed_s"] > 0, where
        assert m["server_cpu_ms_per_request"] > 0 and m["client_cpu_us_per_request"] > 0, where
        assert m["other_cores"] >= 0, where
    assert {s["name"]: s["status"] for s in results["servers"]} == {"ours-onnx": "ok", "mlflow": "ok"}
    assert next(s for s in results["servers"] if s["name"] == "ours-onnx")["exit_code"] == 0
    # The same model: ONNX Runtime's float32 probabilities within 1e-5 of scikit-learn's, MLflow's equal.
    reference = results["reference"]["bench"]["probability"]
    ours, theirs = (results["agreement"][n]["probability"] for n in ("ours-onnx", "mlflow"))
    assert len(ours) == len(theirs) == len(reference) == 20
    assert max(abs(a - b) for a, b in zip(ours, reference, strict=True)) < 1e-5 and theirs == reference
    assert results["agreement"]["ours-onnx"]["labels"] == results["reference"]["bench"]["labels"]
    text = doc.read_text()
    assert text.startswith(f"# Benchmarks\n\n{batch}\n{report.START}\nMade by `") and text.endswith(
        report.END + "\n"
    )
    assert "### Goals of issue 32" in text and f"| ours-onnx | gRPC `Predict` | {grpc} | 64 |" in text
    # No server had to be killed.
    assert not [s for s in results["servers"] if s.get("exit_code") is None]
