"""The server's OpenAPI document (``GET /openapi.json``, ``/docs``), built from the served models.

The routes decode their bodies with ``json`` rather than pydantic models (``scoring.serve.routes``), so
FastAPI cannot see what they take or answer: this module writes it, from the models' signatures and the
server's settings, once at start-up. Every schema says what the server really does:

* a feature's JSON type, format and range are those the batch quarantine's row checks accept
  (``scoring.model.rows``): a missing or null feature is refused (422), so every feature is required
  and none is nullable; fields that are not features are ignored;
* each route lists every status it can answer, with the body and content type of each;
* the Open Inference Protocol routes follow KServe's ``rest_predict_v2.yaml``, with this model's
  inputs and outputs named, Triton's binary tensor data extension, and every ``/v2`` error as
  ``{"error": string}``;
* request bodies carry examples built from the features (each at its declared minimum, else 0), so
  that ``/docs`` can call the model as it stands.

One pure function per part: a feature's schema, a route family's paths, the shared components.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST

from scoring.lineup import CHAMPION
from scoring.model.combine import ensemble_column, union_features
from scoring.model.output import OutputSpec
from scoring.model.rows import REASONS
from scoring.model.signature import SUPPORTED_TYPES, Feature
from scoring.serve import oip
from scoring.serve.errors import LISTED_PROBLEMS, RequestError
from scoring.serve.service import ScoringService

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"

# JSON Schema type and OpenAPI format of each signature type.
_JSON_TYPES = {
    "boolean": ("boolean", None),
    "integer": ("integer", "int32"),
    "long": ("integer", "int64"),
    "float": ("number", "float"),
    "double": ("number", "double"),
    "string": ("string", None),
}
_INTEGER_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# A float feature beyond float32's range becomes infinite when cast, and is refused as such.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# JSON type of each prediction type (``OutputSpec.prediction_type``).
_PREDICTION_TYPES = {"double": "number", "long": "integer", "string": "string"}

# Either header carries the API key (``scoring.serve.service.presented_key``).
SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "The API key as a bearer token."},
}
_KEYED = [{"apiKey": []}, {"bearer": []}]

# What each error status means.
_STATUS_TEXT = {
    400: "The body is not JSON, or not in this route's shape.",
    401: "The API key is missing or wrong.",
    403: "Refused: the server was started without an API key.",
    404: "No such model here (or the server has no ensemble / A/B split).",
    413: "The body, or the number of records, is over the server's limit.",
    415: "A content type this route does not read.",
    422: "Records fail the batch job's row checks; nothing is scored.",
    500: "The model failed to score valid records.",
    503: "No model loaded yet, or the worker is full (retry after Retry-After seconds).",
}
# What a route that scores records can answer besides 200 (and 401, with a key).
_SCORING_ERRORS = (400, 413, 422, 500, 503)
_RETRY_AFTER = {"description": "Seconds to wait, when the worker is full.", "schema": {"type": "integer"}}

STRING = {"type": "string"}
NUMBER = {"type": "number"}
MODEL_FIELDS = {"model_name": STRING, "model_version": STRING}
# An A/B id column's value: any JSON scalar but null (``dialects.variant_keys`` hashes its text).
ID_VALUE = {"type": ["string", "number", "boolean"]}


@dataclass(frozen=True)
class Surface:
    """What the document describes: the lineup's signatures and outputs, and the server's limits.

    Attributes:
        name: The champion's model name (None before a model is loaded).
        version: The champion's pinned version.
        features: The champion's features, in model order.
        lineup_features: Every model's features, ranges intersected: a record any
            ``/predict/{model}`` accepts.
        ensemble_features: What ``/predict/ensemble`` checks records against.
        ab_features: What ``/predict/ab`` checks records against.
        outputs: Each model's output shape by its name in the lineup, the champion first.
        ensemble: The ensemble's column (name, Spark type), or None without an ensemble.
        split: The A/B variants' names (empty without a split).
        id_columns: The record fields that decide its A/B variant.
        max_records: Most records in one request.
        keyed: Whether scoring and admin routes need the API key.
        metrics_type: The content type of ``/metrics`` (the Prometheus exposition's version).
    """

    name: str | None = None
    version: str | None = None
    features: tuple[Feature, ...] = ()
    lineup_features: tuple[Feature, ...] = ()
    ensemble_features: tuple[Feature, ...] = ()
    ab_features: tuple[Feature, ...] = ()
    outputs: Mapping[str, OutputSpec] | None = None
    ensemble: tuple[str, str] | None = None
    split: tuple[str, ...] = ()
    id_columns: tuple[str, ...] = ("id",)
    max_records: int = 10_000
    keyed: bool = False
    metrics_type: str = CONTENT_TYPE_LATEST

    @property
    def models(self) -> list[str]:
        """The lineup's model names (``champion`` alone before a model is loaded)."""
        return list(self.outputs or ()) or [CHAMPION]

    def outputs_of(self, names: Sequence[str] | None = None) -> list[OutputSpec]:
        """The output shapes of ``names`` (default: every model's)."""
        outputs = self.outputs or {}
        return [outputs[name] for name in (names or outputs) if name in outputs]


def openapi_document(app: FastAPI, service: ScoringService) -> dict:
    """The OpenAPI 3.1 document of ``app`` serving ``service``'s models.

    Args:
        app: The FastAPI app (its title and summary head the document).
        service: The scoring service; its loaded models give the schemas.

    Returns:
        The document, as ``GET /openapi.json`` answers it.
    """
    surface = surface_of(service)
    served = f"{surface.name} version {surface.version}" if surface.name else "no model yet"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": app.title,
            "summary": app.summary,
            "version": oip.server_metadata()["version"],
            "description": f"Serving {served}. One scoring path in three dialects: the original API, "
            "MLflow's scoring protocol and the Open Inference Protocol v2 (KServe, Triton).",
        },
        "paths": {
            **original_paths(surface),
            **mlflow_paths(surface),
            **oip_paths(surface),
            **operations_paths(surface),
        },
        "components": {"schemas": component_schemas(), "securitySchemes": SECURITY_SCHEMES},
    }


