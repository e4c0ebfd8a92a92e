"""The Markdown section of an online benchmark run, from its ``results.json`` content.

``render`` gives the section (between ``START`` and ``END``); ``update_file`` puts it between those
markers of an existing file, leaving the rest (the batch benchmark's section included) alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench import report as batch_report
from bench.report import DASH, count, table, times

START = "<!-- online:begin -->"
END = "<!-- online:end -->"
GIB = 1024**3
# The goals of issue 13.
P99_GOAL_MS = 10.0
GOAL_RATE = 200.0
THROUGHPUT_GOAL = 5.0
GOAL_CLIENTS = 64
CLIENTS = {"aiohttp": "aiohttp", "sync": "grpc stub, threads", "aio": "grpc.aio"}
# The server our throughput is compared with.
BASELINE = "mlflow"


def ms(value: float | None) -> str:
    """Milliseconds: two decimals under 10 ms, one above."""
    if value is None:
        return DASH
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def cores(value: float | None) -> str:
    """A share of the machine in cores, two decimals."""
    return DASH if value is None else f"{value:.2f}"


def one_line(m: Mapping) -> str:
    """A measurement in one line, for the progress output."""
    if m.get("status") != "ok":
        return f"FAILED ({m.get('reason')})"
    errors = f", {m['errors']} errors {m['error_kinds']}" if m["errors"] else ""
    return (
        f"{count(m['answered_per_s'])} req/s, p50 {ms(m['p50_ms'])} ms, p99 {ms(m['p99_ms'])} ms, "
        f"max {ms(m['max_ms'])} ms{errors}; server {m['server_cpu_ms_per_request']:.2f} ms CPU/request, "
        f"client {m['client_cpu_us_per_request']:.0f} us CPU/request"
    )


def find(
    measurements: Sequence[Mapping], server: str, protocol: str, load: str, value: float
) -> Mapping | None:
    """The first ok measurement of ``server`` over ``protocol`` at a rate, or a number of clients."""
    key = "rate" if load == "rate" else "clients"
    for m in measurements:
        if (m["server"], m["protocol"], m["load"], m[key]) == (server, protocol, load, value):
            return m if m.get("status") == "ok" else None
    return None


def goals(results: Mapping) -> list[list[str]]:
    """The goals' rows: what was measured against each, and whether it was met."""
    measurements = results["measurements"]
    settings = results["settings"]
    rate = settings["rate"]
    clients = GOAL_CLIENTS if GOAL_CLIENTS in settings["clients"] else max(settings["clients"])
    rows = []
    for protocol, what in (("http", "our HTTP `/predict`"), ("grpc", "our gRPC `Predict`")):
        m = find(measurements, "ours-onnx", protocol, "rate", rate)
        goal = f"p99 <= {P99_GOAL_MS:g} ms at {GOAL_RATE:g} req/s, one record, {what} (ONNX)"
        if m is None:
            rows.append([goal, "not measured", "untested"])
            continue
        met = m["p99_ms"] <= P99_GOAL_MS and m["errors"] == 0 and rate >= GOAL_RATE
        at = "" if rate == GOAL_RATE else f" (at {rate:g} req/s)"
        rows.append(
            [
                goal,
                f"p99 {ms(m['p99_ms'])} ms{at}: x{m['p99_ms'] / P99_GOAL_MS:.2f} of the bound, "
                f"{m['errors']} errors of {m['sent']:,}{_load_note(m)}",
                "met" if met else "not met",
            ]
        )
    base = find(measurements, BASELINE, "http", "clients", clients)
    for protocol, what in (("http", "our HTTP `/predict`"), ("grpc", "our gRPC `Predict`")):
        m = find(measurements, "ours-onnx", protocol, "clients", clients)
        goal = f"{GOAL_CLIENTS} clients: >= {THROUGHPUT_GOAL:g}x the req/s of `mlflow models serve`, "
        goal += f"{what} (ONNX)"
        if m is None or base is None:
            rows.append([goal, "not measured", "untested"])
            continue
        ratio = _ratio(m, base)
        met = ratio is not None and ratio >= THROUGHPUT_GOAL and m["errors"] == 0 and clients == GOAL_CLIENTS
        at = "" if clients == GOAL_CLIENTS else f" (at {clients} clients)"
        measured = (
            f"{count(m['answered_per_s'])} vs {count(base['answered_per_s'])} req/s{at}: {times(ratio)}"
        )
        # For the record: MLflow with one uvicorn worker per core.
        more = find(measurements, "mlflow-2w", "http", "clients", clients)
        if more is not None:
            measured += f"; {times(_ratio(m, more))} of `--workers 2` ({count(more['answered_per_s'])} req/s)"
        rows.append([goal, measured + _load_note(m), "met" if met else "not met"])
    return rows


