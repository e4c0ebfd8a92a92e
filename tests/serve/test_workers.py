"""``scoring serve --workers N``: real supervisors and workers on 127.0.0.1, real clients.

A killed worker is restarted and fails only the requests it held; a reload reaches every worker
without a failed request; ``/metrics`` adds the workers up; SIGTERM drains every worker and exits 0;
a port already served, or a model that cannot load, fails the start in one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import DATE
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, server_pool

from scoring import demo
from scoring.serve.metrics import Metrics
from scoring.serve.workers import RESTART_DELAYS_S, describe_exit, restart_delay

KEY = "workers-key"
FEATURES = list(demo.FEATURE_TYPES)
# Client threads under load: each holds at most one request at a time.
THREADS = 6
# The longest any wait below polls for: a worker loads the model in seconds, slower with the load on.
WAIT_S = 120
POLL_S = 0.05
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start servers for a module; every one still running at the end is stopped."""
    with server_pool() as start:
        yield start


@pytest.fixture(scope="module")
def workers(registry, server_factory) -> Server:
    """Two workers serving the session registry's champion (ONNX) over HTTP and gRPC, with an API key."""
    return server_factory("models:/credit-risk@champion", "--workers", "2", env={"SCORING_API_KEY": KEY})


@pytest.fixture(scope="module")
def record() -> dict:
    """One scorable ``/predict`` body."""
    features = demo.make_customers(1, DATE, seed=3)[FEATURES]
    return {"features": json.loads(features.to_json(orient="records"))[0]}


def _fresh_connections(server: Server) -> httpx.Client:
    """A client that opens a connection per request, so that the kernel spreads them over the workers."""
    return httpx.Client(
        base_url=server.http,
        headers={"x-api-key": KEY},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(POLL_S)


class Load:
    """Client threads sending ``/predict`` on fresh connections until stopped.

    Args:
        server: The server.
        record: The body sent.
        threads: How many client threads.
        after_failure: What a thread does after a request that failed, before its next one.

    Attributes:
        outcomes: Per request: when it started (``time.monotonic``), its status (0: no answer, the
            connection failed) and the model version that answered.
        failures: Per request not answered 200: when it started, its thread and what went wrong.
    """

    def __init__(
        self,
        server: Server,
        record: dict,
        threads: int = THREADS,
        after_failure: Callable[[], object] | None = None,
    ) -> None:
        self.outcomes: list[tuple[float, int, str | None]] = []
        self.failures: list[tuple[float, str, str]] = []
        self._after_failure = after_failure
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(server, record)) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _send(self, server: Server, record: dict) -> None:
        with _fresh_connections(server) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.post("/predict", json=record)
                except httpx.TransportError as e:
                    self._failed(started, 0, None, repr(e))
                    continue
                version = answer.json().get("model_version")
                if answer.status_code == 200:
                    self.outcomes.append((started, 200, version))
                else:
                    self._failed(started, answer.status_code, version, answer.text)

    def _failed(self, started: float, status: int, version: str | None, what: str) -> None:
        self.outcomes.append((started, status, version))
        self.failures.append((started, threading.current_thread().name, what))
        if self._after_failure is not None:
            self._after_failure()

    def answered_since(self, moment: float) -> int:
        """How many requests that started after ``moment`` were answered 200."""
        return sum(1 for started, status, _ in list(self.outcomes) if started > moment and status == 200)

    def wait_for_answers(self, count: int, since: float = 0.0) -> None:
        """Wait until ``count`` requests started after ``since`` were answered 200."""
        _wait_until(lambda: self.answered_since(since) >= count, f"{count} answered requests")


def _model_gauge(server: Server) -> dict[int, str]:
    """The model version each live worker serves, by pid, from ``/metrics``' per-worker model gauge."""
    with httpx.Client(base_url=server.http, timeout=30) as client:
        text = client.get("/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "scoring_model_info")
    return {int(s.labels["pid"]): s.labels["version"] for s in family.samples if s.value == 1}


def _requests_total(server: Server, route: str, status: str, protocol: str = "http") -> float:
    """``scoring_requests_total`` of ``route`` answered ``status``, over every worker."""
    with httpx.Client(base_url=server.http, timeout=30) as client:
        text = client.get("/metrics").text
    wanted = {"protocol": protocol, "route": route, "status": status}
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "scoring_requests"  # none before the first request was answered
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels == wanted
    )


def _pids_answering(server: Server, start: int, route: str) -> set[int]:
    """The pids of the workers whose access log has a line for ``route`` from log line ``start`` on."""
    pids = set()
    for line in server.lines[start:]:
        if "scoring.serve.access" in line and f'"route": "{route}"' in line:
            pids.add(int(line.split(" pid ", 1)[1].split("]", 1)[0]))
    return pids


