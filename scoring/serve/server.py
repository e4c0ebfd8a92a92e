"""``scoring serve``: the pinned champion (and its lineup), HTTP on uvicorn and gRPC on grpcio.

One process by default; with ``--workers N``, N such processes on the same ports under a supervisor
(``scoring.serve.workers``), each a server as below.

Signals: SIGHUP re-resolves every model reference and swaps to their versions (as ``POST /admin/reload``
does); SIGTERM and SIGINT stop taking requests, let those in flight finish, then exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from scoring.errors import ScoringError
from scoring.serve.errors import NotReady
from scoring.serve.served_model import ServeSettings
from scoring.serve.service import ScoringService
from scoring.serve.workers import Worker, supervise

if TYPE_CHECKING:
    import grpc
    import uvicorn

log = logging.getLogger(__name__)

# Seconds in-flight requests get to finish after SIGTERM.
SHUTDOWN_GRACE_S = 10.0
_UVICORN_SETTINGS = {
    "log_level": "warning",
    "access_log": False,
    "timeout_graceful_shutdown": int(SHUTDOWN_GRACE_S),
    "lifespan": "off",
}


def serve(settings: ServeSettings, host: str, port: int, grpc_port: int | None, workers: int = 1) -> int:
    """Load the model, then serve it until SIGTERM or SIGINT.

    Args:
        settings: The model and the request limits.
        host: The address both servers bind.
        port: The HTTP port (0: any free port; the log line says which).
        grpc_port: The gRPC port (0: any free port), or None for no gRPC.
        workers: Processes serving the same ports, each with its own copy of the models
            (``scoring.serve.workers``); 1: this process alone.

    Returns:
        The exit code: 0 after a graceful shutdown.

    Raises:
        ScoringError: The model cannot be resolved or loaded, or a port cannot be bound.
    """
    if workers > 1:
        return supervise(settings, host, port, grpc_port, workers, run_server, SHUTDOWN_GRACE_S)
    return run_server(settings, host, port, grpc_port)


def run_server(
    settings: ServeSettings, host: str, port: int, grpc_port: int | None, worker: Worker | None = None
) -> int:
    """Load the model, then serve it in this process until SIGTERM or SIGINT.

    Args:
        settings: The model and the request limits.
        host: The address both servers bind.
        port: The HTTP port (0: any free port; the log line says which).
        grpc_port: The gRPC port (0: any free port), or None for no gRPC.
        worker: Under ``--workers N``, this process's line to its supervisor: the ports are shared with
            the other workers (SO_REUSEPORT), ``POST /admin/reload`` reloads them too, and readiness is
            told to the supervisor, which logs the "serving" line. None: this process serves alone.

    Returns:
        The exit code: 0 after a graceful shutdown.

    Raises:
        ScoringError: The model cannot be resolved or loaded, or a port cannot be bound.
    """
    import uvicorn

    from scoring.serve.http import create_app

    service = _loaded_service(settings, worker)
    grpc_server = None
    stopping: list = []  # the gRPC server's stop event, once a stop signal came
    try:
        listener, grpc_server, where = _listen(service, host, port, grpc_port, worker)
        config = uvicorn.Config(create_app(service), **_UVICORN_SETTINGS)
        server = _graceful_server(config, service, grpc_server, stopping)
        _handle_signals(server, service)
        if settings.lineup.several:
            log.info("lineup: %s", _lineup_line(service))
        _announce(service, where, worker)
        server.run(sockets=[listener])
    finally:
        _shut_down(service, grpc_server, stopping)
    log.info("stopped")
    return 0


def _loaded_service(settings: ServeSettings, worker: Worker | None) -> ScoringService:
    """The service of ``settings``, its models loaded; a worker's is attached to its supervisor first.

    Raises:
        ScoringError: A model cannot be resolved or loaded.
    """
    service = ScoringService(settings, freeze_gc=True)
    if worker is not None:
        worker.attach(service)
    service.load()
    return service


def _listen(
    service: ScoringService, host: str, port: int, grpc_port: int | None, worker: Worker | None
) -> tuple[socket.socket, grpc.Server | None, str]:
    """Bind the HTTP port and, unless ``grpc_port`` is None, start the gRPC server.

    Args:
        service: The scoring service gRPC serves.
        host: The address both servers bind.
        port: The HTTP port (0: any free port).
        grpc_port: The gRPC port (0: any free port), or None for no gRPC.
        worker: This process's line to its supervisor (the ports are shared), or None.

    Returns:
        The HTTP listening socket, the started gRPC server (None without gRPC), and where the two
        serve, as the "serving" line says it.

    Raises:
        ScoringError: A port cannot be bound.
    """
    listener = _http_listener(host, port) if worker is None else worker.listener(host, port)
    where = f"http://{host}:{listener.getsockname()[1]}"
    if grpc_port is None:
        return listener, None, where
    from scoring.serve.grpc_api import start_grpc_server

    try:
        grpc_server, bound = start_grpc_server(service, host, grpc_port, reuse_port=worker is not None)
    except RuntimeError as e:
        raise ScoringError(str(e)) from e
    return listener, grpc_server, f"{where} and grpc {host}:{bound}"


def _graceful_server(
    config: uvicorn.Config, service: ScoringService, grpc_server: grpc.Server | None, stopping: list
) -> uvicorn.Server:
    """The uvicorn server of ``config``, whose stop signal also drains the service and stops gRPC.

    Args:
        config: The app and uvicorn's settings.
        service: The scoring service, drained at the first stop signal.
        grpc_server: The gRPC server, stopped at the first stop signal; None without gRPC.
        stopping: Empty; the first stop signal appends the gRPC server's stop event (None without
            gRPC), which ``_shut_down`` waits for.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # The moment a stop signal comes: readiness and gRPC health say NOT_SERVING, and gRPC
            # drains beside HTTP rather than after it.
            if not stopping:
                service.drain()
                stopping.append(grpc_server.stop(SHUTDOWN_GRACE_S) if grpc_server else None)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The stop handlers are ours from before the "serving" line, so a signal that comes
            # before uvicorn's loop starts still stops it. uvicorn's own would also re-raise the
            # signal after shutdown, killing the process before gRPC and the batcher are closed
            # (or, for SIGINT, with a KeyboardInterrupt) instead of exiting 0.
            yield

    return Server(config)


