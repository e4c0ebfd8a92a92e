"""The servers under load, each a subprocess on 127.0.0.1: ``scoring serve`` and ``mlflow models serve``.

A server is started, waited for until it answers (ours: its ``serving NAME version V (BACKEND) on ...``
line; MLflow's: ``GET /ping``), measured, and stopped with SIGTERM. Its process tree's CPU time is
read before and after each load, so that the benchmark reports what each request cost the server.
Everything a server writes goes to its log file in the work directory (MLflow's uvicorn writes an access
line per request, its default).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HOST = "127.0.0.1"
# Loading the model, or importing MLflow, on a busy 2-core machine.
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
READY = re.compile(
    r"serving (\S+) version (\S+) \((\w+)\) on http://([\d.]+):(\d+)(?: and grpc ([\d.]+:\d+))?"
)


class ServerFailed(RuntimeError):
    """A server did not start (or stopped before it answered); the message ends with its log's tail."""


@dataclass
class Server:
    """A running server process and where it listens.

    Attributes:
        name: The benchmark's name for it (``ours-onnx``, ``ours-onnx-2w``, ``mlflow`` ...).
        process: The process started (MLflow's CLI, whose uvicorn is its child).
        command: Its command line.
        log: Its stdout and stderr.
        http: ``http://HOST:PORT``.
        grpc: ``HOST:PORT``, or None for an HTTP-only server.
        start_s: Seconds from start to its first answer.
        detail: What it said it serves (ours: the version and backend of its ready line), its workers
            and how many processes it runs.
    """

    name: str
    process: subprocess.Popen
    command: list[str]
    log: Path
    http: str
    grpc: str | None
    start_s: float
    detail: dict = field(default_factory=dict)

    def cpu_s(self) -> float:
        """CPU time (user + system) the process and its descendants have used so far."""
        total = 0.0
        try:
            members = [psutil.Process(self.process.pid)]
            members += members[0].children(recursive=True)
        except psutil.Error:
            return total
        for member in members:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
        return total

    def processes(self) -> int:
        """How many processes the server runs.

        MLflow: its CLI, uvicorn and uvicorn's workers; ours with ``--workers N``: the supervisor and its
        N workers (a multiprocessing resource tracker may be one more).
        """
        with contextlib.suppress(psutil.Error):
            return 1 + len(psutil.Process(self.process.pid).children(recursive=True))
        return 0

    def stop(self) -> int | None:
        """SIGTERM, then wait; whatever of its tree is still there after ``STOP_TIMEOUT_S`` is killed.

        Returns:
            The exit code of the process started (None when it had to be killed).
        """
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        # MLflow's uvicorn gets SIGTERM when its parent dies (PR_SET_PDEATHSIG); make sure it is gone.
        _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT_S)
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        return code


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_ours(
    name: str,
    model_uri: str,
    flags: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    grpc: bool = True,
    workers: int = 1,
) -> Server:
    """Start ``scoring serve`` on free ports and wait for its ready line.

    With ``--workers N`` the supervisor writes that line once every worker serves.

    Args:
        name: The benchmark's name for this server.
        model_uri: The model reference (``models:/NAME@ALIAS``).
        flags: More flags of ``scoring serve`` (``--backend pyfunc``).
        env: The environment (the registry's ``MLFLOW_TRACKING_URI``).
        log: Where its output goes.
        grpc: Whether to serve gRPC too.
        workers: ``--workers`` (left out when 1, the default, as a user runs it).

    Raises:
        ServerFailed: It exited, or did not say it serves within ``START_TIMEOUT_S``.
    """
    scoring = str(Path(sys.executable).with_name("scoring"))
    command = [scoring, "serve", "--model-uri", model_uri, "--host", HOST, "--port", "0"]
    command += ["--grpc-port", "0"] if grpc else ["--no-grpc"]
    command += ["--workers", str(workers)] if workers > 1 else []
    command += list(flags)
    started = time.perf_counter()
    process = _spawn(command, env, log)
    deadline = started + START_TIMEOUT_S
    while True:
        match = READY.search(log.read_text(encoding="utf-8", errors="replace"))
        if match:
            break
        _check_running(process, log, deadline, name)
        time.sleep(0.1)
    server = Server(
        name,
        process,
        command,
        log,
        f"http://{match[4]}:{match[5]}",
        match[6],
        time.perf_counter() - started,
        {"model": match[1], "version": match[2], "backend": match[3], "workers": workers},
    )
    server.detail["processes"] = server.processes()
    return server


def start_mlflow(name: str, model_uri: str, workers: int, env: Mapping[str, str], log: Path) -> Server:
    """Start ``mlflow models serve --env-manager local`` on a free port and wait until it answers.

    Args:
        name: The benchmark's name for this server.
        model_uri: ``models:/NAME/VERSION``.
        workers: uvicorn worker processes (``--workers``; MLflow's default is 1).
        env: The environment: the registry's ``MLFLOW_TRACKING_URI``, and this interpreter's ``bin``
            first on ``PATH`` (MLflow runs ``uvicorn`` from there).
        log: Where its output goes.

    Raises:
        ServerFailed: It exited, or did not answer ``GET /ping`` within ``START_TIMEOUT_S``.
    """
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", HOST, "-p", str(port), "--workers", str(workers)]
    started = time.perf_counter()
    process = _spawn(command, env, log)
    deadline = started + START_TIMEOUT_S
    url = f"http://{HOST}:{port}"
    while not _answers(url + "/ping"):
        _check_running(process, log, deadline, name)
        time.sleep(0.2)
    server = Server(name, process, command, log, url, None, time.perf_counter() - started)
    # With several workers /ping answers once the first is up: wait (a little) for the others.
    while workers > 1 and server.processes() < 2 + workers and time.perf_counter() < deadline:
        time.sleep(0.2)
    server.detail = {"model": model_uri, "workers": workers, "processes": server.processes()}
    return server


def server_env(tracking_uri: str) -> dict[str, str]:
    """The servers' environment: the bench registry, this interpreter's ``bin`` first on ``PATH``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_REGISTRY_URI"] = tracking_uri
    env.pop("SCORING_API_KEY", None)  # no key: the load sends none
    env.pop("MLFLOW_MODELS_WORKERS", None)  # MLflow's workers are the command's --workers
    return env


def _spawn(command: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(
            command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _check_running(process: subprocess.Popen, log: Path, deadline: float, name: str) -> None:
    if process.poll() is not None:
        raise ServerFailed(f"{name} exited {process.returncode} before it answered:\n{_tail(log)}")
    if time.perf_counter() > deadline:
        process.kill()
        process.wait()
        raise ServerFailed(f"{name} did not answer within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(log: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    return ""