def openapi_for(app: FastAPI, service: ScoringService) -> Callable[[], dict]:
    """``app.openapi``: the document of the lineup serving now, built once per load.

    A reload that swaps the models (another version, another signature) gets a new document; until a
    model is loaded, the document without features is not kept.
    """
    built: dict = {}

    def document() -> dict:
        try:
            roster = service.roster()
        except RequestError:  # not loaded yet
            return openapi_document(app, service)
        if built.get("roster") is not roster:
            built.update(roster=roster, document=openapi_document(app, service))
        return built["document"]

    return document


def surface_of(service: ScoringService) -> Surface:
    """What ``service`` serves now; before a model is loaded, a surface without features."""
    settings = service.settings
    limits = {
        "id_columns": settings.id_columns,
        "max_records": settings.max_records,
        "keyed": bool(settings.api_key),
        # Asked of the registry itself, so that the document follows the exposition it renders.
        "metrics_type": service.metrics.render()[1],
    }
    try:
        roster = service.roster()
    except RequestError:  # not loaded yet: the routes answer 503; records are free-form objects
        return Surface(**limits)
    champion = roster.champion.served
    column = ensemble_column(roster.outputs, roster.lineup)
    return Surface(
        name=champion.model.name,
        version=champion.model.version,
        features=champion.features,
        lineup_features=union_features({name: live.served.features for name, live in roster.models.items()}),
        ensemble_features=roster.ensemble_features or champion.features,
        ab_features=roster.ab_features or champion.features,
        outputs=roster.outputs,
        ensemble=(column.name, column.type) if column else None,
        split=tuple(name for name, _ in roster.lineup.ab),
        **limits,
    )


# --- Schema helpers -------------------------------------------------------------------------------


def ref(name: str) -> dict:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: Mapping[str, dict], optional: Mapping[str, dict] | None = None, **extra: object) -> dict:
    """An object schema with these ``required`` and ``optional`` properties."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        **extra,
    }


def array(items: dict, **extra: object) -> dict:
    """An array schema of ``items``."""
    return {"type": "array", "items": items, **extra}


def _any_of(schemas: Sequence[dict]) -> dict:
    """One schema for these alternatives, without repeats."""
    distinct = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
    if not distinct:
        return {}
    return distinct[0] if len(distinct) == 1 else {"anyOf": distinct}


# --- Features -------------------------------------------------------------------------------------


def feature_bounds(feature: Feature) -> tuple[float | None, float | None]:
    """The smallest and largest JSON number the row checks accept for ``feature`` (None: no bound).

    Integers are bounded by their type as well as by the declared range; a float feature's bounds are
    moved inside to float32 values, since its value is narrowed to float32 before its range is checked
    (0.7 becomes 0.69999998..., below a declared minimum of 0.7).
    """
    low, high = feature.min, feature.max
    if feature.type in _INTEGER_RANGE:
        type_low, type_high = _INTEGER_RANGE[feature.type]
        low = type_low if low is None else max(type_low, math.ceil(low))
        high = type_high if high is None else min(type_high, math.floor(high))
    elif feature.type == "float":
        low = -_FLOAT32_MAX if low is None else _float32_inward(low, up=True)
        high = _FLOAT32_MAX if high is None else _float32_inward(high, up=False)
    elif feature.type != "double":
        return None, None
    return low, high


def _float32_inward(bound: float, up: bool) -> float:
    """The float32 value nearest ``bound`` on the inside of the range (above a minimum, below a maximum)."""
    narrowed = np.float32(np.clip(bound, -_FLOAT32_MAX, _FLOAT32_MAX))
    if up and float(narrowed) < bound:
        narrowed = np.nextafter(narrowed, np.float32(np.inf))
    if not up and float(narrowed) > bound:
        narrowed = np.nextafter(narrowed, np.float32(-np.inf))
    return float(narrowed)


def feature_schema(feature: Feature) -> dict:
    """One feature's value: its JSON type, format and the range the row checks accept."""
    json_type, fmt = _JSON_TYPES[feature.type]
    schema: dict = {"type": json_type, **({"format": fmt} if fmt else {})}
    low, high = feature_bounds(feature)
    schema |= {key: v for key, v in (("minimum", low), ("maximum", high)) if v is not None}
    declared = [f"{key} {v:g}" for key, v in (("min", feature.min), ("max", feature.max)) if v is not None]
    schema["description"] = (
        feature.type + (f" (declared {', '.join(declared)})" if declared else "") + ". Text is cast as the "
        "batch job casts it; null, NaN, infinite or out of range is refused (422)."
    )
    schema["example"] = example_value(feature)
    return schema


