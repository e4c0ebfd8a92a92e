"""The C load generators: ``wrk`` (HTTP/1.1) and ``h2load`` (gRPC over h2c; the burst over HTTP/1.1).

A Python client spends 100 to 500 us of CPU per request, on the two cores the server needs; these spend
15 to 45. Each runs as a subprocess, bounded in time (whole seconds: what both take), and its CPU time
is read from the kernel once it is reaped (``RUSAGE_CHILDREN``: the servers, children too, are reaped
only at their stop).

- ``wrk``: ``clients`` connections, each sending its next request when its last one is answered, one
  thread; ``wrk_bodies.lua`` sends the bodies of a file round-robin and counts the answers by status.
  Its latency percentiles are of every answer (an error's included).
- ``h2load`` for gRPC: ``clients`` connections of one stream each (``-m 1``), the same framed request on
  every stream. h2load knows HTTP statuses only, and gRPC answers its errors with HTTP 200 and a
  ``grpc-status`` trailer; an error has no message, though. Every OK answer to the same request is the
  same message, of a size learnt from one call beforehand: the data h2load received, divided by that
  size, is the count of OK answers, and the rest of the requests done are errors.
- ``h2load --h1 --rps R`` for the burst: ``connections`` HTTP/1.1 connections, each sending ``R``
  requests a second (a request due while the last one is unanswered waits for it), with a log line per
  request (start, status, microseconds), so that the accepted requests' latency is told from the 503s'.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.online.bodies import PREDICT_METHOD

WRK_SCRIPT = Path(__file__).with_name("wrk_bodies.lua")
# The longest one request may take before it counts as an error ("timeout"), as in bench.online.load.
REQUEST_TIMEOUT_S = 10
# Beyond its duration, how long a generator may take to connect, finish and print before it is killed.
SLACK_S = 60
TOOLS = ("wrk", "h2load")


class GeneratorFailed(RuntimeError):
    """A load generator exited with an error, printed nothing usable, or ran past its time."""


@dataclass(frozen=True)
class Finished:
    """A generator's run: what it printed and the CPU it used."""

    output: str
    cpu_s: float
    wall_s: float


