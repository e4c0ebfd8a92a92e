"""Malformed requests and overload: 4xx naming the field, 503 at once, never a 5xx.

A real ``scoring serve`` on 127.0.0.1 with ``--max-queue 1``, so that one request whose body never
ends fills the worker and the admission's 503 is certain, not a matter of timing; over gRPC, an
in-process server whose model waits on a gate holds the one request instead.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from servers import Server, start_server

from scoring import demo
from scoring.serve.grpc_api import start_grpc_server
from scoring.serve.pb import inference_pb2, inference_pb2_grpc, prediction_pb2, prediction_pb2_grpc
from scoring.serve.served_model import ServedModel, ServeSettings, load_served_model
from scoring.serve.service import ScoringService

MODEL = "models:/credit-risk@champion"
INFER = "/v2/models/credit-risk/infer"
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(registry) -> Iterator[Server]:
    server = start_server(MODEL, "--max-queue", "1")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def record() -> dict:
    import datetime as dt

    frame = demo.make_customers(1, dt.date(2026, 11, 1), seed=3)
    return {name: frame[name].iloc[0].item() for name in demo.FEATURE_TYPES}


def test_the_issues_malformed_tensor_is_a_400_naming_the_field(http):
    body = {"id": "", "inputs": [{"data": [], "datatype": {}, "name": "", "parameters": {}, "shape": []}],
            "outputs": [], "parameters": {}}  # fmt: skip
    answer = http.post(INFER.replace("/infer", "/versions/2/infer"), json=body)
    assert answer.status_code == 400
    assert (
        answer.json() == {"error": answer.json()["error"]} and "inputs[0].datatype" in answer.json()["error"]
    )


def _tensor(**changes: object) -> dict:
    """One valid JSON input tensor (the feature ``age``), with ``changes``."""
    return {"name": "age", "datatype": "FP64", "shape": [1], "data": [40], **changes}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": "x"}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [_tensor(data=[[1, [2]]])]}, "inputs[0]"),
        ({"inputs": [_tensor(shape=[-1])]}, "inputs[0].shape"),
        ({"inputs": [_tensor(shape=[True])]}, "inputs[0].shape"),
        ({"inputs": [_tensor(shape=[2**40, 2**40], data=[])]}, "inputs[0].shape"),
        ({"inputs": [_tensor(data=[{"v": 1}])]}, "inputs[0].data"),
        ({"inputs": [_tensor(datatype="INT64", data=["7"])]}, "inputs[0].data"),
        ({"inputs": [_tensor(parameters=3)]}, "inputs[0].parameters"),
        ({"inputs": [_tensor(parameters={"binary_data_size": "8"})]}, "binary_data_size"),
        ({"inputs": [_tensor()], "parameters": {"binary_data_output": "yes"}}, "binary_data_output"),
        ({"inputs": [_tensor(), _tensor()]}, "sent twice"),
        ({"inputs": [_tensor(name="nope")]}, "no feature"),
        ({"inputs": [_tensor()], "id": 5}, "id"),
        ({"inputs": [_tensor()], "outputs": [{}]}, "outputs[0].name"),
        ({"inputs": [_tensor()], "outputs": [{"name": "nope"}]}, "outputs"),
    ],
)
def test_malformed_infer_requests_are_400s_naming_the_field(http, body, field):
    answer = http.post(INFER, content=json.dumps(body))
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == ["error"] and field in answer.json()["error"]


def test_every_v2_error_is_the_protocols_error_object(http):
    for method, path in (("GET", "/v2/nope"), ("POST", "/v2/repository/index"), ("GET", "/nope"),
                         ("DELETE", "/v2/models/credit-risk")):  # fmt: skip
        answer = http.request(method, path)
        assert answer.status_code in (404, 405) and list(answer.json()) == ["error"], (method, path)
    answer = http.get("/v2/models/other")
    assert answer.status_code == 404 and list(answer.json()) == ["error"]


def test_a_value_is_never_echoed(http, record):
    secret = "s3cret-value-9431"
    tensor = {"name": "income", "datatype": "BYTES", "shape": [1], "data": [secret]}
    answer = http.post(INFER, json={"inputs": [tensor]})
    assert answer.status_code in (400, 422) and secret not in answer.text
    answer = http.post(INFER, json={"inputs": [{**tensor, "datatype": "FP64"}]})
    assert answer.status_code == 400 and secret not in answer.text


def test_binary_tensors_in_and_out(http, record):
    """The binary extension as tritonclient.http lays it out, with one JSON input beside it."""
    import numpy as np

    names = list(demo.FEATURE_TYPES)
    values = np.array([[float(record[n]) for n in names]] * 3)
    header = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": list(values.shape),
                "parameters": {"binary_data_size": values.nbytes},
            }
        ],
        "outputs": [{"name": "probability", "parameters": {"binary_data": True}}, {"name": "prediction"}],
    }
    encoded = json.dumps(header).encode()
    binary = {"inference-header-content-length": str(len(encoded))}
    answer = http.post(INFER, content=encoded + values.astype("<f8").tobytes(), headers=binary)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    head = json.loads(answer.content[:length])
    probability, prediction = head["outputs"]
    assert probability["parameters"]["binary_data_size"] == 3 * 8 and "data" not in probability
    assert len(prediction["data"]) == 3  # asked for without binary_data: JSON
    got = np.frombuffer(answer.content[length:], dtype="<f8")
    plain = http.post("/predict", json={"features": record}).json()["probability"]
    assert np.allclose(got, plain, atol=1e-12, rtol=0)
    # Bytes left over, or too few: refused, naming the field.
    for extra, field in ((b"\0" * 8, "binary data"), (b"", "binary_data_size")):
        body = encoded + values.astype("<f8").tobytes()[: values.nbytes - (8 if not extra else 0)] + extra
        answer = http.post(INFER, content=body, headers=binary)
        assert answer.status_code == 400 and field in answer.json()["error"]


def _hold_one_request(server: Server) -> socket.socket:
    """Open a scoring request whose body never finishes: the worker holds it (``--max-queue 1``)."""
    where = urlsplit(server.http)
    held = socket.create_connection((where.hostname, where.port), timeout=TIMEOUT)
    head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000"
    held.sendall(head + b"\r\n\r\n{")
    return held


def _post_until(http: httpx.Client, record: dict, status: int, seconds: float = TIMEOUT) -> httpx.Response:
    """``POST /predict`` until it answers ``status``, or ``seconds`` pass (the last answer).

    Polled by time, not a count of tries: on a busy machine the server may take a while to take up
    the held request (or to let it go), and a fast loop runs out of tries before it does.
    """
    deadline = time.monotonic() + seconds
    while True:
        answer = http.post("/predict", json={"features": record})
        if answer.status_code == status or time.monotonic() > deadline:
            return answer


def test_a_full_worker_answers_503_with_retry_after_at_once(server, http, record):
    # The held request is admitted once uvicorn hands it to the app: poll until the bound is hit. A
    # fresh clone's run once polled 30 s without the server taking a held connection up (5 runs here
    # since all passed): a connection not taken up in 10 s is replaced, three times at most; a server
    # that never counts a held request still fails.
    for _ in range(3):
        held = _hold_one_request(server)
        answer = _post_until(http, record, 503, seconds=TIMEOUT / 3)
        if answer.status_code == 503:
            break
        held.close()
    try:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert list(answer.json()) == ["error"]
        # Probes and metadata are never shed.
        assert http.get("/ready").status_code == 200 and http.get("/metrics").status_code == 200
    finally:
        held.close()
    assert _post_until(http, record, 200).status_code == 200


class _Gate:
    """A predictor that scores only once the gate opens: requests stay held, not timed."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self.entered = threading.Event()
        self.open = threading.Event()

    def predict(self, frame):
        self.entered.set()
        assert self.open.wait(TIMEOUT)
        return self._predictor.predict(frame)