def example_value(feature: Feature) -> object:
    """A value the row checks accept: the declared minimum (moved inside, as the schema's), else 0.

    Without a declared minimum, 0, or the declared maximum where that is below 0.
    """
    if feature.type == "string":
        return ""
    if feature.type == "boolean":
        return False
    low, high = feature_bounds(feature)
    value = low if feature.min is not None else 0 if feature.max is None else min(0, high)
    return int(value) if feature.type in _INTEGER_RANGE else float(value)


def example_record(features: Sequence[Feature]) -> dict:
    """One valid record: each feature at ``example_value``."""
    return {f.name: example_value(f) for f in features}


def features_schema(features: Sequence[Feature]) -> dict:
    """The ``features`` object: every feature required, other fields ignored."""
    if not features:
        return {"type": "object", "description": "Feature name to value (no model loaded yet)."}
    schema = obj({f.name: feature_schema(f) for f in features})
    schema["description"] = (
        "Feature name to value, one per feature of the signature; other fields are ignored."
    )
    return schema


# --- Scores ---------------------------------------------------------------------------------------


def prediction_schema(outputs: Sequence[OutputSpec]) -> dict:
    """A prediction's JSON value: the model's label or value, typed as the batch job writes it."""
    return _any_of([{"type": _PREDICTION_TYPES[o.prediction_type]} for o in outputs])


def probability_schema(outputs: Sequence[OutputSpec]) -> dict | None:
    """A probability: the positive class's (binary), or one per class (multiclass); None: no classifier."""
    number = {"type": "number", "minimum": 0, "maximum": 1}
    kinds = sorted({o.probability for o in outputs} - {None})
    schemas = [number if kind == "binary" else array(number) for kind in kinds]
    return _any_of(schemas) if schemas else None


def scores_properties(outputs: Sequence[OutputSpec]) -> tuple[dict, dict]:
    """``prediction`` and (classifiers) ``probability``: the required ones, and the optional one."""
    required = {"prediction": prediction_schema(outputs)}
    probability = probability_schema(outputs)
    if probability is None:
        return required, {}
    # Only when every model gives probabilities is the field always there.
    if all(o.probability is not None for o in outputs):
        return {**required, "probability": probability}, {}
    return required, {"probability": probability}


# --- Operations and responses ---------------------------------------------------------------------


def json_body(schema: dict, examples: Mapping[str, object] | None = None) -> dict:
    """A JSON request body of ``schema``, with named examples for ``/docs``."""
    media: dict = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"required": True, "content": {JSON: media}}


def json_response(description: str, schema: dict, headers: dict | None = None) -> dict:
    """A JSON response."""
    response = {"description": description, "content": {JSON: {"schema": schema}}}
    return {**response, "headers": headers} if headers else response


def text_response(description: str, media_type: str = TEXT) -> dict:
    """A text response."""
    return {"description": description, "content": {media_type: {"schema": STRING}}}


def error_responses(statuses: Sequence[int], error: str = "Error") -> dict:
    """A route's error answers: ``{"error": ...}`` (the ``error`` schema), 422 with its rejects.

    Args:
        statuses: The error statuses the route can answer.
        error: The component schema of a plain error (``V2Error`` on ``/v2``: nothing but ``error``).
    """
    responses = {}
    for status in statuses:
        schema = ref("InvalidRecords" if status == 422 and error == "Error" else error)
        headers = {"Retry-After": _RETRY_AFTER} if status == 503 else None
        responses[str(status)] = json_response(_STATUS_TEXT[status], schema, headers)
    return responses