def _handle_signals(server: uvicorn.Server, service: ScoringService) -> None:
    """SIGHUP reloads the models; SIGTERM and SIGINT stop ``server`` gracefully."""
    _reload_on_sighup(service)
    signal.signal(signal.SIGTERM, server.handle_exit)
    signal.signal(signal.SIGINT, server.handle_exit)


def _shut_down(service: ScoringService, grpc_server: grpc.Server | None, stopping: list) -> None:
    """Wait until gRPC has stopped, then close the service.

    Args:
        service: The scoring service, closed last.
        grpc_server: The gRPC server; None without gRPC.
        stopping: The gRPC server's stop event, if a stop signal stopped it already.
    """
    if grpc_server is not None:
        # Stopped at the signal already (then this waits for it), or stopped now.
        (stopping[0] if stopping and stopping[0] else grpc_server.stop(SHUTDOWN_GRACE_S)).wait()
    service.close()


def _http_listener(host: str, port: int) -> socket.socket:
    """The HTTP listening socket of a server alone on its port.

    Raises:
        ScoringError: The port cannot be bound.
    """
    try:
        return socket.create_server((host, port))
    except OSError as e:
        raise ScoringError(f"cannot serve HTTP on {host}:{port}: {e.strerror}") from e


def _announce(service: ScoringService, where: str, worker: Worker | None) -> None:
    """Say that the server takes requests: the "serving" line, or a worker's word to its supervisor.

    The supervisor logs the "serving" line itself, once every worker is ready: a worker's own would
    tell a client (or a test, or the benchmark) that the server is up while others are still loading.
    """
    if worker is not None:
        worker.ready(service)
        return
    served = service.served
    log.info(
        "serving %s version %s (%s) on %s", served.model.name, served.model.version, served.backend, where
    )


def _lineup_line(service: ScoringService) -> str:
    """The models served and how they combine, for the start-up log."""
    roster = service.roster()
    lineup = roster.lineup
    parts = [", ".join(f"{name} {live.served.model.pinned_uri}" for name, live in roster.models.items())]
    if lineup.ensemble:
        parts.append("ensemble " + ", ".join(f"{name}={weight:g}" for name, weight in lineup.ensemble))
    if lineup.ab:
        parts.append("ab " + ", ".join(f"{name}={share:g}" for name, share in lineup.ab))
    return "; ".join(parts)


def _reload_on_sighup(service: ScoringService) -> None:
    def reload() -> None:
        try:
            outcome = service.load()
        except (ScoringError, NotReady) as e:
            log.error("reload failed, still serving version %s: %s", service.served.model.version, e)
            return
        log.info("reload: %s", outcome)

    # Loading takes seconds: not in the signal handler, which runs on the event loop's thread.
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, name="scoring-reload").start())
