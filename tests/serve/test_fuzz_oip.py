"""Hypothesis over Open Inference Protocol infer requests, valid and broken, over HTTP and over gRPC.

A request starts valid (one tensor per feature, or one [N, F] tensor, JSON data flat or nested, gRPC
contents typed or raw) and is then broken in the ways clients break it: a wrong JSON type at any field,
nested or ragged data, shape and data that disagree, huge or negative or overflowing shapes, unknown
datatypes, BYTES where numbers belong, parameters of the wrong type, no inputs, a tensor sent twice, the
binary extension's lengths wrong. Whatever comes, the server answers a client error or the scores:
never a 5xx (gRPC: never INTERNAL or UNKNOWN), every ``/v2`` error body is ``{"error": <str>}``, no
error repeats a tensor's values, and the server is still healthy after. A request left valid is scored.

In process: the ASGI app through ``TestClient`` and a gRPC server on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from scoring import demo
from scoring.serve import oip
from scoring.serve.grpc_api import start_grpc_server
from scoring.serve.http import create_app
from scoring.serve.pb import inference_pb2, inference_pb2_grpc
from scoring.serve.served_model import ServeSettings
from scoring.serve.service import ScoringService

MODEL_URI = "models:/credit-risk@champion"
MODEL = demo.MODEL_NAME
KEY = "oip-fuzz-key"
MAX_RECORDS = 64
MAX_BODY = 256 * 1024
EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5_000,  # ms per request: a refusal takes microseconds, scoring a few milliseconds
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
TIMEOUT = 10
# Put into tensors' data only: an error that holds one of them repeated a request's values.
SECRET_TEXT = "s3cr3t-f00d"
SECRET_NUMBER = 7777777.25
SECRETS = (SECRET_TEXT, "7777777")

# The demo model's features: the datatype a client sends each as, and values its row checks accept.
DATATYPES = {"int32": "INT32", "int64": "INT64", "float32": "FP32", "float64": "FP64"}
FEATURES = list(demo.FEATURE_TYPES)
PROTOCOL_DATATYPES = list(oip.DATATYPES)
GRPC_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _datatype(name: str) -> str:
    return DATATYPES[demo.FEATURE_TYPES[name]]


def _valid_values(name: str) -> st.SearchStrategy:
    """Values of feature ``name`` that its declared range (or a plausible one) holds."""
    bounds = demo.FEATURE_RANGES.get(name, {})
    low, high = bounds.get("min", 0), bounds.get("max", 1_000)
    if _datatype(name).startswith("INT"):
        return st.integers(int(low), int(high))
    width = 32 if _datatype(name) == "FP32" else 64
    return st.floats(low, high, width=width, allow_subnormal=False)


# --- JSON requests --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
# Shapes that overflow, go negative, or promise more elements than any body can hold.
odd_dimensions = st.sampled_from([-1, -(2**63), 0, 2**31, 2**32, 2**61, 2**63 - 1, 2**63, 2**64, 10**30])


@st.composite
def valid_json_request(draw) -> tuple[dict, int]:
    """A valid infer request and its number of rows."""
    rows = draw(st.integers(1, 4))
    columns = {name: draw(st.lists(_valid_values(name), min_size=rows, max_size=rows)) for name in FEATURES}
    if draw(st.booleans()):  # one tensor per feature, [N] or [N, 1]
        inputs = []
        for name in FEATURES:
            column = columns[name]
            shape, data = ([rows], column) if draw(st.booleans()) else ([rows, 1], [[v] for v in column])
            inputs.append({"name": name, "datatype": _datatype(name), "shape": shape, "data": data})
    else:  # one [N, F] tensor, rows nested or flat
        matrix = [[columns[name][r] for name in FEATURES] for r in range(rows)]
        data = matrix if draw(st.booleans()) else [v for row in matrix for v in row]
        inputs = [{"name": "features", "datatype": "FP64", "shape": [rows, len(FEATURES)], "data": data}]
    body: dict = {"inputs": draw(st.permutations(inputs))}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        body["outputs"] = [
            {"name": name} for name in draw(st.sampled_from([["prediction"], ["probability"]]))
        ]
    return body, rows


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON value: the keys and indices that lead to it."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


def _replace(value: object, path: tuple, new: object) -> object:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _flat(data: object) -> list:
    """A tensor's JSON data, one level of nesting undone (what the breakers start from)."""
    if not isinstance(data, list):
        return []
    return [v for row in data for v in (row if isinstance(row, list) else [row])]


