"""moto's AWS server on 127.0.0.1 behind a thin WSGI middleware that can lose an answer.

``LostAnswers`` carries a request out on moto, then throws moto's answer away and answers 500, as an
AWS endpoint does when it fails after doing the work. botocore retries a 500, so the request is
carried out twice: for ``RunJobFlow``, which takes no idempotency token, that is two clusters.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class LostAnswers:
    """WSGI middleware: the next ``times`` calls of an operation are carried out, then answered 500."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()  # operation -> requests seen, retries included
        self._armed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def lose_next(self, operation: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``operation`` (``RunJobFlow``) with a 500."""
        with self._lock:
            self._armed[operation] = times

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # JSON-protocol services (EMR) name the operation in X-Amz-Target: "ElasticMapReduce.RunJobFlow".
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        with self._lock:
            self.calls[operation] += 1
            lose = self._armed[operation] > 0
            if lose:
                self._armed[operation] -= 1
        if not lose:
            return self.app(environ, start_response)
        answer = self.app(environ, lambda status, headers, exc_info=None: None)
        try:
            b"".join(answer)  # moto did the work; its answer is lost
        finally:
            getattr(answer, "close", lambda: None)()
        body = json.dumps({"__type": "InternalServerError", "message": "answer lost by the test"}).encode()
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))],
        )
        return [body]


class MotoServer:
    """moto's server app behind ``LostAnswers``, served by werkzeug on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.faults = LostAnswers(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", 0, self.faults, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> MotoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._thread.join()
