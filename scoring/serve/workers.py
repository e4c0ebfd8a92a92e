"""``scoring serve --workers N``: a supervisor process and N worker processes sharing the same ports.

Each worker is a whole single-process server (``scoring.serve.server.run_server``) with its own copy of
the models, started with ``spawn`` so that it inherits nothing of the supervisor but its arguments. All
of them bind the same HTTP and gRPC ports with SO_REUSEPORT, and the kernel spreads the connections over
their listening sockets. The supervisor serves no request: it

* picks the ports first (port 0 included) and holds them, bound but never listening, so that the port
  stays ours while a worker restarts and no connection is ever queued on a socket nobody accepts from;
* logs a line per worker that is ready, then the one ``serving ...`` line once every worker is;
* restarts a worker that dies, at once after a good run and with a growing delay while it keeps dying,
  and fails as a whole (the worker's one-line error, exit 1) if a worker cannot start the first time;
* forwards SIGTERM and SIGINT to every worker, which drain as a single server does, and kills a worker
  still running after the grace period; forwards SIGHUP (reload) to every worker, and reloads the other
  workers when one of them was reloaded by ``POST /admin/reload``;
* gives the workers one prometheus-client multiprocess directory, so that ``/metrics`` adds them up.

This module does not import ``scoring.serve.server`` (which imports this one): ``serve`` hands the
function that runs one server to ``supervise``, and it reaches the workers by reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from prometheus_client import multiprocess

from scoring.errors import ScoringError
from scoring.serve.metrics import MULTIPROC_DIR_VARIABLE
from scoring.serve.served_model import ServeSettings

if TYPE_CHECKING:
    from scoring.serve.service import ScoringService

log = logging.getLogger(__name__)

# Seconds before the restart of a worker that died, by how many times in a row it died without a good
# run: at once the first time (a crash, an OOM kill), then slower, so that a worker that cannot start
# (the registry is down) is retried without spinning.
RESTART_DELAYS_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
# A worker ready for this long had a good run: its next death is restarted at once again.
GOOD_RUN_S = 30.0
# Extra seconds a stopping worker gets beyond the servers' own grace: gRPC and the batchers close after.
STOP_MARGIN_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Ready:
    """A worker's message: its models are loaded and it is taking connections."""

    pid: int
    name: str
    version: str
    backend: str


@dataclass(frozen=True)
class Failed:
    """A worker's message: it cannot start (its error, as the command line prints it), and its exit code."""

    message: str
    exit_code: int


@dataclass(frozen=True)
class ReloadPeers:
    """A worker's message: ``POST /admin/reload`` reloaded it; the other workers should reload too."""