def test_grpc_beyond_the_bound_is_resource_exhausted(registry, record):
    gates = []

    def gated(settings: ServeSettings) -> ServedModel:
        served = load_served_model(settings)
        gates.append(_Gate(served.predictor))
        return dataclasses.replace(served, predictor=gates[-1])

    service = ScoringService(ServeSettings(model_uri=MODEL, max_queue=1), loader=gated)
    service.load()
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    request = prediction_pb2.PredictRequest(id="1", features=_grpc_features(record))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, ThreadPoolExecutor(1) as pool:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            held = pool.submit(stub.Predict, request, timeout=TIMEOUT)
            assert gates[0].entered.wait(TIMEOUT)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            gates[0].open.set()
            assert held.result().model_version == "2"
            # Not full any more: a malformed request is refused for what it is.
            tensor = inference_pb2.ModelInferRequest.InferInputTensor(name="age", datatype="NOPE", shape=[1])
            malformed = inference_pb2.ModelInferRequest(model_name="credit-risk", inputs=[tensor])
            with pytest.raises(grpc.RpcError) as refused:
                inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(malformed, timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "datatype" in refused.value.details()
    finally:
        gates[0].open.set()
        server.stop(grace=None)
        service.close()


def _grpc_features(record: dict) -> dict[str, prediction_pb2.FeatureValue]:
    def value(v: object) -> prediction_pb2.FeatureValue:
        if isinstance(v, str):
            return prediction_pb2.FeatureValue(string_value=v)
        if isinstance(v, int):
            return prediction_pb2.FeatureValue(int_value=v)
        return prediction_pb2.FeatureValue(number_value=float(v))

    return {name: value(v) for name, v in record.items()}