def operation(
    summary: str,
    responses: dict,
    surface: Surface,
    *,
    tag: str,
    keyed: bool = False,
    body: dict | None = None,
    parameters: Sequence[dict] = (),
    error: str = "Error",
) -> dict:
    """One operation; a ``keyed`` one carries the API key's security (and 401, when a key is set).

    Args:
        summary: One line for ``/docs``.
        responses: The route's answers by status.
        surface: What is served (whether a key is set).
        tag: The ``/docs`` section.
        keyed: Whether the route checks the API key (``scoring.serve.routes.common.authorize``).
        body: The request body, if any.
        parameters: Path and header parameters.
        error: The component schema of the route's plain errors (its 401).
    """
    op: dict = {"summary": summary, "tags": [tag], "responses": dict(responses)}
    if parameters:
        op["parameters"] = list(parameters)
    if body:
        op["requestBody"] = body
    if keyed and surface.keyed:
        op["security"] = _KEYED
        op["responses"] |= error_responses([401], error)
    elif keyed:
        op["security"] = [{}, *_KEYED]  # no key set: every request passes, as the empty requirement says
    return op


def path_parameter(name: str, description: str, **schema: object) -> dict:
    """A path parameter: a name in the server's routes never holds ``/``."""
    schema = {"type": "string", "pattern": "^[^/]+$", **schema}
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def lineup_parameter(surface: Surface) -> dict:
    """The ``{model}`` of ``/predict/{model}`` and ``/models/{model}``: a name in the lineup."""
    return path_parameter("model", "``champion`` or a challenger's name.", enum=surface.models)


# --- The original API -----------------------------------------------------------------------------


def record_schema(features: Sequence[Feature], id_columns: Sequence[str] = ()) -> dict:
    """``{"id": ..., "features": {...}}``; ``id_columns`` required too (A/B: they decide the variant)."""
    ids = {
        # Read from the record, else from its features (dialects.variant_keys).
        column: {**ID_VALUE, "description": "The record's id: decides its variant."}
        for column in id_columns
    }
    anything = {"description": "Any JSON value; the answer repeats it (null when absent)."}
    return obj({"features": features_schema(features), **ids}, {"id": anything} if "id" not in ids else None)


def batch_schema(record: dict, max_records: int) -> dict:
    """A list of records, or ``{"records": [...]}``."""
    records = array(record, minItems=1, maxItems=max_records)
    return {"anyOf": [records, obj({"records": records})]}


def prediction_answer(outputs: Sequence[OutputSpec], batch: bool = False) -> dict:
    """One record's answer: its id, prediction, probability (classifiers) and model; or a batch's."""
    required, optional = scores_properties(outputs)
    if batch:
        return obj({"predictions": array(obj({"id": {}, **required}, optional)), **MODEL_FIELDS})
    return obj({"id": {}, **required, **MODEL_FIELDS}, optional)


def ensemble_answer(surface: Surface, batch: bool = False) -> dict:
    """The ensemble's answer: each record's blended value, the weights and the members' models."""
    column, kind = surface.ensemble or ("ensemble_probability", "double")
    value = array(NUMBER) if kind.startswith("array") else NUMBER
    item = {"id": {}, column: value}
    shared = {
        "weights": {"type": "object", "additionalProperties": NUMBER},
        "models": {"type": "object", "additionalProperties": obj(MODEL_FIELDS)},
    }
    return obj({"predictions": array(obj(item)), **shared}) if batch else obj({**item, **shared})


def ab_answer(surface: Surface, batch: bool = False) -> dict:
    """The A/B split's answer: each record's ids, variant, and its variant's scores and model."""
    required, optional = scores_properties(surface.outputs_of(surface.split))
    variant = {"type": "string", **({"enum": list(surface.split)} if surface.split else {})}
    ids = dict.fromkeys(surface.id_columns, ID_VALUE)
    item = obj({"id": {}, **ids, "variant": variant, **required, **MODEL_FIELDS}, optional)
    if not batch:
        return item
    return obj({"predictions": array(item), "split": {"type": "object", "additionalProperties": NUMBER}})


@dataclass(frozen=True)
class RecordRoute:
    """A route of the original API, for one record and (``/batch``) for a list of them.

    Attributes:
        path: The one record's path; the list's adds ``/batch``.
        summary: One line for ``/docs``.
        features: What the records are checked against.
        answer: One record's answer.
        batch_answer: The list's answer.
        errors: The error statuses both can answer (401 comes with the key).
        parameters: Path parameters.
        id_columns: Record fields required beside the features (the A/B ids).
    """

    path: str
    summary: str
    features: tuple[Feature, ...]
    answer: dict
    batch_answer: dict
    errors: tuple[int, ...] = _SCORING_ERRORS
    parameters: tuple[dict, ...] = ()
    id_columns: tuple[str, ...] = ()