# Runs one server, in this process or in a worker: ``scoring.serve.server.run_server``.
RunServer = Callable[[ServeSettings, str, int, int | None, "Worker | None"], int]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (pickled to it by ``spawn``).

    Attributes:
        run: Runs one server (``scoring.serve.server.run_server``), reached by reference.
        settings: The models and the request limits.
        host: The address to bind.
        http_port: The HTTP port, never 0: the supervisor picked it.
        grpc_port: The gRPC port (never 0), or None for no gRPC.
        index: The worker's number, 1 to N, kept across its restarts.
        log_level: The level of the ``scoring`` loggers in the supervisor.
    """

    run: RunServer
    settings: ServeSettings
    host: str
    http_port: int
    grpc_port: int | None
    index: int
    log_level: int


class Worker:
    """A worker process's side of the line to its supervisor.

    Args:
        index: The worker's number, 1 to N.
        channel: Its end of the pipe to the supervisor.
    """

    def __init__(self, index: int, channel: Connection) -> None:
        self.index = index
        self._channel = channel
        # Sent from the main thread (ready) and from the event loop's (reload_peers).
        self._send_lock = threading.Lock()

    def listener(self, host: str, port: int) -> socket.socket:
        """The HTTP listening socket, shared with the other workers (SO_REUSEPORT).

        Raises:
            ScoringError: The port cannot be bound.
        """
        try:
            return socket.create_server((host, port), reuse_port=True)
        except OSError as e:
            raise ScoringError(f"cannot serve HTTP on {host}:{port}: {e.strerror}") from e

    def attach(self, service: ScoringService) -> None:
        """Have ``POST /admin/reload`` on this worker reload the other workers too."""
        service.reload_peers = self.reload_peers

    def ready(self, service: ScoringService) -> None:
        """Tell the supervisor that this worker serves, and which model."""
        served = service.served
        self._send(Ready(os.getpid(), served.model.name, served.model.version, served.backend))

    def failed(self, error: ScoringError) -> None:
        """Tell the supervisor why this worker cannot start."""
        self._send(Failed(str(error), error.exit_code))

    def reload_peers(self) -> None:
        """Ask the supervisor to reload the other workers (SIGHUP)."""
        self._send(ReloadPeers())

    def stop_with_supervisor(self) -> None:
        """Stop this worker gracefully (SIGTERM to itself) when the supervisor is gone, even by SIGKILL."""
        threading.Thread(
            target=self._wait_for_supervisor_exit, name="scoring-supervisor", daemon=True
        ).start()

    def _wait_for_supervisor_exit(self) -> None:
        # The supervisor sends nothing on the pipe: recv() returns only at its end, when the supervisor's
        # end is closed, which the kernel does when the supervisor exits however it exits.
        with contextlib.suppress(EOFError, OSError):
            while True:
                self._channel.recv()
        log.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    def _send(self, message: Ready | Failed | ReloadPeers) -> None:
        with self._send_lock:
            self._channel.send(message)


def run_worker(spec: WorkerSpec, channel: Connection) -> None:
    """A worker process's main: one server on the shared ports until the supervisor stops it.

    Exits 0 after a graceful stop; with the error's exit code, after telling the supervisor, when the
    models cannot be loaded or a port bound.
    """
    # A process group of its own: a Ctrl-C at the terminal reaches the supervisor alone, which forwards
    # it once (a second SIGINT, forwarded too, stops the workers without waiting, as a single server).
    os.setpgid(0, 0)
    _configure_worker_logging(spec.index, spec.log_level)
    worker = Worker(spec.index, channel)
    worker.stop_with_supervisor()
    try:
        code = spec.run(spec.settings, spec.host, spec.http_port, spec.grpc_port, worker)
    except ScoringError as e:
        worker.failed(e)
        sys.exit(e.exit_code)
    sys.exit(code)


def _configure_worker_logging(index: int, level: int) -> None:
    """The supervisor's log format (the command line's), each line naming its worker."""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)s %(name)s [worker {index} pid %(process)d]: %(message)s",
    )
    logging.getLogger("scoring").setLevel(level)


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a worker that died ``failures`` times in a row before."""
    return RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]


