"""The OpenAPI document (``GET /openapi.json``) tells the truth about the served model and every route.

The features are the model's, with their types and declared ranges; every route the app serves is in
it; the examples ``/docs`` offers are scored; text routes are text; the routes that need the API key say
so and refuse a request without it as documented.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import openapi_spec_validator
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from prometheus_client.exposition import CONTENT_TYPE_LATEST, CONTENT_TYPE_PLAIN_0_0_4

from scoring import demo
from scoring.model.signature import Feature
from scoring.serve import openapi
from scoring.serve.http import create_app
from scoring.serve.served_model import ServeSettings
from scoring.serve.service import ScoringService

KEY = "docs-key"
FEATURES = list(demo.FEATURE_TYPES)
# The signature's type of each of the demo's pandas dtypes, and its JSON type and format.
SCHEMA_TYPES = {
    "int32": ("integer", "int32"),
    "int64": ("integer", "int64"),
    "float32": ("number", "float"),
    "float64": ("number", "double"),
}
TYPE_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# FastAPI's own routes, not the server's.
FASTAPI_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect"}
TEXT_ROUTES = ("/metrics", "/version", "/ping")


@pytest.fixture(scope="module", params=["models:/credit-risk@champion", "models:/credit-risk@sklearn"])
def service(request, registry):
    """The ONNX champion and the sklearn version (pyfunc): the same signature, two backends."""
    service = ScoringService(ServeSettings(model_uri=request.param, api_key=KEY))
    service.load()
    yield service
    service.close()


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as client:
        yield client


@pytest.fixture(scope="module")
def document(client) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _validator(document: dict, schema: dict) -> Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in ``document``."""
    return Draft202012Validator({**schema, "components": document["components"]})


def _fastapi(app) -> FastAPI:
    while not isinstance(app, FastAPI):  # create_app wraps the app in its middlewares
        app = app.app
    return app


def _url(path: str, operation: dict) -> str:
    """``path`` with each path parameter at its documented value (enum's first, or example)."""
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            schema = parameter["schema"]
            value = schema["enum"][0] if "enum" in schema else schema["example"]
            path = path.replace("{" + parameter["name"] + "}", value)
    return path


def test_the_document_is_valid_openapi_3_1(document):
    openapi_spec_validator.validate(document)
    assert document["openapi"].startswith("3.1")


def test_each_feature_is_listed_with_its_type_and_range(document):
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    features = body["properties"]["features"]
    assert list(features["properties"]) == FEATURES
    assert features["required"] == FEATURES  # a missing feature is null, which the row checks refuse
    for name, dtype in demo.FEATURE_TYPES.items():
        schema = features["properties"][name]
        assert (schema["type"], schema["format"]) == SCHEMA_TYPES[dtype], name
        declared = demo.FEATURE_RANGES.get(name, {})
        low, high = TYPE_RANGES.get(dtype, (None, None))
        if dtype == "float32":
            low, high = -float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)
        assert schema.get("minimum") == declared.get("min", low), name
        assert schema.get("maximum") == declared.get("max", high), name
        assert "null" not in str(schema["type"]), name


def test_the_other_dialects_name_the_same_features(document):
    mlflow = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    records = mlflow["examples"]["dataframe_records"]["value"]["dataframe_records"]
    assert list(records[0]) == FEATURES
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["examples"]["one tensor per feature"][
        "value"
    ]
    assert [t["name"] for t in example["inputs"]] == FEATURES
    assert infer["parameters"][0]["schema"]["enum"] == [demo.MODEL_NAME]


def test_every_route_of_the_app_is_documented(client, document):
    served = {
        (route.path, method.lower())
        for route in _fastapi(client.app).routes
        if route.path not in FASTAPI_ROUTES
        for method in route.methods
    }
    documented = {(path, method) for path, method, _ in _operations(document)}
    assert documented == served


def test_every_example_is_scored_as_documented(client, document):
    tried = 0
    for path, method, operation in _operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        for name, example in media.get("examples", {}).items():
            if path.startswith(("/predict/ensemble", "/predict/ab")):
                continue  # 404 here: this server has no ensemble and no A/B split
            answer = client.request(
                method, _url(path, operation), json=example["value"], headers={"x-api-key": KEY}
            )
            assert answer.status_code == 200, (path, name, answer.text)
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            _validator(document, schema).validate(answer.json())
            tried += 1
    assert tried >= 10


