"""The Markdown section of an online benchmark run, from its ``results.json`` content.

``render`` gives the section (between ``START`` and ``END``); ``update_file`` puts it between those
markers of an existing file, leaving the rest (the batch benchmark's section included) alone. Every
verdict of the goals' table is computed from the measurements of the run.
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
# The goals of issue 32.
GOAL_CLIENTS = 64
SCALING_GOAL = 1.8  # 2 workers / 1 worker, req/s at GOAL_CLIENTS
GRPC_GOAL = 10.0  # our gRPC (2 workers) / `mlflow models serve` (its default, 1 worker)
P99_GOAL_MS = 10.0
GOAL_RATE = 200.0
BURST_FACTOR = 4.0  # the burst offers this times the capacity
BURST_P99_FACTOR = 2.0  # accepted p99 (and the 503s') within this times the unloaded p99
CLIENTS = {
    "aiohttp": "aiohttp",
    "grpc.aio": "grpc.aio",
    "wrk": "wrk",
    "h2load": "h2load",
    # results of runs before wrk and h2load
    "sync": "grpc stub, threads",
    "aio": "grpc.aio",
}
# Servers named in the goals.
ONNX_1W, ONNX_2W = "ours-onnx", "ours-onnx-2w"
MLFLOW, MLFLOW_2W = "mlflow", "mlflow-2w"
PIPELINE = "pipeline"


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
    if m["load"] == "burst":
        accepted, refused = m["accepted"], m["refused_latency"]
        return (
            f"offered {count(m['rate'])} req/s over {m['clients']} connections: {m['ok']:,} answered 200 "
            f"(p99 {ms(accepted['p99_ms'])} ms), {m['refused']:,} answered 503 (p99 {ms(refused['p99_ms'])} "
            f"ms), {m['errors']} other errors {m['error_kinds']}; unloaded p99 {ms(m['unloaded_p99_ms'])} ms"
        )
    errors = f", {m['errors']} errors {m['error_kinds']}" if m["errors"] else ""
    return (
        f"{count(m['answered_per_s'])} req/s, p50 {ms(m['p50_ms'])} ms, p99 {ms(m['p99_ms'])} ms, "
        f"max {ms(m['max_ms'])} ms{errors}; server {m['server_cpu_ms_per_request']:.2f} ms CPU/request, "
        f"client {m['client_cpu_us_per_request']:.0f} us CPU/request"
    )


def find(
    measurements: Sequence[Mapping], server: str, protocol: str, load: str, value: float | None = None
) -> Mapping | None:
    """The first ok measurement of ``server`` over ``protocol``: at a rate, at N clients, or its burst."""
    key = {"rate": "rate", "clients": "clients"}.get(load)
    for m in measurements:
        if (m["server"], m["protocol"], m["load"]) != (server, protocol, load):
            continue
        if key is None or m[key] == value:
            return m if m.get("status") == "ok" else None
    return None


def goals(results: Mapping) -> list[list[str]]:
    """The goals' rows: what was measured against each, and whether it was met."""
    clients = _goal_clients(results["settings"])
    rows = [_scaling_row(results, protocol, clients) for protocol in ("http", "grpc")]
    rows.append(_grpc_row(results, clients))
    for backend in ("onnx", "pyfunc"):
        rows += [_latency_row(results, backend, protocol) for protocol in ("http", "grpc")]
    rows += _burst_rows(results)
    return rows


def _goal_clients(settings: Mapping) -> int:
    return GOAL_CLIENTS if GOAL_CLIENTS in settings["clients"] else max(settings["clients"])


