"""The project's own API: health, the champion's and the lineup's predictions, the models' metadata.

``GET /health``, ``GET /ready``, ``GET /model/info``, ``POST /predict`` and ``/predict/batch``; the
lineup's routes, each with a ``/batch`` twin: ``POST /predict/{model}`` (``champion`` or a
challenger), ``POST /predict/ensemble``, ``POST /predict/ab``; ``GET /models`` and ``/models/{model}``.

A route's one-record form takes ``{"id": ..., "features": {...}}``, its ``/batch`` twin a list of them
(or ``{"records": [...]}``), and both answer from the same code (``_records``, ``_ensemble``, ``_ab``).
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

    @routes.get("/model/info")
    async def model_info(request: Request) -> Response:
        """The served model: name, pinned version, run, signature, backend, classes."""
        authorize(service, request)
        return json_response(service.served.info())


def _champion_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.post("/predict")
    async def predict(request: Request) -> Response:
        """One record: ``{"id": ..., "features": {...}}`` -> id, prediction, probability, model."""
        return await _records(service, request, batch=False)

    @routes.post("/predict/batch")
    async def predict_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [...], "model_name", "model_version"}``."""
        return await _records(service, request, batch=True)


def _lineup_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.post("/predict/ensemble")
    async def predict_ensemble(request: Request) -> Response:
        """One record -> the ensemble's ``ensemble_probability`` (or ``ensemble_prediction``), the weights."""
        return await _ensemble(service, request, batch=False)

    @routes.post("/predict/ensemble/batch")
    async def predict_ensemble_batch(request: Request) -> Response:
        """A list of records -> ``{"predictions": [{"id", "ensemble_probability"}], "weights", "models"}``."""
        return await _ensemble(service, request, batch=True)

    @routes.post("/predict/ab")
    async def predict_ab(request: Request) -> Response:
        """One record with its id -> its variant, and the prediction and model of the variant's model."""
        return await _ab(service, request, batch=False)

    @routes.post("/predict/ab/batch")
    async def predict_ab_batch(request: Request) -> Response:
        """A list of records with their ids -> ``{"predictions": [{"id", "variant", ...}], "split"}``."""
        return await _ab(service, request, batch=True)


def _model_routes(routes: APIRouter, service: ScoringService) -> None:
    @routes.post("/predict/{model}")
    async def predict_model(request: Request, model: str) -> Response:
        """One record, scored by the lineup's model ``model`` (``champion`` or a challenger's name)."""
        return await _records(service, request, batch=False, model=model)

    @routes.post("/predict/{model}/batch")
    async def predict_model_batch(request: Request, model: str) -> Response:
        """A list of records, scored by the lineup's model ``model``, as ``/predict/batch`` answers."""
        return await _records(service, request, batch=True, model=model)

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


async def _records(
    service: ScoringService, request: Request, batch: bool, model: str | None = None
) -> Response:
    """Records scored by one model of the lineup (the champion by default): one answer or a list."""
    authorize(service, request)
    live = service.live(model) if model is not None else None
    body = await read_json(request)
    with malformed_is_bad_request():
        ids, records = _parsed(body, batch)
        pending = service.submit_records(records, live)
    scored = await pending.wait()
    count(request, service, scored)
    predictions = dialects.original_predictions(ids, scored)
    return _answer(predictions, dialects.model_fields(scored.served), batch)


async def _ensemble(service: ScoringService, request: Request, batch: bool) -> Response:
    """Records scored by the ensemble: its blend, its weights and its members' versions."""
    authorize(service, request)
    body = await read_json(request)
    with malformed_is_bad_request():
        ids, records = _parsed(body, batch)
        pending = service.submit_ensemble(records)
    blended = await pending.wait()
    count_combined(request, service, blended)
    predictions = dialects.ensemble_predictions(ids, blended)
    return _answer(predictions, dialects.ensemble_fields(blended), batch)


async def _ab(service: ScoringService, request: Request, batch: bool) -> Response:
    """Records routed to their A/B variant's model by their id, each with its variant and model."""
    authorize(service, request)
    body = await read_json(request)
    with malformed_is_bad_request():
        if batch:
            items = dialects.batch_items(body)
            ids, records = dialects.original_batch(items)
            keys, id_values = dialects.variant_keys(items, records, service.settings.id_columns)
        else:
            ids, records = _parsed(body, batch)
            keys, id_values = dialects.variant_keys([body], records, service.settings.id_columns, "body")
        pending = service.submit_ab(records, keys)
    routed = await pending.wait()
    count_combined(request, service, routed)
    predictions = dialects.ab_predictions(ids, routed, id_values)
    # One record's answer is its prediction alone: its model is in it, as the variant's.
    return _answer(predictions, {"split": dict(routed.roster.lineup.ab)} if batch else {}, batch)


def _parsed(body: object, batch: bool) -> tuple[list, list]:
    """The ids and the records of a one-record body or of a batch's."""
    if batch:
        return dialects.original_batch(body)
    record_id, features = dialects.original_record(body)
    return [record_id], [features]


def _answer(predictions: list[dict], fields: dict, batch: bool) -> Response:
    """``{"predictions": [...], **fields}`` for a batch; the one prediction with ``fields`` else."""
    return json_response({"predictions": predictions, **fields} if batch else {**predictions[0], **fields})