# Each breaker takes the draw, the body and one of its tensors (changed in place), and gives the body.
def _wrong_type(draw, body: dict, tensor: dict) -> object:
    return _replace(body, draw(st.sampled_from(_paths(body))), draw(json_values))


def _nested(draw, body: dict, tensor: dict) -> dict:
    tensor["data"] = [[[v]] for v in _flat(tensor.get("data"))]
    return body


def _ragged(draw, body: dict, tensor: dict) -> dict:
    flat = _flat(tensor.get("data"))
    cut = draw(st.integers(0, len(flat)))
    tensor["data"] = [flat[:cut], [*flat[cut:], flat[:1]]]
    return body


def _mismatch(draw, body: dict, tensor: dict) -> dict:
    flat = _flat(tensor.get("data"))
    tensor["data"] = flat[: draw(st.integers(0, max(len(flat) - 1, 0)))] or flat + flat
    return body


def _odd_shape(draw, body: dict, tensor: dict) -> dict:
    tensor["shape"] = draw(st.lists(odd_dimensions | st.integers(-3, 9), max_size=3))
    return body


def _unknown_datatype(draw, body: dict, tensor: dict) -> dict:
    tensor["datatype"] = draw(st.text(max_size=6) | st.sampled_from(["fp64", "FP128", "STRING", "INT"]))
    return body


def _bytes_for_numbers(draw, body: dict, tensor: dict) -> dict:
    flat = _flat(tensor.get("data"))
    tensor["datatype"] = "BYTES"
    tensor["data"] = draw(st.sampled_from([flat, [str(v) for v in flat], [SECRET_TEXT] * len(flat)]))
    return body


def _out_of_range(draw, body: dict, tensor: dict) -> dict:
    """Values of the tensor's datatype the row checks refuse (a 422, if nothing else is wrong)."""
    bad = st.sampled_from([None, -1, -(2**40), 2**40, 1e300, float("nan"), float("inf"), SECRET_NUMBER])
    tensor["data"] = [draw(bad) for _ in _flat(tensor.get("data"))]
    return body


def _secret(draw, body: dict, tensor: dict) -> dict:
    tensor["data"] = [draw(st.sampled_from([SECRET_NUMBER, SECRET_TEXT])) for _ in _flat(tensor.get("data"))]
    return body


def _parameters(draw, body: dict, tensor: dict) -> dict:
    key = draw(st.sampled_from(["binary_data_output", "binary_data_size", "binary_data", "classification"]))
    parameters = draw(json_values | st.fixed_dictionaries({key: json_values}))
    (body if draw(st.booleans()) else tensor)["parameters"] = parameters
    return body


def _no_inputs(draw, body: dict, tensor: dict) -> dict:
    return {**body, "inputs": []}


def _twice(draw, body: dict, tensor: dict) -> dict:
    return {**body, "inputs": [*body["inputs"], dict(tensor)]}


def _missing_key(draw, body: dict, tensor: dict) -> dict:
    tensor.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
    return body


def _outputs(draw, body: dict, tensor: dict) -> dict:
    names = st.sampled_from(["prediction", "probability", "label"]) | json_values
    return {
        **body,
        "outputs": draw(st.lists(st.fixed_dictionaries({"name": names}), max_size=3) | json_values),
    }


JSON_BREAKERS = [_wrong_type, _nested, _ragged, _mismatch, _odd_shape, _unknown_datatype, _bytes_for_numbers,
                 _out_of_range, _secret, _parameters, _no_inputs, _twice, _missing_key, _outputs]  # fmt: skip