def _ratio(m: Mapping, base: Mapping) -> float | None:
    return m["answered_per_s"] / base["answered_per_s"] if base["answered_per_s"] else None


def _load_note(m: Mapping) -> str:
    return f" (load: {CLIENTS.get(m['client'], m['client'])})" if m["protocol"] == "grpc" else ""


def latency_table(results: Mapping) -> list[str]:
    """Single-record latency at the fixed rate, one row per server, protocol and client."""
    header = ["server", "protocol", "load generator", "requests", "errors", "answered/s", "p50 ms", "p99 ms"]
    header += ["max ms", "server CPU ms/request", "client CPU us/request", "other load (cores)"]
    body = []
    for m in results["measurements"]:
        if m["load"] != "rate":
            continue
        if m.get("status") != "ok":
            body.append([*_who(m), "FAILED", m.get("reason") or DASH, *[DASH] * 7])
            continue
        body.append(
            [
                *_who(m),
                f"{m['sent']:,}",
                _errors(m),
                count(m["answered_per_s"]),
                ms(m["p50_ms"]),
                ms(m["p99_ms"]),
                ms(m["max_ms"]),
                f"{m['server_cpu_ms_per_request']:.2f}",
                count(m["client_cpu_us_per_request"]),
                cores(m["other_cores"]),
            ]
        )
    right = [False, False, False, True, True, True, True, True, True, True, True, True]
    return table(header, right, body)


def throughput_table(results: Mapping) -> list[str]:
    """Requests answered per second at each concurrency, with the ratio to MLflow's at the same one."""
    header = ["server", "protocol", "load generator", "clients", "requests", "errors", "req/s", "x mlflow"]
    header += ["p50 ms", "p99 ms", "server CPU ms/request", "client CPU us/request", "server cores"]
    header += ["client cores", "other load (cores)"]
    measurements = results["measurements"]
    body = []
    for m in measurements:
        if m["load"] != "clients":
            continue
        if m.get("status") != "ok":
            body.append([*_who(m), str(m["clients"]), "FAILED", m.get("reason") or DASH, *[DASH] * 8])
            continue
        base = find(measurements, BASELINE, "http", "clients", m["clients"])
        ratio = _ratio(m, base) if base else None
        body.append(
            [
                *_who(m),
                str(m["clients"]),
                f"{m['sent']:,}",
                _errors(m),
                count(m["answered_per_s"]),
                times(ratio),
                ms(m["p50_ms"]),
                ms(m["p99_ms"]),
                f"{m['server_cpu_ms_per_request']:.2f}",
                count(m["client_cpu_us_per_request"]),
                cores(m["server_cores"]),
                cores(m["client_cores"]),
                cores(m["other_cores"]),
            ]
        )
    right = [False, False, False] + [True] * 12
    return table(header, right, body)


def agreement_table(results: Mapping) -> list[str]:
    """How far each server's probabilities are from MLflow's sklearn ``predict_proba``, record by record."""
    agreement = results.get("agreement", {})
    base = agreement.get(BASELINE, {}).get("probability")
    body = []
    for name, seen in agreement.items():
        if "error" in seen:
            body.append([name, DASH, f"failed: {seen['error']}".replace("|", "/")])
            continue
        diff = (
            max(abs(a - b) for a, b in zip(seen["probability"], base, strict=False))
            if base and name != BASELINE
            else None
        )
        body.append([name, str(seen["records"]), DASH if diff is None else f"{diff:.1e}"])
    return table(
        ["server", "records", "largest difference from mlflow's P(class 1)"], [False, True, True], body
    )


