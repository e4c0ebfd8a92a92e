"""The HTTP app's ASGI middleware, outermost first: the access log, the admission, the body limit.

Each wraps the FastAPI app (``scoring.serve.http.create_app``) and answers from below it where it
refuses: a 503 of the admission and a 413 of the body limit cost no routing and no parsing, and the
access log still counts and logs them like any answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from scoring.serve.errors import Overloaded, TooLarge
from scoring.serve.routes.common import route_of
from scoring.serve.service import ScoringService

# What the admission answers when the worker is full, in words that do not repeat the path.
_OVERLOADED = json.dumps(
    {"error": "this worker holds as many requests as it queues (--max-queue); retry after Retry-After"}
).encode()


class AccessLog:
    """ASGI middleware: the metrics and the access-log line of each request (``Metrics.observe``)."""

    def __init__(self, app, service: ScoringService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        """Time the request, then count it and log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = scope.get("state", {})
            route = route_of(scope)
            self.service.metrics.observe(
                "http",
                route,
                status["code"],
                time.perf_counter() - started,
                state.get("records"),
                state.get("model_version"),
            )


class Admission:
    """ASGI middleware: at most ``limit`` scoring requests in this worker at once; beyond, 503 at once.

    A scoring request (``POST`` to ``/predict...``, ``/invocations`` or ``/v2/models/.../infer``) is
    held from the moment it arrives until it is answered: its body read, parsed, queued for the model
    and scored. One more than ``limit`` is answered 503 with ``Retry-After`` before its body is read,
    for a few microseconds of this worker's time, so that under a burst the requests accepted keep
    their latency instead of all of them queueing without end. Other routes (health, metadata,
    metrics) are never shed: probes must see a busy server as alive.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.held = 0

    async def __call__(self, scope, receive, send) -> None:
        """Admit the request, or refuse it at once when the worker holds ``limit`` of them."""
        if scope["type"] != "http" or not _is_scoring(scope):
            await self.app(scope, receive, send)
            return
        if self.held >= self.limit:
            await _send_json(
                send, 503, _OVERLOADED, [(b"retry-after", str(Overloaded.retry_after_s).encode())]
            )
            return
        self.held += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.held -= 1


def _is_scoring(scope: Mapping) -> bool:
    """Whether a request scores records (what ``Admission`` bounds)."""
    if scope["method"] != "POST":
        return False
    path = scope["path"]
    return (
        path.startswith("/predict")
        or path == "/invocations"
        or (path.startswith("/v2/models/") and path.endswith("/infer"))
    )


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        """Refuse a declared length over the limit at once, a streamed one when it gets there."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_too_large(send, self.limit)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(f"request body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


async def _send_too_large(send, limit: int) -> None:
    await _send_json(send, 413, json.dumps({"error": f"request body over {limit} bytes"}).encode())


async def _send_json(send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer from a middleware, below the app: a JSON error body and its headers."""
    length = str(len(body)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", length), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