def record_paths(route: RecordRoute, surface: Surface) -> dict:
    """The paths of ``route``: one record (``POST path``) and a list of them (``POST path/batch``)."""
    record = record_schema(route.features, route.id_columns)
    example = {"id": 1, **dict.fromkeys(route.id_columns, 1), "features": example_record(route.features)}
    common = {"tag": "Original API", "keyed": True, "parameters": route.parameters}
    errors = error_responses(route.errors)
    one = json_body(record, {"one record": example})
    many = json_body(batch_schema(record, surface.max_records), {"two records": [example, example]})
    return {
        route.path: {
            "post": operation(
                route.summary,
                {"200": json_response("Scored.", route.answer), **errors},
                surface,
                body=one,
                **common,
            )
        },
        f"{route.path}/batch": {
            "post": operation(
                f"{route.summary} (a list of records)",
                {"200": json_response("Scored.", route.batch_answer), **errors},
                surface,
                body=many,
                **common,
            )
        },
    }


def original_paths(surface: Surface) -> dict:
    """``/predict`` and its ``/batch``, and the same for one model, the ensemble and the A/B split."""
    champion, every, with_404 = surface.outputs_of([CHAMPION]), surface.outputs_of(), (*_SCORING_ERRORS, 404)
    routes = [
        RecordRoute(
            "/predict",
            "Score records with the champion",
            surface.features,
            prediction_answer(champion),
            prediction_answer(champion, batch=True),
        ),
        RecordRoute(
            "/predict/ensemble",
            "Score records with the ensemble (404 without one)",
            surface.ensemble_features,
            ensemble_answer(surface),
            ensemble_answer(surface, batch=True),
            with_404,
        ),
        RecordRoute(
            "/predict/ab",
            "Score each record with its A/B variant's model (404 without a split)",
            surface.ab_features,
            ab_answer(surface),
            ab_answer(surface, batch=True),
            with_404,
            id_columns=surface.id_columns,
        ),
        RecordRoute(
            "/predict/{model}",
            "Score records with one model of the lineup",
            surface.lineup_features,
            prediction_answer(every),
            prediction_answer(every, batch=True),
            with_404,
            (lineup_parameter(surface),),
        ),
    ]
    paths: dict = {}
    for route in routes:
        paths |= record_paths(route, surface)
    return paths


# --- MLflow's scoring protocol --------------------------------------------------------------------


def mlflow_request_schema(features: Sequence[Feature], max_records: int) -> dict:
    """An ``/invocations`` body: exactly one of MLflow's four formats, as ``dialects.mlflow_request`` reads.

    ``dataframe_split`` (columns and rows), ``dataframe_records`` (a list of records), ``instances``
    and ``inputs`` (records, rows in the signature's order, columns, or one record).
    """
    record = features_schema(features)
    records = array(record, maxItems=max_records)
    row: dict = {"type": "array", "description": "One value per feature, in the signature's order."}
    if features:
        row |= {"prefixItems": [feature_schema(f) for f in features], "minItems": len(features)}
        row["maxItems"] = len(features)
    columns = {
        "type": "object",
        "description": "Feature name to its column of values, all of one length.",
        "additionalProperties": array({}, maxItems=max_records),
    }
    names = array(STRING, description="Column names; default: the signature's, in order.")
    split = obj({"data": array(array({}), maxItems=max_records)}, {"columns": names})
    instances = {"anyOf": [records, array(row, maxItems=max_records), columns, record]}
    formats = {
        "dataframe_split": split,
        "dataframe_records": records,
        "instances": instances,
        "inputs": instances,
    }
    return {"oneOf": [obj({key: schema}) for key, schema in formats.items()]}


def mlflow_examples(features: Sequence[Feature]) -> dict:
    """One example per format, each of one record at ``example_record``."""
    record = example_record(features)
    return {
        "dataframe_split": {"dataframe_split": {"columns": list(record), "data": [list(record.values())]}},
        "dataframe_records": {"dataframe_records": [record]},
        "instances": {"instances": [record]},
        "inputs": {"inputs": {name: [value] for name, value in record.items()}},
    }


def mlflow_paths(surface: Surface) -> dict:
    """``/invocations``, ``/ping`` and ``/version``, as ``mlflow models serve`` has them."""
    tag = "MLflow"
    outputs = surface.outputs_of([CHAMPION])
    scores = {"predictions": array(prediction_schema(outputs))}
    probability = probability_schema(outputs)
    if probability is not None:
        scores["probabilities"] = array(probability)
    body = json_body(
        mlflow_request_schema(surface.features, surface.max_records), mlflow_examples(surface.features)
    )
    answers = {
        "200": json_response("Scored.", obj({**scores, **MODEL_FIELDS})),
        **error_responses((*_SCORING_ERRORS, 415)),
    }
    ping = {
        "200": text_response("Loaded: an empty line."),
        "503": text_response("Not loaded yet: an empty line."),
    }
    return {
        "/invocations": {
            "post": operation(
                "Score a frame, as mlflow models serve does (JSON bodies)",
                answers,
                surface,
                tag=tag,
                keyed=True,
                body=body,
            )
        },
        "/ping": {
            "get": operation("MLflow's health route: 200 once the model is loaded", ping, surface, tag=tag)
        },
        "/version": {
            "get": operation(
                "This server's version", {"200": text_response("The version.")}, surface, tag=tag
            )
        },
    }


