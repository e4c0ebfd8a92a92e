"""The Open Inference Protocol v2 over HTTP: health, metadata and ``infer``, JSON or binary tensors.

``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{name}[/versions/{version}]``, its
``/ready`` and its ``/infer``. The codec (tensors to columns and back, for HTTP and gRPC alike) is
``scoring.serve.oip``; every error under ``/v2`` is the protocol's ``{"error": ...}``
(``scoring.serve.http``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scoring.serve import oip
from scoring.serve.errors import BadRequest, malformed_is_bad_request
from scoring.serve.routes.common import authorize, count, decode_json, json_response
from scoring.serve.service import Scored, ScoringService


def router(service: ScoringService) -> APIRouter:
    """The protocol's routes over ``service``."""
    routes = APIRouter()

    @routes.get("/v2/health/live")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @routes.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return json_response({"ready": service.ready}, 200 if service.ready else 503)

    @routes.get("/v2")
    async def v2_server() -> Response:
        return json_response(oip.server_metadata())

    @routes.get("/v2/models/{name}")
    @routes.get("/v2/models/{name}/versions/{version}")
    async def v2_model(request: Request, name: str, version: str | None = None) -> Response:
        authorize(service, request)
        oip.check_model_named(service.served, name, version)
        return json_response(oip.model_metadata(service.served))

    @routes.get("/v2/models/{name}/ready")
    @routes.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        oip.check_model_named(service.served, name, version)
        return json_response({"name": name, "ready": service.ready})

    @routes.post("/v2/models/{name}/infer")
    @routes.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer(request: Request, name: str, version: str | None = None) -> Response:
        """Named input tensors (one per feature, or one [N, F]) -> prediction and probability.

        Tensors come as JSON or in the binary tensor data extension (``Inference-Header-Content-Length``:
        the JSON header, then each binary input's raw bytes), as ``tritonclient.http`` sends them.
        """
        authorize(service, request)
        live = service.live()
        oip.check_model_named(live.served, name, version)
        with malformed_is_bad_request():
            infer = oip.infer_request_from_json(*split_binary(await request.body(), request.headers))
            oip.check_outputs(live.served, infer.output_names())
            columns, rows = oip.columns_from_tensors(infer.inputs, live.served.features)
            pending = service.submit_columns(columns, rows, live)
        scored = await pending.wait()
        outputs = oip.output_tensors(scored, infer.output_names())
        count(request, service, scored)
        return infer_answer(scored, infer, outputs)

    return routes


def split_binary(raw: bytes, headers: Mapping[str, str]) -> tuple[object, memoryview]:
    """An infer body's JSON header and what follows it (the binary tensor data extension).

    Raises:
        BadRequest: ``Inference-Header-Content-Length`` is not a length within the body.
    """
    name = oip.BINARY_HEADER.lower()  # as HTTP/2 and ASGI spell every header
    declared = headers.get(name)
    if declared is None:
        return decode_json(raw), memoryview(b"")
    if not declared.isdigit() or int(declared) > len(raw):
        raise BadRequest(f"{name}: must be the JSON header's length in bytes, within the body")
    length = int(declared)
    return decode_json(raw[:length]), memoryview(raw)[length:]


def infer_answer(scored: Scored, infer: oip.InferRequest, outputs: Sequence[oip.Tensor]) -> Response:
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
        headers={oip.BINARY_HEADER: str(len(header))},
    )