def _scaling_row(results: Mapping, protocol: str, clients: int) -> list[str]:
    goal = (
        f"{GOAL_CLIENTS} clients, {_protocol(protocol)} (ONNX): 2 workers >= {SCALING_GOAL:g}x the req/s "
        "of 1 worker"
    )
    measurements = results["measurements"]
    two = find(measurements, ONNX_2W, protocol, "clients", clients)
    one = find(measurements, ONNX_1W, protocol, "clients", clients)
    if two is None or one is None:
        return [goal, "not measured", "untested"]
    ratio = _ratio(two, one)
    met = ratio is not None and ratio >= SCALING_GOAL and not (two["errors"] or one["errors"])
    measured = (
        f"{count(two['answered_per_s'])} vs {count(one['answered_per_s'])} req/s{_at(clients)}: "
        f"{times(ratio)}{_errors_note(two, one)}{_load_note(two)}"
    )
    return [goal, measured, _verdict(met and clients == GOAL_CLIENTS)]


def _grpc_row(results: Mapping, clients: int) -> list[str]:
    goal = (
        f"{GOAL_CLIENTS} clients: our gRPC `Predict` (ONNX, 2 workers) >= {GRPC_GOAL:g}x the req/s of "
        "`mlflow models serve` (its default: 1 worker)"
    )
    measurements = results["measurements"]
    ours = find(measurements, ONNX_2W, "grpc", "clients", clients)
    base = find(measurements, MLFLOW, "http", "clients", clients)
    if ours is None or base is None:
        return [goal, "not measured", "untested"]
    ratio = _ratio(ours, base)
    met = ratio is not None and ratio >= GRPC_GOAL and not (ours["errors"] or base["errors"])
    measured = (
        f"{count(ours['answered_per_s'])} vs {count(base['answered_per_s'])} req/s{_at(clients)}: "
        f"{times(ratio)}{_errors_note(ours, base)}"
    )
    # For the record: MLflow with one uvicorn worker per core, as ours has.
    more = find(measurements, MLFLOW_2W, "http", "clients", clients)
    if more is not None:
        measured += f"; {times(_ratio(ours, more))} of `--workers 2` ({count(more['answered_per_s'])} req/s)"
    return [goal, measured + _load_note(ours), _verdict(met and clients == GOAL_CLIENTS)]


def _latency_row(results: Mapping, backend: str, protocol: str) -> list[str]:
    """The worst p99 at the goal's rate over our servers of one backend (1 and 2 workers)."""
    rate = results["settings"]["rate"]
    what = "ONNX backend" if backend == "onnx" else "pyfunc backend: the sklearn classifier and the pipeline"
    goal = f"p99 <= {P99_GOAL_MS:g} ms at {GOAL_RATE:g} req/s, one record, {_protocol(protocol)} ({what})"
    names = _servers_of(results, backend)
    found = [m for name in names if (m := find(results["measurements"], name, protocol, "rate", rate))]
    if not found or (
        backend == "pyfunc" and not any(_model(results, m["server"]) == PIPELINE for m in found)
    ):
        return [goal, "not measured", "untested"]
    worst = max(found, key=lambda m: m["p99_ms"] if m["p99_ms"] is not None else float("inf"))
    errors = sum(m["errors"] for m in found)
    sent = sum(m["sent"] for m in found)
    met = all(m["p99_ms"] is not None and m["p99_ms"] <= P99_GOAL_MS for m in found)
    each = ", ".join(f"{m['server']} {ms(m['p99_ms'])}" for m in found)
    at = "" if rate == GOAL_RATE else f" (at {rate:g} req/s)"
    measured = (
        f"worst p99 {ms(worst['p99_ms'])} ms ({each}){at}: x{worst['p99_ms'] / P99_GOAL_MS:.2f} of the "
        f"bound, {errors} errors of {sent:,}{_load_note(worst)}"
        if worst["p99_ms"] is not None
        else f"no answer of {sent:,}"
    )
    return [goal, measured, _verdict(met and errors == 0 and rate == GOAL_RATE)]


