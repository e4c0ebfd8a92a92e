"""Operations: ``GET /metrics`` (Prometheus) and ``POST /admin/reload`` (the model reference again)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scoring.errors import ScoringError, first_line
from scoring.serve import dialects
from scoring.serve.routes.common import authorize, json_response
from scoring.serve.service import ScoringService

log = logging.getLogger(__name__)


def router(service: ScoringService) -> APIRouter:
    """The operations routes over ``service``."""
    routes = APIRouter()

    @routes.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition of ``scoring.serve.metrics``."""
        content, content_type = service.metrics.render()
        return Response(content, media_type=content_type)

    @routes.post("/admin/reload")
    async def reload(request: Request) -> Response:
        """Resolve the model reference again and swap to its version; needs the API key."""
        if not service.settings.api_key:
            return json_response(
                {"error": "POST /admin/reload is off: the server has no SCORING_API_KEY"}, 403
            )
        authorize(service, request)
        try:
            outcome = await asyncio.to_thread(service.load)
        except ScoringError as e:
            log.error("reload failed, still serving %s: %s", service.served.model.version, e)
            failed = {"error": f"reload failed: {first_line(str(e))}"}
            return json_response({**failed, **dialects.model_fields(service.served)}, 500)
        if service.reload_peers is not None:
            service.reload_peers()
        return json_response({**outcome, **dialects.model_fields(service.served)})

    return routes