def missing() -> list[str]:
    """The C load generators not on ``PATH`` (``make bench-online`` installs them: wrk, nghttp2-client)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def whole_seconds(seconds: float) -> int:
    """Seconds as wrk and h2load take them: whole ones, at least one."""
    return max(1, round(seconds))


def wrk(url: str, bodies_file: Path, clients: int, seconds: float) -> dict:
    """``clients`` connections POSTing the bodies of ``bodies_file`` back to back for ``seconds``.

    Returns:
        The load's summary, as ``bench.online.load.Tally.summary`` gives it.
    """
    command = ["wrk", "-t1", f"-c{clients}", f"-d{whole_seconds(seconds)}s"]
    command += ["--timeout", f"{REQUEST_TIMEOUT_S}s", "-s", str(WRK_SCRIPT), url, "--", str(bodies_file)]
    finished = _run(command, whole_seconds(seconds))
    return wrk_summary(finished.output, finished.cpu_s)


def wrk_summary(output: str, cpu_s: float) -> dict:
    """The summary of a wrk run from its output (the script's ``BENCH-RESULT`` line).

    Raises:
        GeneratorFailed: No such line.
    """
    match = re.search(r"^BENCH-RESULT (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise GeneratorFailed(f"wrk printed no result: {_tail(output)}")
    got = json.loads(match[1])
    statuses = {int(status): n for status, n in got["statuses"].items()}
    kinds = Counter({f"http {status}": n for status, n in statuses.items() if status != 200})
    kinds.update({kind: got[kind] for kind in ("connect", "read", "write", "timeout") if got[kind]})
    ok = statuses.get(200, 0)
    elapsed = got["duration_us"] / 1e6
    return _summary(
        ok=ok,
        kinds=kinds,
        elapsed_s=elapsed,
        percentiles_us=(got["p50_us"], got["p90_us"], got["p99_us"], got["max_us"], got["mean_us"]),
        cpu_s=cpu_s,
    )


def h2load_grpc(
    address: str, frame_file: Path, answer_bytes: int, clients: int, seconds: float, log: Path
) -> dict:
    """``clients`` h2c connections calling ``Predict`` back to back, one call in flight on each.

    Args:
        address: ``HOST:PORT`` of the gRPC server.
        frame_file: The framed request (``bodies.write_grpc_frame``).
        answer_bytes: Size of the framed OK answer to that request (``frame``'s length prefix included).
        clients: Connections.
        seconds: How long.
        log: Where h2load writes its per-request log.

    Returns:
        The load's summary, as ``bench.online.load.Tally.summary`` gives it.
    """
    command = ["h2load", "-t1", "-c", str(clients), "-m1", "-D", str(whole_seconds(seconds))]
    command += ["-d", str(frame_file), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    command += ["--log-file", str(log), f"http://{address}{PREDICT_METHOD}"]
    finished = _run(command, whole_seconds(seconds))
    return grpc_summary(h2load_counts(finished.output), read_log(log), answer_bytes, finished.cpu_s)


def grpc_summary(counts: dict, rows: np.ndarray, answer_bytes: int, cpu_s: float) -> dict:
    """The summary of an h2load gRPC run: OK answers counted from the data received.

    Args:
        counts: ``h2load_counts`` of its output.
        rows: Its per-request log (``read_log``); the latencies are every request's.
        answer_bytes: Size of one framed OK answer.
        cpu_s: Its CPU time.
    """
    # Every OK answer is the same message; an error has none (trailers only).
    answered = counts["data_bytes"] // answer_bytes if answer_bytes > 0 else 0
    ok = min(answered, counts["succeeded"])
    # h2load's "failed" holds its stream errors and timeouts too.
    kinds = Counter({"grpc not OK (no answer message)": counts["succeeded"] - ok, "failed": counts["failed"]})
    return _summary(
        ok=ok,
        kinds=+kinds,
        elapsed_s=counts["elapsed_s"],
        percentiles_us=_percentiles(rows[:, 2]) if len(rows) else None,
        cpu_s=cpu_s,
    )


def burst_connections(rate: float) -> int:
    """Connections enough to offer ``rate`` requests/s while each waits up to 200 ms for its answer.

    An HTTP/1.1 connection has one request in flight: an answer slower than the gap between its
    requests delays the next one, and the burst then sends less than it offers (it says how much).
    """
    return min(3000, max(64, math.ceil(rate / 5)))


def h2load_burst(url: str, body_file: Path, rate: float, seconds: float, log: Path) -> dict:
    """Offer ``rate`` requests/s of one body over HTTP/1.1 for ``seconds``, each request logged.

    Returns:
        What was offered and sent, the answers by status, and per status the latency percentiles
        (``accepted``: the 200s, ``refused``: the 503s), in milliseconds.
    """
    connections = burst_connections(rate)
    command = ["h2load", "--h1", "-t1", "-c", str(connections), "--rps", f"{rate / connections:.4f}"]
    command += ["-D", str(whole_seconds(seconds)), "-d", str(body_file)]
    command += ["-H", "content-type: application/json", "--log-file", str(log), url]
    finished = _run(command, whole_seconds(seconds))
    counts = h2load_counts(finished.output)
    return burst_summary(read_log(log), counts, rate, connections, finished.cpu_s)


def burst_summary(rows: np.ndarray, counts: dict, rate: float, connections: int, cpu_s: float) -> dict:
    """The burst's figures from h2load's per-request log rows (start us, status, us) and counts."""
    statuses = Counter(int(s) for s in rows[:, 1]) if len(rows) else Counter()
    elapsed = counts["elapsed_s"]
    lost = counts["started"] - len(rows)  # in flight when the time was up, or never answered
    # Answers other than 200 and 503 are in the log; a request that got none (a stream error, a
    # timeout) is not, and is in h2load's "errored" and "timeout" counts.
    kinds = Counter({f"http {s}": n for s, n in statuses.items() if s not in (200, 503)})
    kinds.update({"stream error": counts["errored"], "timeout": counts["timeout"]})

    def latency(status: int) -> dict:
        picked = rows[rows[:, 1] == status, 2] if len(rows) else np.empty(0)
        figures = _percentiles(picked)
        return dict(zip(("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"), _ms(figures), strict=True))

    return {
        "offered_per_s": rate,
        "connections": connections,
        "started": counts["started"],
        "sent_per_s": counts["started"] / elapsed if elapsed > 0 else None,
        "answered": len(rows),
        "unanswered": max(lost, 0),
        "ok": statuses.get(200, 0),
        "refused": statuses.get(503, 0),
        "errors": int(sum((+kinds).values())),
        "error_kinds": dict(+kinds),
        "elapsed_s": elapsed,
        "answered_per_s": statuses.get(200, 0) / elapsed if elapsed > 0 else None,
        "refused_per_s": statuses.get(503, 0) / elapsed if elapsed > 0 else None,
        "accepted": latency(200),
        "refused_latency": latency(503),
        "client_cpu_s": cpu_s,
    }


def h2load_counts(output: str) -> dict:
    """The counts of h2load's summary: requests by outcome, the data received, the duration.

    Raises:
        GeneratorFailed: The summary is not in the output.
    """
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    finished = re.search(r"finished in ([\d.]+)(ms|s),", output)
    data = re.search(r"\((\d+)\) data", output)
    if not (requests and finished and data):
        raise GeneratorFailed(f"h2load printed no summary: {_tail(output)}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = {name: int(value) for name, value in zip(names, requests.groups(), strict=True)}
    counts["elapsed_s"] = float(finished[1]) / (1000.0 if finished[2] == "ms" else 1.0)
    counts["data_bytes"] = int(data[1])
    return counts


def read_log(path: Path) -> np.ndarray:
    """h2load's per-request log as an ``N x 3`` array: start (us since the epoch), status, duration (us)."""
    if not path.exists() or path.stat().st_size == 0:
        return np.empty((0, 3), dtype=np.int64)
    return np.loadtxt(path, dtype=np.int64, delimiter="\t", usecols=(0, 1, 2), ndmin=2)


def _run(command: Sequence[str], seconds: int) -> Finished:
    """Run a generator to its end; its CPU time is what the children reaped meanwhile used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT_S + SLACK_S
        )
    except subprocess.TimeoutExpired as e:
        raise GeneratorFailed(f"{command[0]} ran past {e.timeout:.0f} s") from e
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise GeneratorFailed(f"{command[0]} exited {done.returncode}: {_tail(output)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Finished(output, cpu, time.perf_counter() - started)


def _summary(
    ok: int, kinds: Counter, elapsed_s: float, percentiles_us: Sequence[float] | None, cpu_s: float
) -> dict:
    errors = int(sum(kinds.values()))
    p50, p90, p99, top, mean = _ms(percentiles_us)
    return {
        "sent": ok + errors,
        "ok": ok,
        "errors": errors,
        "error_kinds": dict(kinds),
        "elapsed_s": elapsed_s,
        "answered_per_s": ok / elapsed_s if elapsed_s > 0 else None,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": top,
        "mean_ms": mean,
        "client_cpu_s": cpu_s,
        "client_lag_max_ms": 0.0,
        "uncounted": 0,
    }


def _percentiles(us: np.ndarray) -> tuple[float, ...] | None:
    if not len(us):
        return None
    return (*(float(np.percentile(us, q)) for q in (50, 90, 99)), float(us.max()), float(us.mean()))


def _ms(us: Sequence[float] | None) -> tuple[float | None, ...]:
    return (None,) * 5 if us is None else tuple(v / 1000.0 for v in us)


def _tail(output: str, lines: int = 8) -> str:
    return " / ".join(output.strip().splitlines()[-lines:]) or "(nothing)"
