"""The server's OpenAPI document (``GET /openapi.json``, ``/docs``)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def openapi_document(app: FastAPI, service: object) -> dict:
    """The OpenAPI document of ``app`` serving ``service``'s models."""
    return get_openapi(title=app.title, version=app.version, routes=app.routes, summary=app.summary)
