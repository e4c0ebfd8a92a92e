"""The project's own API: health, the champion's and the lineup's predictions, the models' metadata.

``GET /health``, ``GET /ready``, ``GET /model/info``, ``POST /predict`` and ``/predict/batch``; the
lineup's routes, each with a ``/batch`` twin: ``POST /predict/{model}`` (``champion`` or a
challenger), ``POST /predict/ensemble``, ``POST /predict/ab``; ``GET /models`` and ``/models/{model}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scoring.serve import dialects
from scoring.serve.errors import malformed_is_bad_request
from scoring.serve.routes.common import authorize, count, count_combined, json_response, read_json
from scoring.serve.service import ScoringService


def router(service: ScoringService) -> APIRouter:
    """The original API's routes over ``service``."""
    routes = APIRouter()
    _health_routes(routes, service)
    _champion_routes(routes, service)
    _lineup_routes(routes, service)
    # After the fixed routes: /predict/batch, /predict/ensemble and /predict/ab are not models.
    _model_routes(routes, service)
    return routes


def _health_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.get("/health")
    async def health() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @routes.get("/ready")
    async def ready() -> Response:
        """Readiness: a model is loaded (503 until then)."""
        if not service.ready:
            return json_response({"status": "loading"}, 503)
        return json_response({"status": "ready", **dialects.model_fields(service.served)})


def _champion_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.get("/model/info")
    async def model_info(request: Request) -> Response:
        """The served model: name, pinned version, run, signature, backend, classes."""
        authorize(service, request)
        return json_response(service.served.info())

    @routes.post("/predict")
    async def predict(request: Request) -> Response:
        """One record: ``{"id": ..., "features": {...}}`` -> id, prediction, probability, model."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_records([features])
        scored = await pending.wait()
        count(request, service, scored)
        prediction = dialects.original_predictions([record_id], scored)[0]
        return json_response({**prediction, **dialects.model_fields(scored.served)})

    @routes.post("/predict/batch")
    async def predict_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [...], "model_name", "model_version"}``."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_records(records)
        scored = await pending.wait()
        count(request, service, scored)
        predictions = dialects.original_predictions(ids, scored)
        return json_response({"predictions": predictions, **dialects.model_fields(scored.served)})


def _lineup_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.post("/predict/ensemble")
    async def predict_ensemble(request: Request) -> Response:
        """One record -> the ensemble's ``ensemble_probability`` (or ``ensemble_prediction``), the weights."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_ensemble([features])
        blended = await pending.wait()
        count_combined(request, service, blended)
        prediction = dialects.ensemble_predictions([record_id], blended)[0]
        return json_response({**prediction, **dialects.ensemble_fields(blended)})

    @routes.post("/predict/ensemble/batch")
    async def predict_ensemble_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [{"id", "ensemble_probability"}], "weights", "models"}``."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_ensemble(records)
        blended = await pending.wait()
        count_combined(request, service, blended)
        predictions = dialects.ensemble_predictions(ids, blended)
        return json_response({"predictions": predictions, **dialects.ensemble_fields(blended)})

    @routes.post("/predict/ab")
    async def predict_ab(request: Request) -> Response:
        """One record with its id -> its variant, and the prediction and model of the variant's model."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            keys, id_values = dialects.variant_keys([body], [features], service.settings.id_columns, "body")
            pending = service.submit_ab([features], keys)
        routed = await pending.wait()
        count_combined(request, service, routed)
        return json_response(dialects.ab_predictions([record_id], routed, id_values)[0])

    @routes.post("/predict/ab/batch")
    async def predict_ab_batch(request: Request) -> Response:
        """A list of records with their ids -> ``{"predictions": [{"id", "variant", ...}], "split"}``."""
        authorize(service, request)
        body = await read_json(request)
        with malformed_is_bad_request():
            items = dialects.batch_items(body)
            ids, records = dialects.original_batch(items)
            keys, id_values = dialects.variant_keys(items, records, service.settings.id_columns)
            pending = service.submit_ab(records, keys)
        routed = await pending.wait()
        count_combined(request, service, routed)
        predictions = dialects.ab_predictions(ids, routed, id_values)
        return json_response({"predictions": predictions, "split": dict(routed.roster.lineup.ab)})


def _model_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.post("/predict/{model}")
    async def predict_model(request: Request, model: str) -> Response:
        """One record, scored by the lineup's model ``model`` (``champion`` or a challenger's name)."""
        authorize(service, request)
        live = service.live(model)
        body = await read_json(request)
        with malformed_is_bad_request():
            record_id, features = dialects.original_record(body)
            pending = service.submit_records([features], live)
        scored = await pending.wait()
        count(request, service, scored)
        prediction = dialects.original_predictions([record_id], scored)[0]
        return json_response({**prediction, **dialects.model_fields(scored.served)})

    @routes.post("/predict/{model}/batch")
    async def predict_model_batch(request: Request, model: str) -> Response:
        """A list of records, scored by the lineup's model ``model``, as ``/predict/batch`` answers."""
        authorize(service, request)
        live = service.live(model)
        body = await read_json(request)
        with malformed_is_bad_request():
            ids, records = dialects.original_batch(body)
            pending = service.submit_records(records, live)
        scored = await pending.wait()
        count(request, service, scored)
        predictions = dialects.original_predictions(ids, scored)
        return json_response({"predictions": predictions, **dialects.model_fields(scored.served)})

    @routes.get("/models")
    async def models(request: Request) -> Response:
        """The lineup: each model with its pinned version, the ensemble's weights and the A/B split."""
        authorize(service, request)
        return json_response(service.roster().info())

    @routes.get("/models/{model}")
    async def model_of_lineup(request: Request, model: str) -> Response:
        """One model of the lineup, as ``/model/info`` gives the champion."""
        authorize(service, request)
        return json_response(service.live(model).served.info())