def describe_exit(code: int | None) -> str:
    """How a process ended, from ``BaseProcess.exitcode`` (negative: the signal that killed it)."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


@dataclass
class Slot:
    """One of the N workers: the process in it now, and how its restarts went.

    Attributes:
        index: The worker's number, 1 to N.
        process: The process, or None while a restart is due.
        channel: The supervisor's end of the pipe to it.
        ready_since: When it said ready (``time.monotonic``), None while it starts.
        failures: How many times in a row it died without a good run.
        restart_at: When it is due to start again, after it died.
        reload_due: A reload came while it was starting: SIGHUP it once it is ready, since it may have
            resolved the model references before they moved.
    """

    index: int
    process: BaseProcess | None = None
    channel: Connection | None = None
    ready_since: float | None = None
    failures: int = 0
    restart_at: float | None = None
    reload_due: bool = False

    @property
    def pid(self) -> int | None:
        """The process id of the worker in it now."""
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        """Whether its process runs (it may still be starting)."""
        return self.process is not None and self.process.exitcode is None


def supervise(
    settings: ServeSettings,
    host: str,
    port: int,
    grpc_port: int | None,
    workers: int,
    run: RunServer,
    grace_s: float,
) -> int:
    """Serve with ``workers`` processes on the same ports until SIGTERM or SIGINT.

    Args:
        settings: The models and the request limits.
        host: The address every worker binds.
        port: The HTTP port (0: any free port; the log line says which).
        grpc_port: The gRPC port (0: any free port), or None for no gRPC.
        workers: How many worker processes.
        run: Runs one server in a worker (``scoring.serve.server.run_server``).
        grace_s: How long a worker's in-flight requests get to finish after SIGTERM.

    Returns:
        The exit code: 0 after a graceful shutdown.

    Raises:
        ScoringError: A port cannot be bound, or a worker cannot start the first time (its error), or
            the platform cannot share a port between processes.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ScoringError("--workers needs SO_REUSEPORT (Linux), which this platform lacks: use --workers 1")
    with contextlib.ExitStack() as stack:
        http = stack.enter_context(_reserved_port(host, port, "HTTP"))
        grpc = stack.enter_context(_reserved_port(host, grpc_port, "gRPC")) if grpc_port is not None else None
        stack.enter_context(_metrics_directory())
        wakeup = stack.enter_context(_signals_to_socket((*STOP_SIGNALS, signal.SIGHUP)))
        spec = WorkerSpec(
            run=run,
            settings=settings,
            host=host,
            http_port=http.getsockname()[1],
            grpc_port=None if grpc is None else grpc.getsockname()[1],
            index=0,
            log_level=logging.getLogger("scoring").getEffectiveLevel(),
        )
        return Supervisor(spec, workers, wakeup, grace_s + STOP_MARGIN_S).run()


@contextlib.contextmanager
def _reserved_port(host: str, port: int, protocol: str) -> Iterator[socket.socket]:
    """A socket bound to ``host:port`` with SO_REUSEPORT and never listening, held while we serve.

    Bound, it makes port 0 a real port the workers can share, and keeps the port ours while a worker
    restarts; not listening, it takes no connection (the kernel hands them to listening sockets only).

    Raises:
        ScoringError: Another server listens on the port, or it cannot be bound.
    """
    port = _port_nobody_serves(host, port, protocol)
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # The options socket.create_server(reuse_port=True) sets in the workers, so that they bind too.
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
    except OSError as e:
        reserved.close()
        raise ScoringError(f"cannot serve {protocol} on {host}:{port}: {e.strerror}") from e
    with reserved:
        yield reserved


