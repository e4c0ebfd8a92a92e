"""The online benchmark: its goals and tables from numbers, and one real run with tiny request counts."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not installed: it lives beside scoring/ in the checkout
    sys.path.insert(0, str(ROOT))

from bench import report as batch_report  # noqa: E402
from bench.online import report  # noqa: E402
from bench.online.run import build_parser, plans  # noqa: E402


def measurement(server, protocol, load, value, rps=100.0, p99=5.0, errors=0, client="aiohttp"):
    path = "Predict" if protocol == "grpc" else "/invocations" if server.startswith("mlflow") else "/predict"
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


def results(measurements, clients=(1, 8, 64), rate=200.0):
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
        },
        "servers": [
            {
                "name": "ours-onnx",
                "status": "ok",
                "command": "/x/bin/scoring serve --model-uri m",
                "start_s": 3.0,
                "exit_code": 0,
            },
            {
                "name": "mlflow",
                "status": "ok",
                "command": "/x/bin/mlflow models serve -m m",
                "start_s": 6.0,
                "exit_code": -15,
            },
        ],
        "agreement": {
            "ours-onnx": {"records": 2, "probability": [0.25, 0.5]},
            "mlflow": {"records": 2, "probability": [0.25, 0.5000001]},
        },
        "measurements": measurements,
    }


def test_goals_met_and_not_met_with_their_ratios():
    ms = [
        measurement("ours-onnx", "http", "rate", 200.0, p99=4.0),
        measurement("ours-onnx", "grpc", "rate", 200.0, p99=12.5, client="sync"),
        measurement("ours-onnx", "http", "clients", 64, rps=1200.0),
        measurement("ours-onnx", "grpc", "clients", 64, rps=900.0, client="sync"),
        measurement("mlflow", "http", "clients", 64, rps=200.0),
        measurement("mlflow-2w", "http", "clients", 64, rps=400.0),
    ]
    rows = report.goals(results(ms))
    assert [row[2] for row in rows] == ["met", "not met", "met", "not met"]
    assert rows[0][1] == "p99 4.00 ms: x0.40 of the bound, 0 errors of 1,000"
    assert rows[1][1] == "p99 12.5 ms: x1.25 of the bound, 0 errors of 1,000 (load: grpc stub, threads)"
    assert rows[2][1] == "1,200 vs 200 req/s: x6.00; x3.00 of `--workers 2` (400 req/s)"
    assert (
        rows[3][1] == "900 vs 200 req/s: x4.50; x2.25 of `--workers 2` (400 req/s) (load: grpc stub, threads)"
    )
    # Errors fail a goal whatever the numbers; a missing measurement leaves it untested.
    ms[0] = measurement("ours-onnx", "http", "rate", 200.0, p99=4.0, errors=3)
    assert report.goals(results(ms))[0][2] == "not met"
    assert report.goals(results(ms[:1]))[2] == [report.goals(results(ms))[2][0], "not measured", "untested"]


def test_tables_with_real_numbers():
    ms = [
        measurement("ours-onnx", "http", "rate", 200.0, p99=4.0),
        measurement("ours-onnx", "http", "clients", 64, rps=1200.0, p99=80.0),
        measurement("ours-onnx", "grpc", "clients", 64, rps=900.0, client="sync"),
        measurement("mlflow", "http", "clients", 64, rps=200.0, errors=2),
        {**measurement("mlflow", "http", "rate", 200.0), "status": "failed", "reason": "TimeoutError: x"},
    ]
    text = report.render(results(ms))
    lines = text.splitlines()
    assert lines[0] == report.START and lines[-1] == report.END
    assert "changed during the run" not in text
    code = {"commit": "a" * 40, "scoring_sha256": "b" * 64, "scoring_sha256_after": "c" * 64}
    changed = report.render({**results(ms), "code": code})
    assert (
        "Code: commit aaaaaaaaaaaa, `scoring/` sources sha256 bbbbbbbbbbbb at the start, cccccccccccc"
        in changed
    )
    assert "**the server's code changed during the run**." in changed
    assert "Made by `.venv/bin/python -m bench.online` on 2026-12-02 (07:00 UTC, 6 min)." in lines
    assert (
        "| ours-onnx | HTTP `/predict` | aiohttp | 1,000 | 0 | 100 | 2.00 | 4.00 | 8.00 | 1.25 | 100 | 0.05 |"
        in lines
    )
    assert (
        "| mlflow | HTTP `/invocations` | aiohttp | FAILED | TimeoutError: x | - | - | - | - | - | - | - |"
        in lines
    )
    assert (
        "| ours-onnx | HTTP `/predict` | aiohttp | 64 | 1,000 | 0 | 1,200 | x6.00 | 40.0 | 80.0 | 1.25 | 100 "
        "| 0.90 | 0.10 | 0.05 |" in lines
    )
    assert "| ours-onnx | gRPC `Predict` | grpc stub, threads | 64 | 1,000 | 0 | 900 | x4.50 |" in text
    assert "| mlflow | HTTP `/invocations` | aiohttp | 64 | 1,000 | 2 (http 503: 2) | 200 | x1.00 |" in text
    assert "| ours-onnx | 2 | 1.0e-07 |" in lines
    assert "| mlflow | `mlflow models serve -m m` | 6.0 | SIGTERM: ended by signal 15 |" in lines


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
        ["--servers", "mlflow,ours-onnx", "--clients", "1,64", "--grpc-clients", "aio"]
    )
    assert (
        args.servers == ("mlflow", "ours-onnx") and args.clients == (1, 64) and args.grpc_clients == ("aio",)
    )
    for bad in (["--servers", "triton"], ["--clients", "0"], ["--grpc-clients", "httpx"], ["--seconds", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    by_name = {p.server: p.targets for p in plans(["ours-onnx", "ours-pyfunc", "mlflow"], ("aio", "sync"))}
    assert by_name == {
        "ours-onnx": (("http", "aiohttp"), ("grpc", "aio"), ("grpc", "sync")),
        "ours-pyfunc": (("http", "aiohttp"), ("grpc", "aio")),
        "mlflow": (("http", "aiohttp"),),
    }


def test_smoke_run_against_both_servers(tmp_path):
    workdir = tmp_path / "work"
    doc = tmp_path / "BENCHMARKS.md"
    batch = f"{batch_report.START}\nbatch\n{batch_report.END}\n"
    doc.write_text(f"# Benchmarks\n\n{batch}\n{report.START}\n{report.END}\n")
    flags = ["--requests", "30", "--seconds", "1", "--servers", "ours-onnx,mlflow", "--train-rows", "500"]
    flags += ["--workdir", str(workdir), "--markdown", str(doc)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.online", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((workdir / "results.json").read_text())
    assert results["command"].endswith("-m bench.online " + shlex.join(flags))
    assert results["machine"]["cores"] >= 1 and results["machine"]["versions"]["mlflow"]
    assert len(results["code"]["scoring_sha256"]) == 64 and results["code"]["scoring_sha256_after"]
    rows = {
        (m["server"], m["protocol"], m["client"], m["load"], m["rate"] or m["clients"])
        for m in results["measurements"]
    }
    expected = {
        (server, protocol, client, load, value)
        for server, protocol, client in [
            ("ours-onnx", "http", "aiohttp"),
            ("ours-onnx", "grpc", "sync"),
            ("ours-onnx", "grpc", "aio"),
            ("mlflow", "http", "aiohttp"),
        ]
        for load, value in [("rate", 200.0), ("clients", 1), ("clients", 8), ("clients", 64)]
    }
    assert rows == expected and len(results["measurements"]) == len(expected)
    for m in results["measurements"]:
        where = f"{m['server']} {m['protocol']} {m['client']} {m['load']}"
        assert m["status"] == "ok" and m["errors"] == 0 and m["ok"] == m["sent"] == 30, where
        assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"] < 10_000, where
        assert m["answered_per_s"] > 0 and m["elapsed_s"] > 0, where
        assert m["server_cpu_ms_per_request"] > 0 and m["client_cpu_us_per_request"] > 0, where
        assert m["other_cores"] >= 0 and m["warmup_errors"] == 0, where
    assert {s["name"]: s["status"] for s in results["servers"]} == {"ours-onnx": "ok", "mlflow": "ok"}
    assert next(s for s in results["servers"] if s["name"] == "ours-onnx")["exit_code"] == 0
    # The same model: ONNX Runtime's float32 probabilities within 1e-5 of MLflow's sklearn ones.
    ours, theirs = (results["agreement"][n]["probability"] for n in ("ours-onnx", "mlflow"))
    assert (
        len(ours) == len(theirs) == 20 and max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-5
    )
    text = doc.read_text()
    assert text.startswith(f"# Benchmarks\n\n{batch}\n{report.START}\nMade by `") and text.endswith(
        report.END + "\n"
    )
    assert (
        "### Goals of issue 13" in text and "| ours-onnx | gRPC `Predict` | grpc.aio | 64 | 30 | 0 |" in text
    )
    # No server had to be killed.
    assert not [s for s in results["servers"] if s.get("exit_code") is None]