def _break_json(draw, body: object) -> object:
    """``body`` broken in one of the ways clients break infer requests."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    tensors = [t for t in inputs if isinstance(t, dict)] if isinstance(inputs, list) else []
    if not tensors:  # broken past the tensors already: any JSON at any place
        return _replace(body, draw(st.sampled_from(_paths(body))), draw(json_values))
    return draw(st.sampled_from(JSON_BREAKERS))(draw, body, draw(st.sampled_from(tensors)))


@st.composite
def json_request(draw) -> tuple[object, int | None]:
    """An infer request, valid (with its rows) or broken one to three times (rows None)."""
    body, rows = draw(valid_json_request())
    body = json.loads(json.dumps(body))  # a deep copy: the breakers change tensors in place
    breaks = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))  # one valid request in six
    for _ in range(breaks):
        body = _break_json(draw, body)
    return body, rows if breaks == 0 else None


def _binary(body: dict) -> tuple[bytes, dict]:
    """``body`` in the binary tensor data extension: each input's data as raw bytes after the JSON."""
    tails = []
    for tensor in body["inputs"]:
        dtype = {"INT32": "<i4", "INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}[tensor["datatype"]]
        raw = np.asarray(tensor.pop("data"), dtype=dtype).reshape(-1).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        tails.append(raw)
    header = json.dumps(body).encode()
    return header + b"".join(tails), {"inference-header-content-length": str(len(header))}


# --- gRPC requests --------------------------------------------------------------------------------

_CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_CONTENT_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats() | st.just(SECRET_NUMBER),
    "bytes_contents": st.binary(max_size=6) | st.just(SECRET_TEXT.encode()) | st.just(b"\xff\xfe"),
}
_RAW = {"INT32": "<i4", "INT64": "<i8", "FP32": "<f4", "FP64": "<f8"}
grpc_parameters = st.dictionaries(
    st.sampled_from(["binary_data_output", "binary_data_size", "binary_data", "classification", "x"]),
    st.one_of(
        st.builds(inference_pb2.InferParameter, bool_param=st.booleans()),
        st.builds(inference_pb2.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
        st.builds(inference_pb2.InferParameter, string_param=st.text(max_size=4)),
    ),
    max_size=2,
)


@st.composite
def valid_grpc_request(draw) -> tuple[inference_pb2.ModelInferRequest, int]:
    """A valid ModelInferRequest (typed contents or raw bytes, per feature or one matrix) and its rows."""
    rows = draw(st.integers(1, 4))
    columns = {name: draw(st.lists(_valid_values(name), min_size=rows, max_size=rows)) for name in FEATURES}
    raw = draw(st.booleans())
    request = inference_pb2.ModelInferRequest(model_name=MODEL, id=draw(st.text(max_size=4)))
    if draw(st.booleans()):
        tensors = [(name, _datatype(name), [rows], columns[name]) for name in FEATURES]
    else:
        flat = [float(columns[name][r]) for r in range(rows) for name in FEATURES]
        tensors = [("features", "FP64", [rows, len(FEATURES)], flat)]
    for name, datatype, shape, values in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(np.asarray(values, dtype=_RAW[datatype]).tobytes())
        else:
            getattr(tensor.contents, _CONTENT_FIELDS[datatype]).extend(values)
    return request, rows


# Each breaker changes the request (and one of its tensors) in place.
Request = inference_pb2.ModelInferRequest
Input = inference_pb2.ModelInferRequest.InferInputTensor


def _grpc_datatype(draw, request: Request, tensor: Input) -> None:
    tensor.datatype = draw(st.sampled_from(PROTOCOL_DATATYPES) | st.text(max_size=5))


def _grpc_shape(draw, request: Request, tensor: Input) -> None:
    int64 = st.integers(-(2**63), 2**63 - 1)
    tensor.shape[:] = draw(
        st.lists(int64 | odd_dimensions.filter(lambda d: -(2**63) <= d < 2**63), max_size=3)
    )


def _grpc_contents(draw, request: Request, tensor: Input) -> None:
    """Values in another contents field than the datatype's (or more of them in its own)."""
    field = draw(st.sampled_from(sorted(_CONTENT_VALUES)))
    getattr(tensor.contents, field).extend(draw(st.lists(_CONTENT_VALUES[field], max_size=5)))


def _grpc_raw(draw, request: Request, tensor: Input) -> None:
    """Raw bytes of the wrong length, one entry too many, or raw bytes beside contents."""
    if not request.raw_input_contents:
        request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=16), min_size=1, max_size=3)))
        return
    how = draw(st.sampled_from(["length", "count", "and contents"]))
    if how == "length":
        request.raw_input_contents[0] = draw(st.binary(max_size=40))
    elif how == "count":
        request.raw_input_contents.append(draw(st.binary(max_size=8)))
    else:
        tensor.contents.fp64_contents.append(SECRET_NUMBER)


