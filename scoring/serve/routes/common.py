"""What every router does the same way: read a JSON body, check the API key, count, answer JSON.

Bodies are decoded with ``json`` rather than pydantic models, so that a validation error never echoes
a request's values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import Response

from scoring.serve.errors import BadRequest, Overloaded, RequestError
from scoring.serve.service import Blended, Routed, Scored, ScoringService, presented_key


async def read_json(request: Request) -> object:
    """The request's body, decoded (``decode_json``)."""
    return decode_json(await request.body())


def decode_json(raw: bytes) -> object:
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


def json_response(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``payload`` as JSON."""
    # json.dumps once, with no pydantic encoding pass: the answer is plain JSON values already.
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(error: RequestError, protocol_error: bool = False) -> Response:
    """A refused request's answer: its status, its body, and ``Retry-After`` when the worker was full.

    ``protocol_error``: the Open Inference Protocol's body, ``{"error"}`` alone.
    """
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    body = {"error": error.message} if protocol_error else error.to_json()
    return json_response(body, error.http_status, headers)


def route_of(scope: Mapping) -> str:
    """The route template a request matched (``/v2/models/{name}/infer``), never its path's values."""
    return getattr(scope.get("route"), "path", "unmatched")


def authorize(service: ScoringService, request: Request) -> None:
    """Refuse the request (401) unless it presents the API key, where the server has one."""
    service.authorize(presented_key(request.headers))


def count(request: Request, service: ScoringService, scored: Scored) -> None:
    """The records a request scored and the version that scored them: the metrics and the access log."""
    request.state.records = scored.rows
    request.state.model_version = scored.served.model.version
    service.metrics.records.labels("http").inc(scored.rows)


def count_combined(request: Request, service: ScoringService, combined: Blended | Routed) -> None:
    """``count`` for an answer of several models: the access log names each one's version."""
    names = combined.members if isinstance(combined, Blended) else dict.fromkeys(combined.variants.tolist())
    request.state.records = combined.rows
    request.state.model_version = combined.roster.versions(list(names))
    service.metrics.records.labels("http").inc(combined.rows)