# --- The Open Inference Protocol v2 ---------------------------------------------------------------


def oip_request_schema(features: Sequence[Feature], max_records: int) -> dict:
    """KServe's ``inference_request``, its inputs this model's (one per feature, or one [N, F])."""
    names = ", ".join(f.name for f in features) or "the model's features"
    tensor = {
        **ref("RequestInput"),
        "description": f"A tensor named as a feature ({names}), shape [N] or [N, 1]; or one "
        f"[N, {len(features) or 'F'}] tensor, its columns the features in that order. N <= {max_records}.",
    }
    parameters = {"binary_data_output": {"type": "boolean", "description": "Every output as raw bytes."}}
    return obj(
        {"inputs": array(tensor, minItems=1)},
        {"id": STRING, "parameters": _parameters(parameters), "outputs": array(ref("RequestOutput"))},
    )


def _parameters(known: Mapping[str, dict]) -> dict:
    """A protocol ``parameters`` object: any keys, those the server reads typed."""
    return {"type": "object", "properties": dict(known)}


def oip_examples(features: Sequence[Feature]) -> dict:
    """One tensor per feature, and (all features numeric) one [1, F] FP64 tensor."""
    per_feature = [
        {"name": f.name, "datatype": oip.FEATURE_DATATYPES[f.type], "shape": [1], "data": [example_value(f)]}
        for f in features
    ]
    examples: dict = {"one tensor per feature": {"inputs": per_feature}}
    if features and all(f.type in ("integer", "long", "float", "double") for f in features):
        matrix = {"name": "features", "datatype": "FP64", "shape": [1, len(features)]}
        examples["one [N, F] tensor"] = {
            "inputs": [{**matrix, "data": list(example_record(features).values())}]
        }
    return examples


def oip_answer(surface: Surface) -> dict:
    """KServe's ``inference_response``: outputs ``prediction`` and (classifiers) ``probability``."""
    outputs = surface.outputs_of([CHAMPION])
    names = ["prediction"] + (["probability"] if probability_schema(outputs) is not None else [])
    output = {**ref("ResponseOutput"), "description": f"One of: {', '.join(names)}."}
    return obj(
        {"model_name": STRING, "outputs": array(output)},
        {"model_version": STRING, "id": STRING, "parameters": _parameters({})},
    )


def oip_paths(surface: Surface) -> dict:
    """The Open Inference Protocol's health and server metadata, and each model route twice.

    A model's routes come with and without ``/versions/{version}``.
    """
    tag = "Open Inference Protocol v2"
    live, ready = obj({"live": {"type": "boolean"}}), obj({"ready": {"type": "boolean"}})
    name = path_parameter(
        "name", "The served model's name.", **({"enum": [surface.name]} if surface.name else {})
    )
    version = path_parameter("version", "The served model's version.", example=surface.version or "1")
    paths = {
        "/v2/health/live": {
            "get": operation("Server live", {"200": json_response("Live.", live)}, surface, tag=tag)
        },
        "/v2/health/ready": {
            "get": operation(
                "Server ready",
                {"200": json_response("Ready.", ready), "503": json_response("Not ready.", ready)},
                surface,
                tag=tag,
            )
        },
        "/v2": {
            "get": operation(
                "Server metadata",
                {"200": json_response("The server.", ref("ServerMetadata"))},
                surface,
                tag=tag,
            )
        },
    }
    paths |= oip_model_paths(surface, "/v2/models/{name}", [name])
    paths |= oip_model_paths(surface, "/v2/models/{name}/versions/{version}", [name, version])
    return paths