def _grpc_bytes(draw, request: Request, tensor: Input) -> None:
    """A BYTES tensor where numbers belong: text (or not UTF-8), or raw BYTES cut short."""
    tensor.datatype = "BYTES"
    if request.raw_input_contents:
        cut_short = struct.pack("<I", 2**31) + SECRET_TEXT.encode()
        request.raw_input_contents[0] = draw(st.binary(max_size=16)) + cut_short
    else:
        tensor.contents.Clear()
        tensor.contents.bytes_contents.extend(draw(st.lists(_CONTENT_VALUES["bytes_contents"], max_size=5)))


def _grpc_out_of_range(draw, request: Request, tensor: Input) -> None:
    """Values the row checks refuse, in the tensor's own contents field (a 422 over HTTP)."""
    field = _CONTENT_FIELDS.get(tensor.datatype)
    if field is None or request.raw_input_contents:
        return
    values = getattr(tensor.contents, field)
    bad = {"fp64_contents": SECRET_NUMBER, "fp32_contents": float("nan")}.get(field, -1)
    values[:] = [bad] * len(values)


def _grpc_parameters(draw, request: Request, tensor: Input) -> None:
    for key, value in draw(grpc_parameters).items():
        (request if draw(st.booleans()) else tensor).parameters[key].CopyFrom(value)


def _grpc_no_inputs(draw, request: Request, tensor: Input) -> None:
    del request.inputs[:]


def _grpc_twice(draw, request: Request, tensor: Input) -> None:
    request.inputs.add().CopyFrom(tensor)
    if request.raw_input_contents:
        request.raw_input_contents.append(request.raw_input_contents[0])


def _grpc_outputs(draw, request: Request, tensor: Input) -> None:
    names = st.sampled_from(["prediction", "probability", "label", ""]) | st.text(max_size=4)
    for name in draw(st.lists(names, max_size=3)):
        request.outputs.add(name=name)


def _grpc_model(draw, request: Request, tensor: Input) -> None:
    request.model_name = draw(st.sampled_from([MODEL, "", "other"]) | st.text(max_size=5))
    request.model_version = draw(st.sampled_from(["", "1", "2", "99"]) | st.text(max_size=3))


GRPC_BREAKERS = [_grpc_datatype, _grpc_shape, _grpc_contents, _grpc_raw, _grpc_bytes, _grpc_out_of_range,
                 _grpc_parameters, _grpc_no_inputs, _grpc_twice, _grpc_outputs, _grpc_model]  # fmt: skip


def _break_grpc(draw, request: Request) -> None:
    """``request`` broken in place in one of the ways clients break it."""
    if not request.inputs:
        request.inputs.add(name=draw(st.text(max_size=4)), datatype=draw(st.sampled_from(PROTOCOL_DATATYPES)))
    tensor = request.inputs[draw(st.integers(0, len(request.inputs) - 1))]
    draw(st.sampled_from(GRPC_BREAKERS))(draw, request, tensor)


@st.composite
def grpc_request(draw) -> tuple[inference_pb2.ModelInferRequest, int | None]:
    """A ModelInferRequest, valid (with its rows) or broken one to three times (rows None)."""
    request, rows = draw(valid_grpc_request())
    breaks = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))  # one valid request in six
    for _ in range(breaks):
        _break_grpc(draw, request)
    return request, rows if breaks == 0 else None