def _burst_rows(results: Mapping) -> list[list[str]]:
    """One row per burst measured: 503s, and fast, and the accepted requests' p99 near the unloaded one."""
    rows = []
    for m in results["measurements"]:
        if m["load"] != "burst":
            continue
        goal = (
            f"burst at {BURST_FACTOR:g}x capacity, HTTP `/predict`, {m['server']}: fast 503s, and the "
            f"accepted requests' p99 (and the 503s') <= {BURST_P99_FACTOR:g}x the unloaded p99"
        )
        if m.get("status") != "ok":
            rows.append([goal, f"not measured ({m.get('reason') or 'failed'})".replace("|", "/"), "untested"])
            continue
        rows.append([goal, *_burst_verdict(m)])
    if not rows:
        goal = (
            f"burst at {BURST_FACTOR:g}x capacity: fast 503s, accepted p99 <= {BURST_P99_FACTOR:g}x unloaded"
        )
        rows.append([goal, "not measured (the burst needs h2load)", "untested"])
    return rows


def _burst_verdict(m: Mapping) -> list[str]:
    unloaded = m.get("unloaded_p99_ms")
    accepted, refused = m["accepted"]["p99_ms"], m["refused_latency"]["p99_ms"]
    bound = BURST_P99_FACTOR * unloaded if unloaded else None
    factor = m["rate"] / m["capacity_per_s"] if m.get("capacity_per_s") else None
    met = (
        bound is not None
        and m["refused"] > 0
        and accepted is not None
        and accepted <= bound
        and refused <= bound
        and m["errors"] == 0
        and factor is not None
        and factor >= BURST_FACTOR * 0.999
    )
    measured = (
        f"offered {count(m['rate'])} req/s ({times(factor)} of {count(m.get('capacity_per_s'))}), sent "
        f"{count(m['sent_per_s'])}/s: {m['refused']:,} 503s (p99 {ms(refused)} ms), {m['ok']:,} accepted "
        f"(p99 {ms(accepted)} ms) vs unloaded p99 {ms(unloaded)} ms: "
        f"{times(accepted / unloaded if accepted is not None and unloaded else None)}, "
        f"{m['errors']} other errors"
    )
    return [measured, _verdict(met)]


def _servers_of(results: Mapping, backend: str) -> list[str]:
    """Our servers of a backend: ``onnx``, or ``pyfunc`` (the sklearn model and the pipeline)."""
    return [
        s["name"]
        for s in results["servers"]
        if s.get("kind") == "ours" and ("onnx" if s.get("model") == "onnx" else "pyfunc") == backend
    ]


def _model(results: Mapping, server: str) -> str | None:
    return next((s.get("model") for s in results["servers"] if s["name"] == server), None)


def _spec(results: Mapping, server: str) -> Mapping:
    return next((s for s in results["servers"] if s["name"] == server), {})


def _ratio(m: Mapping, base: Mapping) -> float | None:
    return m["answered_per_s"] / base["answered_per_s"] if base["answered_per_s"] else None


def _at(clients: int) -> str:
    return "" if clients == GOAL_CLIENTS else f" (at {clients} clients)"


def _errors_note(*ms_: Mapping) -> str:
    errors = sum(m["errors"] for m in ms_)
    return f", {errors} errors" if errors else ""


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def _protocol(protocol: str) -> str:
    return "our gRPC `Predict`" if protocol == "grpc" else "our HTTP `/predict`"


def _load_note(m: Mapping) -> str:
    return f" (load: {CLIENTS.get(m['client'], m['client'])})"


