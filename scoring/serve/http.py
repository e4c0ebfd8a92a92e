"""The HTTP side: the FastAPI app of the four routers, its error answers and its middleware.

One router per dialect over the one ``ScoringService`` (``scoring.serve.routes``): the original API,
MLflow's scoring protocol, the Open Inference Protocol v2 and operations. ``create_app`` only wires
them: the errors every route may raise get one answer each here, in its dialect's format (under
``/v2`` the protocol's ``{"error": ...}``, unknown routes included), and the middleware
(``scoring.serve.middleware``) counts, sheds and limits around the app.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from scoring.serve import openapi
from scoring.serve.errors import RequestError
from scoring.serve.middleware import AccessLog, Admission, BodyLimit
from scoring.serve.routes import mlflow_protocol, open_inference, operations, original
from scoring.serve.routes.common import error_response, json_response, route_of
from scoring.serve.service import ScoringService

log = logging.getLogger(__name__)

# The answer to an unexpected error: its message could hold request values.
INTERNAL_MESSAGE = "internal error while answering the request"
# Routing's own refusals, in words that do not repeat the path.
_ROUTING_ERRORS = {404: "no such route (GET /docs lists them)", 405: "method not allowed on this route"}


def create_app(service: ScoringService) -> AccessLog:
    """The ASGI app over ``service``, in its middleware; ``scoring.serve.server`` runs it on uvicorn."""
    app = FastAPI(title="scoring", summary="The batch job's model, online", docs_url="/docs", redoc_url=None)
    app.openapi = openapi.openapi_for(app, service)
    add_error_answers(app)
    for dialect in (original, mlflow_protocol, open_inference, operations):
        app.include_router(dialect.router(service))
    # The access log outermost: a 503 of the admission and a 413 of the body limit are counted and
    # logged like any answer. The admission before the body is read: shedding costs no parsing.
    limited = BodyLimit(app, service.settings.max_body_bytes)
    return AccessLog(Admission(limited, service.settings.max_queue), service)


def add_error_answers(app: FastAPI) -> None:
    """One answer for each kind of error a route raises, never with the request's values."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> Response:
        # The Open Inference Protocol's error is the message alone; other routes add the rejects.
        return error_response(error, protocol_error=request.url.path.startswith("/v2"))

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException) -> Response:
        # Routing's own answers (404, 405) in the one error format of every route, /v2 included.
        message = _ROUTING_ERRORS.get(error.status_code, "the request cannot be answered")
        return json_response({"error": message}, error.status_code, error.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> Response:
        # The type only: an exception's message can quote the request's values.
        log.error("%s %s failed: %s", request.method, route_of(request.scope), type(error).__name__)
        return json_response({"error": INTERNAL_MESSAGE}, 500)
