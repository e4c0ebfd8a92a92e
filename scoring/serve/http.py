"""The HTTP side: FastAPI routes for the three dialects, each wired to the one scoring path.

Routes only decode the body, call a dialect's parser and ``ScoringService``, and encode the answer;
the request checks, the batching and the output convention live below them. Bodies are decoded with
``json`` rather than pydantic models, so that a validation error never echoes a request's values.

* The original API: ``GET /health``, ``GET /ready``, ``POST /predict``, ``POST /predict/batch``,
  ``GET /model/info``; the lineup's routes, each with a ``/batch`` twin: ``POST /predict/{model}``
  (``champion`` or a challenger), ``POST /predict/ensemble``, ``POST /predict/ab``, and ``GET /models``.
* MLflow's scoring protocol: ``POST /invocations`` (``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``).
* The Open Inference Protocol v2: ``/v2/health/live``, ``/v2/health/ready``, ``/v2``,
  ``/v2/models/{name}[/versions/{version}]``, ``.../ready``, ``.../infer``.
* Operations: ``GET /metrics`` and ``POST /admin/reload``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from scoring.errors import ScoringError, first_line
from scoring.serve import dialects, oip, openapi
from scoring.serve.errors import (
    BadRequest,
    Overloaded,
    RequestError,
    TooLarge,
    UnsupportedMediaType,
    malformed_is_bad_request,
)
from scoring.serve.service import Blended, Routed, Scored, ScoringService, presented_key

log = logging.getLogger(__name__)

# The Open Inference Protocol's binary tensor extension announces itself with this header.
BINARY_HEADER = "inference-header-content-length"
# The answer to an unexpected error: its message could hold request values.
INTERNAL_MESSAGE = "internal error while answering the request"
# Routing's own refusals, in words that do not repeat the path.
_OVERLOADED = json.dumps(
    {"error": "this worker holds as many requests as it queues (--max-queue); retry after Retry-After"}
).encode()
_ROUTING_ERRORS = {404: "no such route (GET /docs lists them)", 405: "method not allowed on this route"}


def create_app(service: ScoringService) -> FastAPI:
    """The ASGI app over ``service``; ``scoring.serve.server`` runs it on uvicorn."""
    app = FastAPI(title="scoring", summary="The batch job's model, online", docs_url="/docs", redoc_url=None)
    app.openapi = openapi.openapi_for(app, service)

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> Response:
        # The Open Inference Protocol's error is the message alone; other routes add the rejects.
        return _error(error, protocol_error=request.url.path.startswith("/v2"))

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException) -> Response:
        # Routing's own answers (404, 405) in the one error format of every route, /v2 included.
        message = _ROUTING_ERRORS.get(error.status_code, "the request cannot be answered")
        return _json({"error": message}, error.status_code, error.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> Response:
        # The type only: an exception's message can quote the request's values.
        log.error("%s %s failed: %s", request.method, _route(request.scope), type(error).__name__)
        return _json({"error": INTERNAL_MESSAGE}, 500)

    @app.get("/health")
    async def health() -> Response:
        """Liveness: the process answers."""
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: a model is loaded (503 until then)."""
        if not service.ready:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ready", **dialects.model_fields(service.served)})

    @app.get("/model/info")
    async def model_info(request: Request) -> Response:
        """The served model: name, pinned version, run, signature, backend, classes."""
        _authorize(service, request)
        return _json(service.served.info())

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """One record: ``{"id": ..., "features": {...}}`` -> id, prediction, probability, model."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_records([features])
        scored = await pending.wait()
        _count(request, service, scored)
        return _json(
            {**dialects.original_predictions([record_id], scored)[0], **dialects.model_fields(scored.served)}
        )

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [...], "model_name", "model_version"}``."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_records(records)
        scored = await pending.wait()
        _count(request, service, scored)
        predictions = dialects.original_predictions(ids, scored)
        return _json({"predictions": predictions, **dialects.model_fields(scored.served)})

    @app.post("/predict/ensemble")
    async def predict_ensemble(request: Request) -> Response:
        """One record -> the ensemble's ``ensemble_probability`` (or ``ensemble_prediction``), the weights."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_ensemble([features])
        blended = await pending.wait()
        _count_combined(request, service, blended)
        return _json(
            {**dialects.ensemble_predictions([record_id], blended)[0], **dialects.ensemble_fields(blended)}
        )

    @app.post("/predict/ensemble/batch")
    async def predict_ensemble_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [{"id", "ensemble_probability"}], "weights", "models"}``."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_ensemble(records)
        blended = await pending.wait()
        _count_combined(request, service, blended)
        predictions = dialects.ensemble_predictions(ids, blended)
        return _json({"predictions": predictions, **dialects.ensemble_fields(blended)})

    @app.post("/predict/ab")
    async def predict_ab(request: Request) -> Response:
        """One record with its id -> its variant, and the prediction and model of the variant's model."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            keys, id_values = dialects.variant_keys([body], [features], service.settings.id_columns, "body")
            pending = service.submit_ab([features], keys)
        routed = await pending.wait()
        _count_combined(request, service, routed)
        return _json(dialects.ab_predictions([record_id], routed, id_values)[0])

    @app.post("/predict/ab/batch")
    async def predict_ab_batch(request: Request) -> Response:
        """A list of records with their ids -> ``{"predictions": [{"id", "variant", ...}], "split"}``."""
        _authorize(service, request)
        body = await _body(request)
        with malformed_is_bad_request():
            items = dialects.batch_items(body)
            ids, records = dialects.original_batch(items)
            keys, id_values = dialects.variant_keys(items, records, service.settings.id_columns)
            pending = service.submit_ab(records, keys)
        routed = await pending.wait()
        _count_combined(request, service, routed)
        predictions = dialects.ab_predictions(ids, routed, id_values)
        return _json({"predictions": predictions, "split": dict(routed.roster.lineup.ab)})

    # After the fixed routes: /predict/batch, /predict/ensemble and /predict/ab are not models.
    @app.post("/predict/{model}")
    async def predict_model(request: Request, model: str) -> Response:
        """One record, scored by the lineup's model ``model`` (``champion`` or a challenger's name)."""
        _authorize(service, request)
        live = service.live(model)
        body = await _body(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_records([features], live)
        scored = await pending.wait()
        _count(request, service, scored)
        return _json(
            {**dialects.original_predictions([record_id], scored)[0], **dialects.model_fields(scored.served)}
        )

    @app.post("/predict/{model}/batch")
    async def predict_model_batch(request: Request, model: str) -> Response:
        """A list of records, scored by the lineup's model ``model``, as ``/predict/batch`` answers."""
        _authorize(service, request)
        live = service.live(model)
        body = await _body(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_records(records, live)
        scored = await pending.wait()
        _count(request, service, scored)
        predictions = dialects.original_predictions(ids, scored)
        return _json({"predictions": predictions, **dialects.model_fields(scored.served)})

    @app.get("/models")
    async def models(request: Request) -> Response:
        """The lineup: each model with its pinned version, the ensemble's weights and the A/B split."""
        _authorize(service, request)
        return _json(service.roster().info())

    @app.get("/models/{model}")
    async def model_of_lineup(request: Request, model: str) -> Response:
        """One model of the lineup, as ``/model/info`` gives the champion."""
        _authorize(service, request)
        return _json(service.live(model).served.info())

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, as ``mlflow models serve`` speaks it (JSON bodies)."""
        _authorize(service, request)
        if "json" not in request.headers.get("content-type", "application/json"):
            raise UnsupportedMediaType("content type: /invocations here takes application/json")
        live = service.live()
        body = await _body(request)
        with malformed_is_bad_request():
            records, columns, rows = dialects.mlflow_request(body, live.served.features)
            if records is not None:
                pending = service.submit_records(records, live)
            else:
                pending = service.submit_columns(columns, rows, live)
        scored = await pending.wait()
        _count(request, service, scored)
        return _json(dialects.mlflow_response(scored))

    @app.get("/ping")
    async def ping() -> Response:
        """MLflow's health route: 200 once the model is loaded."""
        return Response("\n", status_code=200 if service.ready else 503, media_type="text/plain")

    @app.get("/version")
    async def version() -> Response:
        """MLflow's version route: this server's version."""
        return Response(oip.server_metadata()["version"], media_type="text/plain")

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return _json({"ready": service.ready}, 200 if service.ready else 503)

    @app.get("/v2")
    async def v2_server() -> Response:
        return _json(oip.server_metadata())

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model(request: Request, name: str, version: str | None = None) -> Response:
        _authorize(service, request)
        oip.check_model(service.served, name, version)
        return _json(oip.model_metadata(service.served))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        oip.check_model(service.served, name, version)
        return _json({"name": name, "ready": service.ready})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(request: Request, name: str, version: str | None = None) -> Response:
        """Named input tensors (one per feature, or one [N, F]) -> prediction and probability.

        Tensors come as JSON or in the binary tensor data extension (``Inference-Header-Content-Length``:
        the JSON header, then each binary input's raw bytes), as ``tritonclient.http`` sends them.
        """
        _authorize(service, request)
        live = service.live()
        oip.check_model(live.served, name, version)
        with malformed_is_bad_request():
            infer = oip.infer_request_from_json(*_split_binary(await request.body(), request.headers))
            oip.check_outputs(live.served, infer.output_names())
            columns, rows = oip.columns_from_tensors(infer.inputs, live.served.features)
            pending = service.submit_columns(columns, rows, live)
        scored = await pending.wait()
        outputs = oip.output_tensors(scored, infer.output_names())
        _count(request, service, scored)
        return _infer_answer(scored, infer, outputs)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition of ``scoring.serve.metrics``."""
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        """Resolve the model reference again and swap to its version; needs the API key."""
        if not service.settings.api_key:
            return _json({"error": "POST /admin/reload is off: the server has no SCORING_API_KEY"}, 403)
        _authorize(service, request)
        try:
            outcome = await asyncio.to_thread(service.load)
        except ScoringError as e:
            log.error("reload failed, still serving %s: %s", service.served.model.version, e)
            failed = {"error": f"reload failed: {first_line(str(e))}"}
            return _json({**failed, **dialects.model_fields(service.served)}, 500)
        if service.reload_peers is not None:
            service.reload_peers()
        return _json({**outcome, **dialects.model_fields(service.served)})

    # The access log outermost: a 503 of the admission and a 413 of the body limit are counted and
    # logged like any answer. The admission before the body is read: shedding costs no parsing.
    limited = BodyLimit(app, service.settings.max_body_bytes)
    return AccessLog(Admission(limited, service.settings.max_queue), service)


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
            route = _route(scope)
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


async def _body(request: Request) -> object:
    return _decode(await request.body())


def _decode(raw: bytes) -> object:
    """A request's JSON, or ``BadRequest`` saying why it is not JSON this server reads."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(f"body is not JSON ({e.msg})") from e
    except UnicodeDecodeError as e:
        raise BadRequest("body is not JSON (bad UTF-8)") from e
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits, nesting too deep
        raise BadRequest(
            "body is JSON this server does not read (a number too long or nesting too deep)"
        ) from e


def _split_binary(raw: bytes, headers: Mapping[str, str]) -> tuple[object, memoryview]:
    """An infer body's JSON header and what follows it (the binary tensor data extension).

    Raises:
        BadRequest: ``Inference-Header-Content-Length`` is not a length within the body.
    """
    declared = headers.get(BINARY_HEADER)
    if declared is None:
        return _decode(raw), memoryview(b"")
    if not declared.isdigit() or int(declared) > len(raw):
        raise BadRequest(f"{BINARY_HEADER}: must be the JSON header's length in bytes, within the body")
    length = int(declared)
    return _decode(raw[:length]), memoryview(raw)[length:]


def _infer_answer(scored: Scored, infer: oip.InferRequest, outputs: Sequence[oip.Tensor]) -> Response:
    """The infer answer: JSON, or a JSON header and the binary outputs' raw bytes after it."""
    answer: dict = {"model_name": scored.served.model.name, "model_version": scored.served.model.version}
    if infer.id is not None:
        answer["id"] = infer.id
    encoded = [oip.tensor_to_json(tensor, infer.binary(tensor.name)) for tensor in outputs]
    header = json.dumps({**answer, "outputs": [e[0] for e in encoded]}, separators=(",", ":")).encode()
    raw = b"".join(e[1] for e in encoded)
    if not raw:
        return Response(header, media_type="application/json")
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={BINARY_HEADER: str(len(header))},
    )