def latency_table(results: Mapping) -> list[str]:
    """Single-record latency at the fixed rate, one row per server and protocol."""
    header = ["server", "protocol", "load generator", "requests", "errors", "answered/s", "p50 ms", "p99 ms"]
    header += ["max ms", "server CPU ms/request", "client CPU us/request", "other load (cores)"]
    body = []
    for m in results["measurements"]:
        if m["load"] != "rate":
            continue
        if m.get("status") != "ok":
            body.append([*_who(m), "FAILED", _reason(m), *[DASH] * 7])
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
    """Requests answered per second at each concurrency, with the ratios to 1 worker and to MLflow's."""
    header = ["server", "protocol", "load generator", "clients", "requests", "errors", "req/s", "x 1 worker"]
    header += ["x mlflow", "p50 ms", "p99 ms", "server CPU ms/request", "client CPU us/request"]
    header += ["server cores", "client cores", "other load (cores)"]
    measurements = results["measurements"]
    body = []
    for m in measurements:
        if m["load"] != "clients":
            continue
        if m.get("status") != "ok":
            body.append([*_who(m), str(m["clients"]), "FAILED", _reason(m), *[DASH] * 9])
            continue
        spec = _spec(results, m["server"])
        one = spec.get("one_worker")
        single = find(measurements, one, m["protocol"], "clients", m["clients"]) if one else None
        base = find(measurements, spec.get("baseline", "mlflow"), "http", "clients", m["clients"])
        body.append(
            [
                *_who(m),
                str(m["clients"]),
                f"{m['sent']:,}",
                _errors(m),
                count(m["answered_per_s"]),
                times(_ratio(m, single)) if single else DASH,
                times(_ratio(m, base)) if base else DASH,
                ms(m["p50_ms"]),
                ms(m["p99_ms"]),
                f"{m['server_cpu_ms_per_request']:.2f}",
                count(m["client_cpu_us_per_request"]),
                cores(m["server_cores"]),
                cores(m["client_cores"]),
                cores(m["other_cores"]),
            ]
        )
    right = [False, False, False] + [True] * 13
    return table(header, right, body)


def burst_table(results: Mapping) -> list[str]:
    """Each burst: what was offered, the 200s and the 503s apart, next to the unloaded p99."""
    header = [
        "server",
        "offered req/s",
        "x capacity",
        "connections",
        "answered",
        "200",
        "503",
        "other errors",
    ]
    header += ["200/s", "200 p50 ms", "200 p99 ms", "unloaded p99 ms", "x unloaded", "503 p50 ms"]
    header += ["503 p99 ms", "server cores", "client cores"]
    body = []
    for m in results["measurements"]:
        if m["load"] != "burst":
            continue
        if m.get("status") != "ok":
            body.append([m["server"], "FAILED", _reason(m), *[DASH] * 14])
            continue
        accepted, refused = m["accepted"], m["refused_latency"]
        unloaded = m.get("unloaded_p99_ms")
        body.append(
            [
                m["server"],
                count(m["rate"]),
                times(m["rate"] / m["capacity_per_s"]) if m.get("capacity_per_s") else DASH,
                count(m["clients"]),
                f"{m['answered']:,}",
                f"{m['ok']:,}",
                f"{m['refused']:,}",
                _errors(m),
                count(m["answered_per_s"]),
                ms(accepted["p50_ms"]),
                ms(accepted["p99_ms"]),
                ms(unloaded),
                times(accepted["p99_ms"] / unloaded) if accepted["p99_ms"] is not None and unloaded else DASH,
                ms(refused["p50_ms"]),
                ms(refused["p99_ms"]),
                cores(m["server_cores"]),
                cores(m["client_cores"]),
            ]
        )
    return table(header, [False] + [True] * 16, body)


def agreement_table(results: Mapping) -> list[str]:
    """How far each server's answers are from the model's own scikit-learn ones, record by record."""
    references = results.get("reference", {})
    body = []
    for name, seen in results.get("agreement", {}).items():
        if "error" in seen:
            body.append([name, DASH, DASH, f"failed: {seen['error']}".replace("|", "/"), DASH])
            continue
        reference = references.get(seen.get("model"), {})
        body.append(
            [
                name,
                seen.get("model") or DASH,
                str(seen["records"]),
                _largest_difference(seen.get("probability"), reference.get("probability")),
                _labels_equal(seen.get("labels"), reference.get("labels")),
            ]
        )
    header = ["server", "model", "records", "largest difference from scikit-learn's P(class 1)"]
    header.append("labels equal to scikit-learn's predict")
    return table(header, [False, False, True, True, True], body)


def _largest_difference(seen: Sequence[float] | None, reference: Sequence[float] | None) -> str:
    if not seen or not reference:
        return DASH
    return f"{max(abs(a - b) for a, b in zip(seen, reference, strict=False)):.1e}"