def servers_table(results: Mapping) -> list[str]:
    """How each server was started, how long it took to answer, and how it stopped."""
    body = []
    for s in results["servers"]:
        if s["status"] != "ok":
            body.append([s["name"], "FAILED", (s.get("reason") or DASH).replace("|", "/"), DASH])
            continue
        code = s.get("exit_code")
        # MLflow's CLI has no SIGTERM handler: it ends by the signal, and its uvicorn stops after it.
        stopped = "killed" if code is None else f"exit {code}" if code >= 0 else f"ended by signal {-code}"
        body.append([s["name"], f"`{_short(s['command'])}`", f"{s['start_s']:.1f}", f"SIGTERM: {stopped}"])
    return table(["server", "command", "ready after (s)", "stopped"], [False, False, True, False], body)


def render(results: Mapping) -> str:
    """The online results section, markers included."""
    started = dt.datetime.fromisoformat(results["started_at"])
    minutes = round(results.get("duration_s", 0) / 60)
    machine = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    settings = results["settings"]
    clients = ", ".join(str(c) for c in settings["clients"])
    lines = [
        START,
        f"Made by `{results['command']}` on {started:%Y-%m-%d} ({started:%H:%M} UTC, {minutes} min).",
        "",
        f"Machine: {machine['cores']} cores, {machine['memory_bytes'] / GIB:.1f} GiB, {machine['platform']}; "
        f"{versions}. Load average before the run: {machine['load_before']}, after: "
        f"{machine['load_after']}. The load generator runs on the same cores as the server; its CPU is in "
        "the tables, and so is what else ran on the machine meanwhile (other load).",
        "",
        f"Every load sends single-record requests, at most {settings['requests']:,} of them and for at most "
        f"{settings['seconds']:g} s, after an uncounted warm-up. Latency: an open loop at "
        f"{settings['rate']:g} requests/s, each request timed from when it was due. Throughput: {clients} "
        "clients, each sending its next request when the last is answered. Errors: answers other than "
        "HTTP 200 or gRPC OK, and requests unanswered after "
        f"{settings['request_timeout_s']:g} s.",
        *_code_note(results),
        "",
        "### Goals of issue 13",
        "",
        *table(["goal", "measured", "met"], [False, False, False], goals(results)),
        "",
        f"### Single-record latency at {settings['rate']:g} requests/s (open loop)",
        "",
        *latency_table(results),
        "",
        f"### Throughput at {clients} concurrent clients (closed loop, one record per request)",
        "",
        *throughput_table(results),
        "",
        "### The same model: answers checked",
        "",
        *agreement_table(results),
        "",
        "### Servers",
        "",
        *servers_table(results),
        END,
    ]
    return "\n".join(lines) + "\n"


def update_file(path: Path, section: str) -> None:
    """Put ``section`` between the online markers of ``path``; without them, append it to the file."""
    batch_report.put_section(path, START, END, section)


def _code_note(results: Mapping) -> list[str]:
    code = results.get("code")
    if not code:
        return []
    line = f"Code: commit {code['commit'][:12]}, `scoring/` sources sha256 {code['scoring_sha256'][:12]}"
    after = code.get("scoring_sha256_after")
    if after and after != code["scoring_sha256"]:
        line += f" at the start, {after[:12]} at the end: **the server's code changed during the run**"
    return ["", line + "."]


def _who(m: Mapping) -> list[str]:
    protocol = {"http": f"HTTP `{m['path']}`", "grpc": f"gRPC `{m['path']}`"}[m["protocol"]]
    client = CLIENTS.get(m["client"], m["client"])
    return [m["server"], protocol, client]


def _errors(m: Mapping) -> str:
    if not m["errors"]:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(m["error_kinds"].items()))
    return f"{m['errors']:,} ({kinds})".replace("|", "/")


def _short(command: str) -> str:
    """The command without the interpreter's directory: ``scoring serve ...``, ``mlflow models serve ...``."""
    first, _, rest = command.partition(" ")
    return f"{Path(first).name} {rest}".strip().replace("|", "/")