def _listening_sockets(pid: int) -> int:
    """How many TCP sockets process ``pid`` holds in the LISTEN state."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with_target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if with_target.startswith("socket:["):
            inodes.add(with_target.removeprefix("socket:[").removesuffix("]"))
    listening = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            listening += fields[3] == "0A" and fields[9] in inodes  # 0A: TCP_LISTEN
    return listening


def test_metrics_add_up_every_worker(workers, record):
    pids = workers.worker_pids()
    assert len(pids) == 2
    before = _requests_total(workers, "/predict", "200")
    before_grpc = _requests_total(workers, HEALTH_CHECK, "OK", "grpc")
    mark = len(workers.lines)
    sent = 60
    with _fresh_connections(workers) as client:
        for _ in range(sent):
            assert client.post("/predict", json=record).status_code == 200
    for _ in range(sent):
        _check_health_on_a_connection_of_its_own(workers.grpc)
    assert _requests_total(workers, "/predict", "200") - before == sent
    assert _requests_total(workers, HEALTH_CHECK, "OK", "grpc") - before_grpc == sent
    # Both workers answered some of each (60 connections on one worker alone: a chance of 2 in 2**60).
    both = set(pids.values())
    for route in ("/predict", HEALTH_CHECK):
        _wait_until(lambda r=route: _pids_answering(workers, mark, r) == both, f"both workers on {route}")
    assert _model_gauge(workers) == dict.fromkeys(pids.values(), "2")
    # The supervisor holds the ports but takes no connection: only the workers listen (HTTP and gRPC).
    assert _listening_sockets(workers.process.pid) == 0
    assert all(_listening_sockets(pid) == 2 for pid in pids.values())


def _check_health_on_a_connection_of_its_own(target: str) -> None:
    # A local subchannel pool: channels of one process otherwise share their connection to a target.
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_killed_worker_is_restarted_and_fails_only_the_requests_it_held(workers, record, report):
    victim = workers.worker_pids()[1]
    survivor = workers.worker_pids()[2]
    mark = len(workers.lines)
    gone = f"worker 1 pid {victim} was killed by SIGKILL; restarting it"

    def until_the_worker_is_gone() -> None:
        # The kernel hands connections to a dying worker's listener until its sockets are closed, some
        # milliseconds after the SIGKILL: a thread retrying at once could be one of them again. After
        # its failure it waits for the supervisor to have seen the exit (the sockets closed by then),
        # so that each thread's failures are the requests the worker held, at most one per thread.
        workers.wait_for(re.escape(gone), start=mark, timeout=WAIT_S)

    with Load(workers, record, after_failure=until_the_worker_is_gone) as load:
        load.wait_for_answers(50)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        restarted = workers.wait_for(r"worker 1 pid (\d+) ready", start=mark, timeout=WAIT_S)
        restarted_at = time.monotonic()
        newcomer = int(restarted[1])
        # Fresh connections reach the new worker too: wait until its access log shows it answering.
        _wait_until(lambda: newcomer in _pids_answering(workers, mark, "/predict"), "the new worker")
        load.wait_for_answers(100, since=restarted_at)
    # Each thread holds one request at a time: the worker killed held at most one per thread.
    assert len(load.failures) <= THREADS, load.failures
    assert all(started < restarted_at for started, _, _ in load.failures), load.failures
    assert gone in workers.log()
    assert newcomer != victim and workers.worker_pids() == {1: newcomer, 2: survivor}
    # The dead worker's sample is gone from the per-worker gauge; its counts stay in the totals.
    assert _model_gauge(workers) == {newcomer: "2", survivor: "2"}
    report(
        f"serve --workers 2: a worker SIGKILLed under {THREADS} client threads failed {len(load.failures)} "
        f"of {len(load.outcomes)} requests; back and serving in {restarted_at - killed_at:.1f} s"
    )


def test_a_port_another_server_listens_on_is_one_line_and_exit_1(workers):
    port = workers.http.rsplit(":", 1)[1]
    done = _serve_until_it_exits("models:/credit-risk@champion", "--port", port)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and errors == [
        f"error: cannot serve HTTP on 127.0.0.1:{port}: Address already in use"
    ]
    assert "Traceback" not in done.stderr and "starting" not in done.stderr


def test_a_reload_reaches_every_worker_without_a_failed_request(registry, server_factory, record):
    from mlflow import MlflowClient

    # An alias of this test's own: the session's champion stays where the other tests expect it.
    alias = "workers-reload"
    registry_client = MlflowClient()
    registry_client.set_registered_model_alias("credit-risk", alias, registry["onnx"])
    server = server_factory(
        f"models:/credit-risk@{alias}", "--workers", "2", "--no-grpc", env={"SCORING_API_KEY": KEY}
    )
    pids = set(server.worker_pids().values())
    with Load(server, record, threads=3) as load:
        load.wait_for_answers(50)
        registry_client.set_registered_model_alias("credit-risk", alias, registry["sklearn"])
        with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=60) as admin:
            outcome = admin.post("/admin/reload").json()
        assert outcome["reloaded"] and outcome["from"] == registry["onnx"]
        assert outcome["to"] == registry["sklearn"]
        everywhere = dict.fromkeys(pids, registry["sklearn"])
        _wait_until(lambda: _model_gauge(server) == everywhere, "every worker on the new version")
        swapped_at = time.monotonic()
        load.wait_for_answers(100, since=swapped_at)
    assert all(status == 200 for _, status, _ in load.outcomes), {s for _, s, _ in load.outcomes}
    assert {version for started, _, version in load.outcomes if started > swapped_at} == {registry["sklearn"]}
    assert "was reloaded: reloading the other workers" in server.log()
    # SIGHUP to the supervisor reaches every worker too: back to the ONNX version.
    registry_client.set_registered_model_alias("credit-risk", alias, registry["onnx"])
    server.process.send_signal(signal.SIGHUP)
    _wait_until(lambda: _model_gauge(server) == dict.fromkeys(pids, registry["onnx"]), "the SIGHUP reload")
    assert server.stop() == 0


def test_sigterm_lets_every_worker_finish_its_requests_then_exits_0(registry, server_factory, record):
    server = server_factory("models:/credit-risk@champion", "--workers", "2", "--no-grpc")
    host, port = server.http.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(record).encode()
    # Requests in flight for sure: each worker has read their headers and waits for their bodies.
    held = [_request_waiting_for_its_body(host, int(port), len(body)) for _ in range(8)]
    server.process.send_signal(signal.SIGTERM)
    _wait_until(lambda: _refused(host, int(port)), "the workers to stop taking connections")
    for connection in held:
        connection.sendall(body)
    answers = [_response(connection) for connection in held]
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), answers
    assert server.stop() == 0
    log = server.log()
    assert "SIGTERM: stopping 2 workers" in log and "Traceback" not in log
    assert log.count("]: stopped") == 2 and "scoring.serve.workers: stopped" in log


def _request_waiting_for_its_body(host: str, port: int, length: int) -> socket.socket:
    """A ``/predict`` whose headers a worker has read: it answered ``100 Continue``, and waits."""
    connection = socket.create_connection((host, port), timeout=30)
    connection.sendall(
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        interim += connection.recv(1)
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    return connection


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _response(connection: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection (a draining server closes it)."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    connection.close()
    return answer


def test_a_worker_that_cannot_load_the_model_fails_the_start_in_one_line(registry):
    done = _serve_until_it_exits("models:/no-such-model@champion", "--port", "0")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and len(errors) == 1 and "no-such-model" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stderr


def _serve_until_it_exits(model_uri: str, *flags: str) -> subprocess.CompletedProcess:
    """``scoring serve --workers 2 --no-grpc`` that is expected to exit at start, and what it wrote."""
    command = [str(Path(sys.executable).with_name("scoring")), "serve", "--model-uri", model_uri,
               "--workers", "2", "--no-grpc", *flags]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S, check=False)


def test_restarts_slow_down_while_a_worker_keeps_dying():
    assert restart_delay(0) == 0.0  # a worker that crashed after a good run: at once
    delays = [restart_delay(failures) for failures in range(10)]
    assert delays == sorted(delays) and delays[-1] == RESTART_DELAYS_S[-1] > 0
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


def test_the_model_gauge_names_only_the_version_served_in_one_process():
    metrics = Metrics()
    metrics.model.info({"name": "credit-risk", "version": "1", "backend": "pyfunc"})
    metrics.lineup_model.labels("champion").info({"name": "credit-risk", "version": "1", "backend": "pyfunc"})
    metrics.model.info({"name": "credit-risk", "version": "2", "backend": "onnx"})  # a reload
    text = metrics.render()[0].decode()
    assert [line for line in text.splitlines() if line.startswith("scoring_model_info")] == [
        'scoring_model_info{backend="onnx",name="credit-risk",version="2"} 1.0'
    ]  # as the Info it replaces said it, without the pid label of --workers N
    assert (
        'scoring_lineup_model_info{backend="pyfunc",model="champion",name="credit-risk",version="1"} 1.0'
        in text
    )
