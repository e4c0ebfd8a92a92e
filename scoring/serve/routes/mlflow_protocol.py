"""MLflow's scoring protocol, as ``mlflow models serve`` speaks it.

``POST /invocations`` (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``), ``GET /ping``
and ``GET /version``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scoring.serve import dialects, oip
from scoring.serve.errors import UnsupportedMediaType, malformed_is_bad_request
from scoring.serve.routes.common import authorize, count, json_response, read_json
from scoring.serve.service import ScoringService


def router(service: ScoringService) -> APIRouter:
    """MLflow's routes over ``service``."""
    routes = APIRouter()

    @routes.post("/invocations")
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, as ``mlflow models serve`` speaks it (JSON bodies)."""
        authorize(service, request)
        if "json" not in request.headers.get("content-type", "application/json"):
            raise UnsupportedMediaType("content type: /invocations here takes application/json")
        live = service.live()
        body = await read_json(request)
        with malformed_is_bad_request():
            records, columns, rows = dialects.mlflow_request(body, live.served.features)
            if records is not None:
                pending = service.submit_records(records, live)
            else:
                pending = service.submit_columns(columns, rows, live)
        scored = await pending.wait()
        count(request, service, scored)
        return json_response(dialects.mlflow_response(scored))

    @routes.get("/ping")
    async def ping() -> Response:
        """MLflow's health route: 200 once the model is loaded."""
        return Response("\n", status_code=200 if service.ready else 503, media_type="text/plain")

    @routes.get("/version")
    async def version() -> Response:
        """MLflow's version route: this server's version."""
        return Response(oip.server_metadata()["version"], media_type="text/plain")

    return routes