def _port_nobody_serves(host: str, port: int, protocol: str) -> int:
    """``port``, or a free port for 0, once checked as a server alone would bind it.

    SO_REUSEPORT would also let the workers share the port with another server that sets it (another
    ``scoring serve --workers`` of this user), splitting the connections between two servers: a port
    already served must be an error here too, as it is for a single server.

    Raises:
        ScoringError: Another server listens on the port, or it cannot be bound.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As socket.create_server does: a port left in TIME_WAIT by a server stopped just now is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ScoringError(f"cannot serve {protocol} on {host}:{port}: {e.strerror}") from e
        return probe.getsockname()[1]


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh prometheus-client multiprocess directory in the environment the workers inherit."""
    path = tempfile.mkdtemp(prefix="scoring-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_VARIABLE)
    os.environ[MULTIPROC_DIR_VARIABLE] = path
    try:
        yield path
    finally:
        if previous is None:
            del os.environ[MULTIPROC_DIR_VARIABLE]
        else:
            os.environ[MULTIPROC_DIR_VARIABLE] = previous
        shutil.rmtree(path)


@contextlib.contextmanager
def _signals_to_socket(signals: tuple[signal.Signals, ...]) -> Iterator[socket.socket]:
    """A socket that receives the number of each of ``signals`` as it comes (``signal.set_wakeup_fd``).

    The supervisor's loop waits on it beside the workers, and handles a signal there rather than in a
    handler that could interrupt it anywhere.
    """
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    sender.setblocking(False)
    previous = {sig: signal.signal(sig, _noted) for sig in signals}
    previous_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    try:
        yield receiver
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        receiver.close()
        sender.close()


def _noted(signum: int, frame: object) -> None:
    """A signal's handler: nothing to do here, its number is in the wake-up socket already."""


class Supervisor:
    """Starts the workers, restarts those that die, forwards signals, stops them all.

    Args:
        spec: What each worker is started with (its ``index`` set per worker).
        workers: How many workers.
        wakeup: Receives the signals' numbers (``_signals_to_socket``).
        stop_wait_s: How long the workers get to stop before they are killed.
    """

    def __init__(self, spec: WorkerSpec, workers: int, wakeup: socket.socket, stop_wait_s: float) -> None:
        self._spec = spec
        self._slots = [Slot(index) for index in range(1, workers + 1)]
        self._wakeup = wakeup
        self._stop_wait_s = stop_wait_s
        self._context = multiprocessing.get_context("spawn")
        self._serving = False  # every worker was ready once: from then on a dead worker is restarted

    def run(self) -> int:
        """Start the workers and supervise them until a stop signal, then stop them.

        Returns:
            0 after the workers stopped.

        Raises:
            ScoringError: A worker cannot start the first time; the others are stopped first.
        """
        try:
            for slot in self._slots:
                self._start(slot)
            stop = None
            while stop is None:
                stop = self._handle_next_events()
        except BaseException as e:
            self._stop_workers(
                signal.SIGTERM, "a worker cannot start" if isinstance(e, ScoringError) else "error"
            )
            raise
        self._stop_workers(stop, stop.name)
        log.info("stopped")
        return 0

    def _handle_next_events(self) -> signal.Signals | None:
        """Wait for messages, exits, signals or a restart that is due, and handle them.

        Returns:
            The stop signal, once one came.
        """
        channels = {slot.channel: slot for slot in self._slots if slot.channel is not None}
        # Every process not yet handled, running or not: one that exited since the last call is among them.
        sentinels = {slot.process.sentinel: slot for slot in self._slots if slot.process is not None}
        woken = wait([self._wakeup, *channels, *sentinels], timeout=self._next_restart_in())
        for channel in (c for c in woken if c in channels):
            self._receive(channels[channel])
        for sentinel in (s for s in woken if s in sentinels):
            self._on_exit(sentinels[sentinel])
        if self._wakeup in woken:
            for sig in self._signals():
                if sig in STOP_SIGNALS:
                    return sig
                log.info("SIGHUP: reloading every worker")
                self._reload_workers()
        self._restart_due_workers()
        return None

    def _start(self, slot: Slot) -> None:
        """Start the worker of ``slot`` in a fresh ``spawn`` process."""
        ours, theirs = self._context.Pipe()
        spec = dataclasses.replace(self._spec, index=slot.index)
        process = self._context.Process(
            target=run_worker, args=(spec, theirs), name=f"scoring-worker-{slot.index}"
        )
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its exit closes the pipe for us
        slot.process, slot.channel, slot.ready_since, slot.restart_at = process, ours, None, None
        log.info("worker %d pid %d starting", slot.index, process.pid)

    def _receive(self, slot: Slot) -> None:
        """Handle the messages the worker of ``slot`` sent; at the pipe's end, forget the pipe."""
        try:
            while slot.channel.poll():
                self._on_message(slot, slot.channel.recv())
        except (EOFError, OSError):
            slot.channel.close()
            slot.channel = None

    def _on_message(self, slot: Slot, message: Ready | Failed | ReloadPeers) -> None:
        """Handle one message of the worker of ``slot``.

        Raises:
            ScoringError: The worker cannot start, and this is the first start (its error).
        """
        if isinstance(message, Ready):
            self._on_ready(slot, message)
        elif isinstance(message, Failed):
            if not self._serving:
                error = ScoringError(message.message)
                error.exit_code = message.exit_code
                raise error
            log.error("worker %d pid %d cannot start: %s", slot.index, slot.pid, message.message)
        elif isinstance(message, ReloadPeers):
            log.info("worker %d was reloaded: reloading the other workers", slot.index)
            self._reload_workers(but=slot)

    def _on_ready(self, slot: Slot, ready: Ready) -> None:
        """Log the worker ready and reload it if a reload came while it started; once all are, "serving"."""
        slot.ready_since = time.monotonic()
        log.info(
            "worker %d pid %d ready: %s version %s (%s)",
            slot.index, ready.pid, ready.name, ready.version, ready.backend,
        )  # fmt: skip
        if slot.reload_due:
            slot.reload_due = False
            os.kill(ready.pid, signal.SIGHUP)
        if not self._serving and all(s.ready_since is not None for s in self._slots):
            self._serving = True
            spec = self._spec
            where = f"http://{spec.host}:{spec.http_port}"
            if spec.grpc_port is not None:
                where += f" and grpc {spec.host}:{spec.grpc_port}"
            log.info(
                "serving %s version %s (%s) on %s with %d workers",
                ready.name, ready.version, ready.backend, where, len(self._slots),
            )  # fmt: skip

    def _on_exit(self, slot: Slot) -> None:
        """The worker of ``slot`` exited: fail the start, or schedule its restart."""
        if slot.channel is not None:
            self._receive(slot)  # its last words (a Failed) first
        process = slot.process
        process.join()
        multiprocess.mark_process_dead(process.pid)
        if not self._serving and slot.ready_since is None:
            raise ScoringError(f"worker {slot.index} {describe_exit(process.exitcode)} before it was ready")
        now = time.monotonic()
        if slot.ready_since is not None and now - slot.ready_since >= GOOD_RUN_S:
            slot.failures = 0
        delay = restart_delay(slot.failures)
        slot.failures += 1
        slot.process, slot.ready_since, slot.restart_at = None, None, now + delay
        log.warning(
            "worker %d pid %d %s; restarting it%s",
            slot.index, process.pid, describe_exit(process.exitcode), f" in {delay:g} s" if delay else "",
        )  # fmt: skip

    def _next_restart_in(self) -> float | None:
        """Seconds until the next restart is due, or None when none is."""
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _restart_due_workers(self) -> None:
        """Start again every worker whose restart delay has passed."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _reload_workers(self, but: Slot | None = None) -> None:
        """SIGHUP every ready worker (but one); one still starting gets it once it is ready."""
        for slot in self._slots:
            if slot is but or not slot.alive:
                continue
            if slot.ready_since is None:
                slot.reload_due = True
            else:
                os.kill(slot.pid, signal.SIGHUP)

    def _signals(self) -> list[signal.Signals]:
        """The signals that came since the last call, in order."""
        numbers = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := self._wakeup.recv(64):
                numbers += chunk
        return [signal.Signals(number) for number in numbers]

    def _drain(self, running: list[Slot]) -> list[Slot]:
        """Wait until the stopping workers exit, forwarding further stop signals; those still running."""
        deadline = time.monotonic() + self._stop_wait_s
        while running and time.monotonic() < deadline:
            woken = wait([self._wakeup, *(s.process.sentinel for s in running)], deadline - time.monotonic())
            if self._wakeup in woken:
                for again in (s for s in self._signals() if s in STOP_SIGNALS):
                    for slot in running:
                        os.kill(slot.pid, again)
            running = [slot for slot in running if slot.alive]
        return running

    def _stop_workers(self, sig: signal.Signals, reason: str) -> None:
        """Forward ``sig`` to every worker, wait for them to drain, kill those that outlast the wait.

        Another SIGTERM or SIGINT meanwhile is forwarded too: a second SIGINT stops a server at once.

        Args:
            sig: The signal the workers get.
            reason: Why they stop, for the log.
        """
        running = [slot for slot in self._slots if slot.alive]
        if running:
            log.info("%s: stopping %d worker%s", reason, len(running), "s" if len(running) > 1 else "")
        for slot in running:
            os.kill(slot.pid, sig)
        for slot in self._drain(running):
            log.warning(
                "worker %d pid %d did not stop within %g s: killed", slot.index, slot.pid, self._stop_wait_s
            )
            slot.process.kill()
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join()
                slot.process.close()
            if slot.channel is not None:
                slot.channel.close()
            slot.process, slot.channel = None, None