# --- Fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(registry):
    service = ScoringService(
        ServeSettings(model_uri=MODEL_URI, api_key=KEY, max_records=MAX_RECORDS, max_body_bytes=MAX_BODY)
    )
    service.load()
    yield service
    service.close()


@pytest.fixture(scope="module")
def http(service):
    with TestClient(create_app(service), headers={"x-api-key": KEY}) as client:
        yield client


@pytest.fixture(scope="module")
def inference(service):
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    server.stop(grace=None)


# --- Checks ---------------------------------------------------------------------------------------


def _check_http_answer(answer, rows: int | None) -> None:
    event(f"HTTP {answer.status_code}")  # the spread of answers, in --hypothesis-show-statistics
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code >= 400:
        body = answer.json()
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str), body
        assert not any(secret in answer.text for secret in SECRETS), body
    elif answer.headers["content-type"].startswith("application/json"):
        _check_scores(answer.json(), rows)
    if rows is not None:
        assert answer.status_code == 200, answer.text


def _check_scores(body: dict, rows: int | None) -> None:
    assert body["model_name"] == MODEL
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs and set(outputs) <= {"prediction", "probability"}
    if rows is not None:
        assert all(o["shape"] == [rows] and len(o["data"]) == rows for o in outputs.values())


@given(json_request())
@FUZZ
def test_http_infer_answers_a_client_error_or_the_scores(http, request_and_rows):
    body, rows = request_and_rows
    # Python's json writes (and the server's json reads) NaN and Infinity, which clients send too.
    content = json.dumps(body).encode()
    note(f"body: {content[:2000]!r}")
    answer = http.post(
        f"/v2/models/{MODEL}/infer", content=content, headers={"content-type": "application/json"}
    )
    _check_http_answer(answer, rows)


@given(valid_json_request(), st.integers(0, 2), st.integers(-40, 40), st.binary(max_size=12))
@FUZZ
def test_http_binary_tensors_with_wrong_lengths_are_refused(http, request_and_rows, how, shift, tail):
    body, rows = request_and_rows
    content, headers = _binary(json.loads(json.dumps(body)))
    if how == 1:  # the header's length off
        headers["inference-header-content-length"] = str(
            int(headers["inference-header-content-length"]) + shift
        )
    elif how == 2:  # bytes missing or left over
        content = content[: len(content) + shift] if shift < 0 else content + tail
    intact = {0: True, 1: shift == 0, 2: shift >= 0 and not tail}[how]
    note(f"headers: {headers}, body: {content[:2000]!r}")
    answer = http.post(f"/v2/models/{MODEL}/infer", content=content, headers=headers)
    _check_http_answer(answer, rows if intact else None)


@given(grpc_request())
@FUZZ
def test_grpc_infer_answers_a_client_error_or_the_scores(inference, request_and_rows):
    request, rows = request_and_rows
    note(f"request: {request}")
    try:
        response = inference.ModelInfer(request, metadata=[("x-api-key", KEY)], timeout=TIMEOUT)
    except grpc.RpcError as e:
        event(e.code().name)
        assert e.code() in GRPC_REFUSALS, (e.code(), e.details())
        assert not any(secret in (e.details() or "") for secret in SECRETS), e.details()
        assert rows is None, e.details()
        return
    event("OK")
    assert response.model_name == MODEL and response.outputs
    if rows is not None:
        assert all(list(o.shape) == [rows] for o in response.outputs)


def test_the_server_is_healthy_after_the_fuzzing(http, inference):
    assert http.get("/v2/health/ready").json() == {"ready": True}
    valid = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": [1, 8],
                "data": [30, 1e4, 0.2, 3, 0.5, 0, 12, 1],
            }
        ]
    }
    assert http.post(f"/v2/models/{MODEL}/infer", json=valid).status_code == 200
    assert inference.ServerReady(inference_pb2.ServerReadyRequest(), timeout=TIMEOUT).ready
    request = inference_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="features", datatype="FP64", shape=[1, 8]).contents.fp64_contents.extend(
        valid["inputs"][0]["data"]
    )
    assert inference.ModelInfer(request, metadata=[("x-api-key", KEY)], timeout=TIMEOUT).outputs