def _error(error: RequestError, protocol_error: bool = False) -> Response:
    """A refused request's answer: its status, its body, and ``Retry-After`` when the worker was full.

    ``protocol_error``: the Open Inference Protocol's body, ``{"error"}`` alone.
    """
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    body = {"error": error.message} if protocol_error else error.to_json()
    return _json(body, error.http_status, headers)


def _route(scope: Mapping) -> str:
    """The route template a request matched (``/v2/models/{name}/infer``), never its path's values."""
    return getattr(scope.get("route"), "path", "unmatched")


def _authorize(service: ScoringService, request: Request) -> None:
    service.authorize(presented_key(request.headers))


def _count(request: Request, service: ScoringService, scored: Scored) -> None:
    request.state.records = scored.rows
    request.state.model_version = scored.served.model.version
    service.metrics.records.labels("http").inc(scored.rows)


def _count_combined(request: Request, service: ScoringService, combined: Blended | Routed) -> None:
    """``_count`` for an answer of several models: the access log names each one's version."""
    names = combined.members if isinstance(combined, Blended) else dict.fromkeys(combined.variants.tolist())
    request.state.records = combined.rows
    request.state.model_version = combined.roster.versions(list(names))
    service.metrics.records.labels("http").inc(combined.rows)


def _json(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # json.dumps once, with no pydantic encoding pass: the answer is plain JSON values already.
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