def oip_model_paths(surface: Surface, base: str, parameters: list[dict]) -> dict:
    """A model's metadata (``base``), readiness (``base/ready``) and inference (``base/infer``)."""
    v2 = {"tag": "Open Inference Protocol v2", "parameters": parameters, "error": V2_ERROR}
    metadata = {
        "200": json_response("The model.", ref("ModelMetadata")),
        **error_responses((404, 503), V2_ERROR),
    }
    ready = obj({"name": STRING, "ready": {"type": "boolean"}})
    readiness = {"200": json_response("Ready or not.", ready), **error_responses((404, 503), V2_ERROR)}
    body = json_body(
        oip_request_schema(surface.features, surface.max_records), oip_examples(surface.features)
    )
    # Triton's binary tensor data extension: the JSON request, then the inputs' raw bytes.
    body["content"][BINARY] = {"schema": {"type": "string", "format": "binary"}}
    body["description"] = (
        f"JSON; or the JSON request ({oip.BINARY_HEADER} bytes long), then the raw bytes of each "
    )
    body["description"] += "input whose parameters give a binary_data_size, in input order."
    binary_header = {
        "name": oip.BINARY_HEADER,
        "in": "header",
        "required": False,
        "description": "The binary tensor data extension: the length of the JSON that starts the body.",
        "schema": {"type": "integer", "minimum": 0},
    }
    inferred = json_response("Scored.", oip_answer(surface))
    inferred["content"][BINARY] = {"schema": {"type": "string", "format": "binary"}}
    inferred["headers"] = {
        oip.BINARY_HEADER: {
            "description": "With binary outputs: the JSON's length.",
            "schema": {"type": "integer"},
        }
    }
    infer = {"200": inferred, **error_responses((400, 404, 413, 415, 422, 500, 503), V2_ERROR)}
    return {
        base: {
            "get": operation(
                "Model metadata: versions, platform, tensors", metadata, surface, keyed=True, **v2
            )
        },
        f"{base}/ready": {"get": operation("Whether the model is ready", readiness, surface, **v2)},
        f"{base}/infer": {
            "post": operation(
                "Inference: named input tensors in, prediction (and probability) tensors out",
                infer,
                surface,
                keyed=True,
                body=body,
                **{**v2, "parameters": [*parameters, binary_header]},
            )
        },
    }


# --- Operations -----------------------------------------------------------------------------------


# The ``/docs`` section of the routes below.
_OPERATIONS = "Operations"


def operations_paths(surface: Surface) -> dict:
    """Health, readiness, the model's and the lineup's descriptions, metrics and reload."""
    return {**_health_paths(surface), **_description_paths(surface), **_admin_paths(surface)}


def _health_paths(surface: Surface) -> dict:
    """``/health`` (liveness) and ``/ready`` (readiness: a model is loaded)."""
    ready = obj({"status": {"const": "ready"}, **MODEL_FIELDS})
    readiness = {
        "200": json_response("Ready.", ready),
        "503": json_response("Not ready.", obj({"status": {"const": "loading"}})),
    }
    return {
        "/health": {
            "get": operation(
                "Liveness",
                {"200": json_response("Alive.", obj({"status": {"const": "ok"}}))},
                surface,
                tag=_OPERATIONS,
            )
        },
        "/ready": {"get": operation("Readiness: a model is loaded", readiness, surface, tag=_OPERATIONS)},
    }


def _description_paths(surface: Surface) -> dict:
    """``/model/info`` (the champion), ``/models`` (the lineup) and ``/models/{model}`` (one of it)."""
    info, lineup = ref("ModelInfo"), ref("Lineup")
    return {
        "/model/info": {
            "get": operation(
                "The champion: name, pinned version, signature, output",
                {"200": json_response("The model.", info), **error_responses((503,))},
                surface,
                tag=_OPERATIONS,
                keyed=True,
            )
        },
        "/models": {
            "get": operation(
                "The lineup: each model pinned, the ensemble's weights, the A/B split",
                {"200": json_response("The lineup.", lineup), **error_responses((503,))},
                surface,
                tag=_OPERATIONS,
                keyed=True,
            )
        },
        "/models/{model}": {
            "get": operation(
                "One model of the lineup, as /model/info describes the champion",
                {"200": json_response("The model.", info), **error_responses((404, 503))},
                surface,
                tag=_OPERATIONS,
                keyed=True,
                parameters=[lineup_parameter(surface)],
            )
        },
    }


def _admin_paths(surface: Surface) -> dict:
    """``/metrics`` (the Prometheus exposition) and ``/admin/reload``."""
    reload = {
        "200": json_response("Reloaded, or nothing moved.", ref("ReloadOutcome")),
        "500": json_response("The reload failed; the old models still serve.", ref("ReloadFailed")),
        **error_responses(((401,) if surface.keyed else (403,)) + (503,)),
    }
    return {
        "/metrics": {
            "get": operation(
                "Prometheus metrics",
                {"200": text_response("The Prometheus exposition.", surface.metrics_type)},
                surface,
                tag=_OPERATIONS,
            )
        },
        "/admin/reload": {
            "post": operation(
                "Resolve the model references again and swap to their versions",
                reload,
                surface,
                tag=_OPERATIONS,
                keyed=True,
            )
        },
    }


# --- Shared components ----------------------------------------------------------------------------

# The ``/v2`` routes' error body: nothing but ``{"error": string}``, as the protocol has it.
V2_ERROR = "V2Error"


