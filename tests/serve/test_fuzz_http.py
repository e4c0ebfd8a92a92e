"""Schemathesis over the server's own ``/openapi.json``: every route, valid and invalid requests.

The document (``scoring.serve.openapi``) is built from the served model's signature, so the requests
schemathesis derives from it reach the model: positive cases are records the row checks accept, negative
cases break one rule of the schema. Every answer must be one the document lists, in the content type and
with the body and headers it says, and none may be a server error; the server must be ready after all
of them, and the fuzzing must have reached the model (scores, refused records, refused bodies).

In process (the ASGI app, no sockets, a lineup of two models blended and split) for speed; then one real
``scoring serve`` of the champion alone over HTTP, fewer cases.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servers import start_server

from scoring.lineup import Lineup
from scoring.serve.http import create_app
from scoring.serve.served_model import ServeSettings
from scoring.serve.service import ScoringService

MODEL_URI = "models:/credit-risk@champion"
KEY = "fuzz-key"
HEADERS = {"x-api-key": KEY}
# Small limits, so that the 413s are within reach of the bodies schemathesis makes.
MAX_RECORDS = 50
MAX_BODY = 64 * 1024
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Cases per operation and phase (27 operations): bounded for CI, about half a minute in process.
EXAMPLES = 40
REAL_EXAMPLES = 8
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
# Each operation's answers by status, over the in-process run: what the fuzzing reached.
ANSWERS: Counter[tuple[str, int]] = Counter()


def _config(examples: int, coverage: bool = True) -> schemathesis.Config:
    """Positive and negative cases, ``examples`` per operation, the API key on every request.

    Args:
        examples: Cases per operation in the fuzzing phase.
        coverage: Whether to run the coverage phase too (each schema rule broken in turn: hundreds of
            cases per operation, whatever ``examples`` says).
    """
    return schemathesis.Config.from_dict(
        {
            "generation": {"mode": "all", "max-examples": examples},
            "headers": HEADERS,
            "phases": {"coverage": {"enabled": coverage}},
        }
    )


@pytest.fixture(autouse=True)
def _node_id(request):
    # schemathesis 4.32's lazy schemas read pytest's old ``Node._nodeid``, which pytest 9 no longer has.
    request.node._nodeid = request.node.nodeid


# The ONNX champion and the sklearn version as a challenger, blended and split: every route has a model.
LINEUP = Lineup(
    challengers=(("sklearn", "models:/credit-risk@sklearn"),),
    ensemble=(("champion", 0.5), ("sklearn", 0.5)),
    ab=(("champion", 0.5), ("sklearn", 0.5)),
    ab_salt="fuzz",
)


@pytest.fixture(scope="module")
def service(registry):
    limits = {"max_records": MAX_RECORDS, "max_body_bytes": MAX_BODY}
    service = ScoringService(ServeSettings(model_uri=MODEL_URI, lineup=LINEUP, api_key=KEY, **limits))
    service.load()
    yield service
    service.close()


@pytest.fixture(scope="module")
def app(service):
    return create_app(service)


@pytest.fixture(scope="module")
def asgi_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(EXAMPLES))


@pytest.fixture(scope="module")
def real_server(registry):
    limits = ("--max-records", str(MAX_RECORDS), "--max-body-bytes", str(MAX_BODY))
    server = start_server(MODEL_URI, *limits, env={"SCORING_API_KEY": KEY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url_schema(real_server):
    return schemathesis.openapi.from_url(
        f"{real_server.http}/openapi.json", config=_config(REAL_EXAMPLES, coverage=False)
    )


in_process = schemathesis.pytest.from_fixture("asgi_schema")
over_http = schemathesis.pytest.from_fixture("url_schema")


@in_process.parametrize()
@FUZZ
def test_every_route_answers_as_documented(case):
    response = case.call(headers=HEADERS)
    ANSWERS[(case.operation.path, response.status_code)] += 1  # counted whether or not it conforms
    case.validate_response(response, checks=CHECKS, headers=HEADERS)


# What the in-process fuzzing must have met: scores, refused bodies, refused records (and a body too big).
REACHED = [
    ("/predict", 200),
    ("/predict", 400),
    ("/predict", 422),
    ("/invocations", 200),
    ("/predict/ensemble", 200),
    ("/predict/ab/batch", 200),
    ("/predict/{model}", 200),
    ("/v2/models/{name}/infer", 200),
    ("/v2/models/{name}/infer", 400),
]


def test_the_fuzzing_reached_the_model_and_left_it_ready(app):
    for expected in REACHED:
        assert expected in ANSWERS, (expected, sorted(ANSWERS.items()))
    assert any(status == 413 for _, status in ANSWERS), sorted(ANSWERS.items())  # a body over the limit
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}


@over_http.parametrize()
@settings(FUZZ, max_examples=REAL_EXAMPLES)
def test_a_real_server_answers_as_documented(case):
    case.call_and_validate(headers=HEADERS, checks=CHECKS)


def test_the_real_server_is_ready_after_the_fuzzing(real_server):
    assert httpx.get(f"{real_server.http}/ready", timeout=10).status_code == 200
    assert real_server.process.poll() is None
