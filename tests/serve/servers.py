"""Real servers for the serve tests: ``scoring serve`` in a subprocess, on free ports of 127.0.0.1.

A module, not a conftest: ``tests/conftest.py`` is imported as ``conftest`` by the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Load and pin the model, start both servers: seconds, but the first MLflow import is slow here.
START_TIMEOUT_S = 120
_READY = re.compile(
    r"serving (\S+) version (\S+) \((\w+)\) on http://([\d.]+):(\d+)(?: and grpc ([\d.]+:\d+))?"
)
# The supervisor's line for each worker of `--workers N` that is ready (again, after a restart).
_WORKER_READY = re.compile(r"worker (\d+) pid (\d+) ready")
# How often wait_for looks at the lines again.
POLL_S = 0.05


@dataclass
class Server:
    """A running ``scoring serve`` process and where it listens."""

    process: subprocess.Popen
    http: str
    grpc: str | None
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "\n".join(self.lines)

    def worker_pids(self) -> dict[int, int]:
        """Each worker's pid under ``--workers N``, by number, as the latest "worker K pid P ready" says."""
        pids = {}
        for line in list(self.lines):
            if match := _WORKER_READY.search(line):
                pids[int(match[1])] = int(match[2])
        return pids

    def wait_for(self, pattern: str, start: int = 0, timeout: float = START_TIMEOUT_S) -> re.Match:
        """The first match of ``pattern`` in the lines from line ``start`` on, waiting as lines come.

        Raises:
            AssertionError: None came within ``timeout`` seconds (the log is in the message).
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for line in self.lines[seen:]:
                if match := compiled.search(line):
                    return match
                seen += 1
            assert time.monotonic() < deadline, f"no line matching {pattern!r}:\n{self.log()}"
            time.sleep(POLL_S)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """``sig``, then the exit code once it has shut down, with all it wrote in ``lines``."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=10)
        return code


def start_server(model_uri: str, *flags: str, env: dict[str, str] | None = None) -> Server:
    """Start ``scoring serve`` on ports 0 and wait for its "serving ..." line."""
    command = [str(Path(sys.executable).with_name("scoring")), "serve", "--model-uri", model_uri,
               "--port", "0", "--grpc-port", "0", *flags]  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    found: dict = {}

    def read() -> None:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            match = _READY.search(line)
            if match and not ready.is_set():
                found["match"] = match
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(START_TIMEOUT_S) or "match" not in found:
        process.kill()
        raise AssertionError("scoring serve did not start:\n" + "\n".join(lines))
    match = found["match"]
    return Server(process, f"http://{match[4]}:{match[5]}", match[6], lines, reader)


@contextlib.contextmanager
def server_pool(env: dict[str, str] | None = None) -> Iterator[Callable[..., Server]]:
    """``start(model_uri, *flags, env=None)`` for a test module; its servers are stopped at the end.

    Args:
        env: Environment every server of the pool gets (a call's own ``env`` adds to it).
    """
    started: list[Server] = []

    shared = env

    def start(model_uri: str, *flags: str, env: dict[str, str] | None = None) -> Server:
        server = start_server(model_uri, *flags, env={**(shared or {}), **(env or {})})
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