def component_schemas() -> dict:
    """The schemas the routes share: errors, model descriptions, the protocol's tensors."""
    return {
        "Error": obj({"error": {"type": "string", "description": "What is wrong; never a request's value."}}),
        V2_ERROR: obj({"error": STRING}, additionalProperties=False),
        "InvalidRecords": invalid_records_schema(),
        "ModelInfo": model_info_schema(),
        "Lineup": lineup_schema(),
        "ReloadOutcome": reload_outcome_schema(),
        "ReloadFailed": obj({"error": STRING, **MODEL_FIELDS}),
        **oip_component_schemas(),
    }


def invalid_records_schema() -> dict:
    """422: the message and, per bad record (the first ``LISTED_PROBLEMS``), its position, field, reason."""
    reject = obj(
        {
            "record": {"type": "integer", "minimum": 0},
            "field": STRING,
            "reason": {"type": "string", "enum": list(REASONS)},
            "reject_reason": {"type": "string", "description": "CODE:COLUMN, as the batch job writes it."},
        }
    )
    rejects = array(reject, maxItems=LISTED_PROBLEMS)
    return obj({"error": STRING, "rejects": rejects, "rejected": {"type": "integer", "minimum": 1}})


def model_info_schema() -> dict:
    """``ServedModel.info()``."""
    bound = {"type": ["number", "null"]}
    feature = obj({"name": STRING, "type": {"enum": list(SUPPORTED_TYPES)}, "min": bound, "max": bound})
    column = obj({"name": STRING, "type": STRING})
    return obj(
        {
            "name": STRING,
            "version": STRING,
            "uri": STRING,
            "pinned_uri": STRING,
            "run_id": {"type": ["string", "null"]},
            "backend": {"enum": ["pyfunc", "onnx"]},
            "signature": obj({"inputs": array(feature), "outputs": array(column)}),
            "prediction_type": {"enum": list(_PREDICTION_TYPES)},
            "probability": {"enum": ["binary", "multiclass", None]},
            "methods": {"type": "object", "additionalProperties": STRING},
            "classes": {"type": ["array", "null"]},
        }
    )


def lineup_schema() -> dict:
    """``Roster.info()``: the models, the ensemble, the A/B split."""
    shares = {"type": "object", "additionalProperties": NUMBER}
    model = {"allOf": [ref("ModelInfo"), obj({"model": STRING})]}
    ensemble = {"anyOf": [{"type": "null"}, obj({"weights": shares, "column": STRING})]}
    ab = {"anyOf": [{"type": "null"}, obj({"split": shares, "salt": STRING})]}
    return obj({"models": array(model), "ensemble": ensemble, "ab": ab, "decision_threshold": NUMBER})


def reload_outcome_schema() -> dict:
    """``ScoringService.load()``'s outcome, with the champion's name and version."""
    version = {"type": ["string", "null"]}
    moved = obj({"reloaded": {"type": "boolean"}, "from": version, "to": STRING})
    models = {"type": "object", "additionalProperties": moved}
    return obj(
        {"reloaded": {"type": "boolean"}, "from": version, "to": STRING, "models": models, **MODEL_FIELDS}
    )


def oip_component_schemas() -> dict:
    """KServe's ``rest_predict_v2.yaml`` schemas (tensors, metadata), with the protocol's datatypes."""
    datatype = {"enum": list(oip.DATATYPES)}
    shape = array({"type": "integer", "minimum": 0})
    element = {"type": ["number", "string", "boolean", "null"]}
    tensor_data = array(
        {"anyOf": [ref("TensorData"), element]},
        description="The elements, row-major: flat, or nested as the shape; numbers, booleans (BOOL) or "
        "strings (BYTES), as the datatype; null is a missing value.",
    )
    input_parameters = {"binary_data_size": {"type": "integer", "minimum": 0}}
    output_parameters = {"binary_data": {"type": "boolean"}}
    tensor = {"name": STRING, "datatype": datatype, "shape": shape}
    # Metadata shapes say -1 for a dimension of any size.
    described = obj({**tensor, "shape": array({"type": "integer", "minimum": -1})})
    return {
        "TensorData": tensor_data,
        "RequestInput": obj(
            {**tensor, "name": {"type": "string", "maxLength": oip.MAX_NAME}},
            {"parameters": _parameters(input_parameters), "data": ref("TensorData")},
            description="data, or parameters.binary_data_size with the binary tensor data extension.",
        ),
        "RequestOutput": obj({"name": STRING}, {"parameters": _parameters(output_parameters)}),
        "ResponseOutput": obj({**tensor, "data": ref("TensorData")}, {"parameters": _parameters({})}),
        "ServerMetadata": obj({"name": STRING, "version": STRING, "extensions": array(STRING)}),
        "ModelMetadata": obj(
            {"name": STRING, "platform": STRING, "inputs": array(described), "outputs": array(described)},
            {"versions": array(STRING)},
        ),
    }