def _labels_equal(seen: Sequence | None, reference: Sequence | None) -> str:
    if not seen or not reference:
        return DASH
    pairs = list(zip(seen, reference, strict=False))
    return f"{sum(str(a) == str(b) for a, b in pairs)}/{len(pairs)}"


def servers_table(results: Mapping) -> list[str]:
    """How each server was started, how long it took to answer, and how it stopped."""
    body = []
    for s in results["servers"]:
        if s["status"] != "ok":
            body.append([s["name"], "FAILED", (s.get("reason") or DASH).replace("|", "/"), DASH, DASH])
            continue
        code = s.get("exit_code")
        # MLflow's CLI has no SIGTERM handler: it ends by the signal, and its uvicorn stops after it.
        stopped = "killed" if code is None else f"exit {code}" if code >= 0 else f"ended by signal {-code}"
        processes = str(s.get("detail", {}).get("processes", DASH))
        body.append(
            [s["name"], f"`{_short(s['command'])}`", processes, f"{s['start_s']:.1f}", f"SIGTERM: {stopped}"]
        )
    return table(
        ["server", "command", "processes", "ready after (s)", "stopped"],
        [False, False, True, True, False],
        body,
    )


def render(results: Mapping) -> str:
    """The online results section, markers included."""
    settings = results["settings"]
    clients = ", ".join(str(c) for c in settings["clients"])
    lines = [
        START,
        *_header(results),
        "",
        "### Goals of issue 32",
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
        f"### Burst at {settings.get('burst_factor', BURST_FACTOR):g}x capacity (our HTTP `/predict`)",
        "",
        *burst_table(results),
        "",
        "### The same models: answers checked",
        "",
        *agreement_table(results),
        "",
        "### Servers",
        "",
        *servers_table(results),
        END,
    ]
    return "\n".join(lines) + "\n"


def _header(results: Mapping) -> list[str]:
    started = dt.datetime.fromisoformat(results["started_at"])
    minutes = round(results.get("duration_s", 0) / 60)
    machine = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    settings = results["settings"]
    clients = ", ".join(str(c) for c in settings["clients"])
    generator = settings.get("load_generator", "python")
    closed = "wrk (HTTP) and h2load (gRPC)" if generator == "c" else "the Python client"
    flags = settings.get("serve_flags") or []
    return [
        f"Made by `{results['command']}` on {started:%Y-%m-%d} ({started:%H:%M} UTC, {minutes} min).",
        "",
        f"Machine: {machine['cores']} cores, {machine['memory_bytes'] / GIB:.1f} GiB, {machine['platform']}; "
        f"{versions}. Load average before the run: {machine['load_before']}, after: "
        f"{machine['load_after']}. The load generators run on the same cores as the server; their CPU is in "
        "the tables, and so is what else ran on the machine meanwhile (other load).",
        "",
        f"Every load sends single-record requests for at most {settings['seconds']:g} s, after an uncounted "
        f"warm-up. Latency: an open loop at {settings['rate']:g} requests/s (the Python client, at most "
        f"{settings['requests']:,} requests), each request timed from when it was due. Throughput: {clients} "
        f"clients, each sending its next request when the last is answered, on {closed}. Errors: answers "
        f"other than HTTP 200 or gRPC OK, and requests unanswered after {settings['request_timeout_s']:g} s."
        + (f" Every `scoring serve` also got `{' '.join(flags)}`." if flags else ""),
        *_code_note(results),
    ]


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


def _reason(m: Mapping) -> str:
    return (m.get("reason") or DASH).replace("|", "/")


def _errors(m: Mapping) -> str:
    if not m["errors"]:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(m["error_kinds"].items()))
    return f"{m['errors']:,} ({kinds})".replace("|", "/")


def _short(command: str) -> str:
    """The command without the interpreter's directory: ``scoring serve ...``, ``mlflow models serve ...``."""
    first, _, rest = command.partition(" ")
    return f"{Path(first).name} {rest}".strip().replace("|", "/")