def test_the_ensemble_and_ab_routes_answer_404_without_a_lineup(client, document):
    for path in ("/predict/ensemble", "/predict/ab/batch"):
        operation = document["paths"][path]["post"]
        example = next(iter(operation["requestBody"]["content"]["application/json"]["examples"].values()))
        answer = client.post(path, json=example["value"], headers={"x-api-key": KEY})
        assert answer.status_code == 404
        _validator(document, operation["responses"]["404"]["content"]["application/json"]["schema"]).validate(
            answer.json()
        )


def test_text_routes_are_text(client, document):
    for path in TEXT_ROUTES:
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-type"].split(";")[0] == "text/plain", path
        # /metrics: exactly the exposition's type (its version says how Prometheus parses it).
        assert list(content) == [answer.headers["content-type"] if path == "/metrics" else "text/plain"], path
    assert client.get("/metrics").headers["content-type"] in (CONTENT_TYPE_LATEST, CONTENT_TYPE_PLAIN_0_0_4)
    assert client.get("/ping").text == "\n"


def test_keyed_routes_refuse_a_request_without_the_key_as_documented(client, document):
    for path, method, operation in _operations(document):
        url = _url(path, operation)
        if "security" not in operation:
            assert client.request(method, url).status_code != 401, path
            continue
        assert operation["security"] == [{"apiKey": []}, {"bearer": []}], path
        answer = client.request(method, url, json={})
        assert answer.status_code == 401, (path, answer.text)
        schema = operation["responses"]["401"]["content"]["application/json"]["schema"]
        _validator(document, schema).validate(answer.json())
    answer = client.get("/model/info", headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200


def test_every_error_is_json_and_v2_errors_are_error_alone(document):
    v2_error = document["components"]["schemas"]["V2Error"]
    assert v2_error["additionalProperties"] is False and v2_error["required"] == ["error"]
    for path, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or path == "/ping":  # MLflow's /ping is an empty line, loaded or not
                continue
            assert list(response["content"]) == ["application/json"], (path, status)
            if path.startswith("/v2") and path != "/v2/health/ready":  # its 503 is {"ready": false}
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/V2Error"
                }


def test_the_document_of_a_server_still_loading_lists_every_route(document):
    loading = ScoringService(ServeSettings(model_uri="models:/credit-risk@champion"))
    early = openapi.openapi_document(FastAPI(title="scoring"), loading)
    assert set(early["paths"]) == set(document["paths"])
    assert "security" in early["paths"]["/predict"]["post"]  # no key: optional, the {} requirement
    assert {} in early["paths"]["/predict"]["post"]["security"]


@pytest.mark.parametrize(
    ("feature", "low", "high"),
    [
        (Feature("x", "integer", 18.5, 120.9), 19, 120),
        (Feature("x", "long"), -(2**63), 2**63 - 1),
        (Feature("x", "double", 0.0, None), 0.0, None),
        (Feature("x", "boolean"), None, None),
        (Feature("x", "string"), None, None),
    ],
)
def test_feature_bounds_are_those_the_row_checks_accept(feature, low, high):
    assert openapi.feature_bounds(feature) == (low, high)


def test_float_bounds_move_inside_to_float32_values():
    # 0.7 narrows to 0.69999998 < 0.7: refused as out of range, so the bound is the next float32 up.
    low, high = openapi.feature_bounds(Feature("x", "float", 0.7, 0.7000001))
    assert low >= 0.7 and float(np.float32(low)) == low
    assert high <= 0.7000001 and float(np.float32(high)) == high


def test_examples_sit_inside_the_declared_ranges():
    assert openapi.example_value(Feature("x", "integer", None, -5)) == -5
    assert openapi.example_value(Feature("x", "double", None, 3.0)) == 0.0
    assert openapi.example_value(Feature("x", "float", 0.7)) >= 0.7
    assert openapi.example_value(Feature("x", "boolean")) is False


def test_the_docs_page_serves_the_document(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text


def test_the_document_is_built_once_per_lineup(service, monkeypatch):
    document = openapi.openapi_for(FastAPI(title="scoring"), service)
    first = document()
    assert document() is first
    # A reload that swaps the lineup (a new Roster): the document is built again, for the new models.
    swapped = dataclasses.replace(service.roster())
    monkeypatch.setattr(service, "roster", lambda: swapped)
    assert document() is not first and document() == first
