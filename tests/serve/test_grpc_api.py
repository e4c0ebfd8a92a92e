"""The gRPC side against a real server on 127.0.0.1: PredictionService, Open Inference Protocol, health.

Every test talks over a real channel to a server started by ``start_grpc_server`` on the demo classifier
(the ONNX ``champion``), and checks the answers against the model's own scores of the typed frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import grpc
import numpy as np
import pandas as pd
import pytest
from conftest import DATE, features
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring import demo
from scoring.serve import oip
from scoring.serve.grpc_api import (
    INFERENCE_SERVICE,
    INTERNAL_MESSAGE,
    PREDICTION_SERVICE,
    start_grpc_server,
)
from scoring.serve.pb import inference_pb2, inference_pb2_grpc, prediction_pb2, prediction_pb2_grpc
from scoring.serve.served_model import ServeSettings, load_served_model
from scoring.serve.service import ScoringService

MODEL_URI = "models:/credit-risk@champion"
ROWS = 1_000
MAX_BODY = 1024 * 1024
MAX_RECORDS = 1_500
TIMEOUT = 10
# Little-endian numpy types of the datatypes the answers use.
RAW = {"INT64": "<i8", "FP64": "<f8"}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return demo.make_customers(ROWS, DATE, seed=3)


@pytest.fixture(scope="module")
def service(registry):
    service = ScoringService(
        ServeSettings(model_uri=MODEL_URI, max_body_bytes=MAX_BODY, max_records=MAX_RECORDS)
    )
    service.load()
    yield service
    service.close()


@pytest.fixture(scope="module")
def address(service):
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(scope="module")
def channel(address):
    with grpc.insecure_channel(address) as channel:
        yield channel


@pytest.fixture(scope="module")
def predict(channel):
    return prediction_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def inference(channel):
    return inference_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def expected(service, rows):
    """The model's own scores of the typed frame: what every protocol must answer."""
    return service.served.predictor.predict(features(rows))


def _value(value: object) -> prediction_pb2.FeatureValue:
    if value is None:
        return prediction_pb2.FeatureValue()
    if isinstance(value, bool):
        return prediction_pb2.FeatureValue(bool_value=value)
    if isinstance(value, int):
        return prediction_pb2.FeatureValue(int_value=value)
    if isinstance(value, float):
        return prediction_pb2.FeatureValue(number_value=value)
    return prediction_pb2.FeatureValue(string_value=value)


def _request(record_id: str, record: dict) -> prediction_pb2.PredictRequest:
    return prediction_pb2.PredictRequest(
        id=record_id, features={name: _value(v) for name, v in record.items()}
    )


def _records(frame: pd.DataFrame) -> list[dict]:
    # to_dict gives Python ints and floats (float32 widened exactly), as a JSON client sends them.
    return features(frame).to_dict("records")


def _batch(frame: pd.DataFrame) -> prediction_pb2.PredictBatchRequest:
    ids = frame["customer_id"].astype(str).tolist()
    return prediction_pb2.PredictBatchRequest(
        records=[_request(i, r) for i, r in zip(ids, _records(frame), strict=True)]
    )


def _error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=TIMEOUT, **kwargs)
    return caught.value


def _outputs(response: inference_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    assert not any(t.HasField("contents") for t in response.outputs)
    return {
        t.name: np.frombuffer(raw, RAW[t.datatype]).reshape(tuple(t.shape))
        for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def _assert_scores(prediction, probability, scores) -> None:
    np.testing.assert_array_equal(np.asarray(prediction), scores.prediction)
    np.testing.assert_allclose(
        np.asarray(probability, dtype=np.float64), scores.probability, rtol=0, atol=1e-9
    )


def _sample(registry_, name: str, **labels) -> float:
    return registry_.get_sample_value(name, labels) or 0.0


# --- scoring.v1.PredictionService -------------------------------------------------------------------


def test_predict_batch_answers_the_models_own_scores(predict, rows, expected, registry):
    response = predict.PredictBatch(_batch(rows), timeout=TIMEOUT)

    assert (response.model_name, response.model_version) == ("credit-risk", registry["onnx"])
    assert [p.id for p in response.predictions] == rows["customer_id"].astype(str).tolist()
    assert {p.prediction.WhichOneof("kind") for p in response.predictions} == {"int_value"}
    assert all(p.HasField("probability") and not p.class_probabilities for p in response.predictions)
    _assert_scores(
        [p.prediction.int_value for p in response.predictions],
        [p.probability for p in response.predictions],
        expected,
    )
    assert {(p.model_name, p.model_version) for p in response.predictions} == {
        ("credit-risk", registry["onnx"])
    }


def test_predict_scores_one_record(predict, rows, expected, registry):
    for i in (0, 1, ROWS - 1):
        response = predict.Predict(_request(f"r-{i}", _records(rows.iloc[[i]])[0]), timeout=TIMEOUT)
        assert (response.id, response.model_name, response.model_version) == (
            f"r-{i}",
            "credit-risk",
            registry["onnx"],
        )
        assert response.prediction.int_value == expected.prediction[i]
        assert abs(response.probability - expected.probability[i]) <= 1e-9


def test_features_in_any_order_with_extra_fields_ignored(predict, rows, expected):
    record = _records(rows.iloc[[5]])[0]
    shuffled = {"not_a_feature": "x", **dict(reversed(record.items())), "region": "north"}
    response = predict.Predict(_request("r", shuffled), timeout=TIMEOUT)
    assert abs(response.probability - expected.probability[5]) <= 1e-9


# Each bad-input class of the batch quarantine: (what is done to the record, reason it gives).
BAD_INPUTS = {
    "missing": (lambda r: r.pop("income"), "null_feature:income"),
    "null": (lambda r: r.update(debt_ratio=None), "null_feature:debt_ratio"),
    "text": (lambda r: r.update(age="abc-7731"), "not_castable:age"),
    "fractional integer": (lambda r: r.update(credit_lines=2.5), "not_castable:credit_lines"),
    "nan": (lambda r: r.update(income=math.nan), "nan_feature:income"),
    "inf": (lambda r: r.update(utilization=math.inf), "infinite_feature:utilization"),
    "-inf": (lambda r: r.update(debt_ratio=-math.inf), "infinite_feature:debt_ratio"),
    "below range": (lambda r: r.update(age=5), "out_of_range:age"),
    "above range": (lambda r: r.update(age=777), "out_of_range:age"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_record_is_invalid_argument_naming_field_and_reason_not_values(predict, rows, case):
    spoil, reason = BAD_INPUTS[case]
    records = _records(rows.iloc[:3])
    spoil(records[1])
    values = [str(v) for r in records for v in r.values()]

    batch = prediction_pb2.PredictBatchRequest(records=[_request(f"r-{i}", r) for i, r in enumerate(records)])
    for error, where in (
        (_error(predict.PredictBatch, batch), "record 1"),
        (_error(predict.Predict, _request("r", records[1])), "record 0"),
    ):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = error.details()
        assert f"{where}: {reason}" in details
        # No value of the request comes back: the good ones (several digits each), nor the bad one
        # where its text is not the reason's own word (nan, inf).
        leaked = [v for v in values if len(v) >= 3 and v not in ("nan", "inf", "-inf") and v in details]
        assert not leaked, details


def test_empty_batch_and_too_many_records(predict, rows):
    empty = _error(predict.PredictBatch, prediction_pb2.PredictBatchRequest())
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT

    many = pd.concat([rows, rows.head(MAX_RECORDS + 1 - ROWS)])
    too_many = _error(predict.PredictBatch, _batch(many))
    assert too_many.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_RECORDS) in too_many.details()


def test_message_over_max_body_bytes_is_resource_exhausted(predict, inference, service):
    big = prediction_pb2.PredictRequest(
        id="big", features={"age": prediction_pb2.FeatureValue(string_value="x" * MAX_BODY)}
    )
    assert big.ByteSize() > service.settings.max_body_bytes
    assert _error(predict.Predict, big).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    values = np.zeros(MAX_BODY // 8 + 1)
    infer = inference_pb2.ModelInferRequest(model_name="credit-risk")
    infer.inputs.add(name="income", datatype="FP64", shape=[len(values)])
    infer.raw_input_contents.append(values.tobytes())
    assert _error(inference.ModelInfer, infer).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- inference.GRPCInferenceService -----------------------------------------------------------------


def _infer_request(model: str = "credit-risk", **fields) -> inference_pb2.ModelInferRequest:
    return inference_pb2.ModelInferRequest(model_name=model, id="req-1", **fields)


def _matrix_request(frame: pd.DataFrame, datatype: str, raw: bool) -> inference_pb2.ModelInferRequest:
    matrix = features(frame).to_numpy(dtype=oip.DATATYPES[datatype])
    request = _infer_request()
    tensor = request.inputs.add(name="features", datatype=datatype, shape=list(matrix.shape))
    if raw:
        request.raw_input_contents.append(matrix.astype(matrix.dtype.newbyteorder("<")).tobytes())
    else:
        contents = tensor.contents.fp64_contents if datatype == "FP64" else tensor.contents.fp32_contents
        contents.extend(matrix.ravel().tolist())
    return request


_CONTENTS_FIELD = {"INT32": "int_contents", "INT64": "int64_contents", "FP32": "fp32_contents"}


def _column_request(frame: pd.DataFrame, served_features, raw: bool) -> inference_pb2.ModelInferRequest:
    request = _infer_request()
    # Reversed: tensors are matched to features by name, not by position.
    for feature in reversed(served_features):
        datatype = oip.FEATURE_DATATYPES[feature.type]
        values = frame[feature.name].to_numpy().astype(oip.DATATYPES[datatype])
        tensor = request.inputs.add(name=feature.name, datatype=datatype, shape=[len(values), 1])
        if raw:
            request.raw_input_contents.append(oip.raw_bytes(oip.Tensor(feature.name, datatype, (), values)))
        else:
            getattr(tensor.contents, _CONTENTS_FIELD.get(datatype, "fp64_contents")).extend(values.tolist())
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
def test_model_infer_one_matrix_tensor_equals_predict_batch(
    inference, predict, rows, expected, raw, registry
):
    response = inference.ModelInfer(_matrix_request(rows, "FP64", raw), timeout=TIMEOUT)

    assert (response.model_name, response.model_version, response.id) == (
        "credit-risk",
        registry["onnx"],
        "req-1",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("prediction", "INT64", [ROWS]),
        ("probability", "FP64", [ROWS]),
    ]
    out = _outputs(response)
    _assert_scores(out["prediction"], out["probability"], expected)
    batch = predict.PredictBatch(_batch(rows), timeout=TIMEOUT)
    np.testing.assert_array_equal(out["prediction"], [p.prediction.int_value for p in batch.predictions])
    np.testing.assert_allclose(
        out["probability"], [p.probability for p in batch.predictions], rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
def test_model_infer_one_tensor_per_feature_equals_predict_batch(inference, service, rows, expected, raw):
    response = inference.ModelInfer(_column_request(rows, service.served.features, raw), timeout=TIMEOUT)
    out = _outputs(response)
    _assert_scores(out["prediction"], out["probability"], expected)


def test_model_infer_fp32_matrix_scores_the_float32_values(inference, service, rows):
    # An FP32 tensor carries float32 values: the model scores those, exactly as the typed frame of them.
    rounded = features(rows).astype(np.float32).astype(demo.FEATURE_TYPES)
    want = service.served.predictor.predict(rounded)
    out = _outputs(inference.ModelInfer(_matrix_request(rows, "FP32", True), timeout=TIMEOUT))
    _assert_scores(out["prediction"], out["probability"], want)


def test_model_infer_requested_outputs(inference, rows, expected):
    request = _matrix_request(rows.head(10), "FP64", True)
    request.outputs.add(name="probability")
    response = inference.ModelInfer(request, timeout=TIMEOUT)
    assert [t.name for t in response.outputs] == ["probability"]
    np.testing.assert_allclose(
        _outputs(response)["probability"], expected.probability[:10], rtol=0, atol=1e-9
    )

    request.outputs.add(name="logits")
    error = _error(inference.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "logits" in error.details()


def test_model_infer_refusals(inference, service, rows):
    good = _column_request(rows.head(3), service.served.features, raw=True)

    other = inference_pb2.ModelInferRequest()
    other.CopyFrom(good)
    other.model_name = "another-model"
    assert _error(inference.ModelInfer, other).code() == grpc.StatusCode.NOT_FOUND
    other.model_name, other.model_version = "credit-risk", "999"
    assert _error(inference.ModelInfer, other).code() == grpc.StatusCode.NOT_FOUND

    # A NaN income among tensors: the batch job's reason, the record and the field, no value.
    spoiled = features(rows.head(3)).copy()
    spoiled.loc[spoiled.index[2], "income"] = np.nan
    error = _error(inference.ModelInfer, _column_request(spoiled, service.served.features, raw=True))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "record 2: nan_feature:income" in error.details()
    assert str(spoiled["income"].iloc[0]) not in error.details()

    # Raw bytes that do not fit the shape, entries not one per input, an unknown datatype.
    short = inference_pb2.ModelInferRequest()
    short.CopyFrom(good)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    assert _error(inference.ModelInfer, short).code() == grpc.StatusCode.INVALID_ARGUMENT
    del short.raw_input_contents[-1]
    assert _error(inference.ModelInfer, short).code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = _infer_request()
    unknown.inputs.add(name="age", datatype="COMPLEX", shape=[1]).contents.int_contents.append(30)
    assert _error(inference.ModelInfer, unknown).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bytes_tensors_raw_and_contents(inference, service, rows, expected):
    # Text is a valid encoding of numbers (the batch job casts text columns too): BYTES, both layouts.
    frame = features(rows.head(4))
    for raw in (True, False):
        request = _infer_request()
        for feature in service.served.features:
            texts = np.array([repr(v) for v in frame[feature.name].tolist()], dtype=object)
            tensor = request.inputs.add(name=feature.name, datatype="BYTES", shape=[len(texts)])
            if raw:
                request.raw_input_contents.append(oip.raw_bytes(oip.Tensor(feature.name, "BYTES", (), texts)))
            else:
                tensor.contents.bytes_contents.extend(t.encode() for t in texts)
        out = _outputs(inference.ModelInfer(request, timeout=TIMEOUT))
        np.testing.assert_array_equal(out["prediction"], expected.prediction[:4])
        np.testing.assert_allclose(out["probability"], expected.probability[:4], rtol=0, atol=1e-9)


def test_metadata_readiness_and_liveness(inference, service, registry):
    assert inference.ServerLive(inference_pb2.ServerLiveRequest(), timeout=TIMEOUT).live
    assert inference.ServerReady(inference_pb2.ServerReadyRequest(), timeout=TIMEOUT).ready
    ready = inference.ModelReady
    assert ready(inference_pb2.ModelReadyRequest(name="credit-risk"), timeout=TIMEOUT).ready
    assert ready(inference_pb2.ModelReadyRequest(name="credit-risk", version=registry["onnx"])).ready
    assert not ready(inference_pb2.ModelReadyRequest(name="credit-risk", version="999")).ready
    assert not ready(inference_pb2.ModelReadyRequest(name="another-model")).ready

    server = inference.ServerMetadata(inference_pb2.ServerMetadataRequest(), timeout=TIMEOUT)
    assert server.name == "scoring" and server.version

    metadata = inference.ModelMetadata(
        inference_pb2.ModelMetadataRequest(name="credit-risk"), timeout=TIMEOUT
    )
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        "credit-risk",
        [registry["onnx"]],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (f.name, oip.FEATURE_DATATYPES[f.type], [-1]) for f in service.served.features
    ]
    assert [t.name for t in metadata.inputs] == list(demo.FEATURE_TYPES)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("prediction", "INT64", [-1]),
        ("probability", "FP64", [-1]),
    ]
    missing = _error(inference.ModelMetadata, inference_pb2.ModelMetadataRequest(name="another-model"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


# The client side in its own process: tritonclient's protos define the same `inference.*` symbols as
# ours, and protobuf refuses a second definition in one process (see test_protos.py).
_TRITON_CLIENT = """
import json
import sys

import numpy as np
import tritonclient.grpc as triton

address, model, data_path, out_path = sys.argv[1:5]
columns = json.loads(sys.argv[5])
data = np.load(data_path)
client = triton.InferenceServerClient(address)
assert client.is_server_live() and client.is_server_ready()
assert client.is_model_ready(model) and not client.is_model_ready("another-model")
metadata = client.get_model_metadata(model, as_json=True)
results = {}


def infer(key, inputs):
    result = client.infer(model, inputs, request_id=key)
    assert result.get_response().id == key
    results[key + ".prediction"] = result.as_numpy("prediction")
    results[key + ".probability"] = result.as_numpy("probability")


for datatype, dtype in (("FP64", np.float64), ("FP32", np.float32)):
    matrix = data["matrix"].astype(dtype)
    tensor = triton.InferInput("features", list(matrix.shape), datatype)
    tensor.set_data_from_numpy(matrix)
    infer(datatype, [tensor])
inputs = []
for name, datatype in columns:
    values = data[name]
    tensor = triton.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    inputs.append(tensor)
infer("columns", inputs)
np.savez(out_path, **results)
client.close()
print(json.dumps(metadata))
"""


def test_tritonclient_infers_as_the_model_scores(address, service, rows, expected, tmp_path):
    frame = features(rows)
    columns = [(f.name, oip.FEATURE_DATATYPES[f.type]) for f in service.served.features]
    arrays = {name: frame[name].to_numpy().astype(oip.DATATYPES[datatype]) for name, datatype in columns}
    np.savez(tmp_path / "in.npz", matrix=frame.to_numpy(dtype=np.float64), **arrays)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _TRITON_CLIENT,
            address,
            "credit-risk",
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
            json.dumps(columns),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    metadata = json.loads(done.stdout)
    assert metadata["name"] == "credit-risk"
    assert [t["name"] for t in metadata["inputs"]] == list(demo.FEATURE_TYPES)

    out = np.load(tmp_path / "out.npz")
    for key in ("FP64", "columns"):
        assert out[f"{key}.prediction"].dtype == np.int64
        _assert_scores(out[f"{key}.prediction"], out[f"{key}.probability"], expected)
    rounded = service.served.predictor.predict(frame.astype(np.float32).astype(demo.FEATURE_TYPES))
    _assert_scores(out["FP32.prediction"], out["FP32.probability"], rounded)


# --- health, readiness, keys, failures, metrics ------------------------------------------------------


def test_health_service_reports_serving(channel):
    check = health_pb2_grpc.HealthStub(channel).Check
    for name in ("", PREDICTION_SERVICE, INFERENCE_SERVICE):
        answer = check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
    unknown = _error(check, health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_not_serving_until_a_model_is_loaded(registry, rows):
    service = ScoringService(ServeSettings(model_uri=MODEL_URI))
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            predict = prediction_pb2_grpc.PredictionServiceStub(channel)
            request = _request("r", _records(rows.head(1))[0])

            assert check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            assert inference.ServerLive(inference_pb2.ServerLiveRequest(), timeout=TIMEOUT).live
            assert not inference.ServerReady(inference_pb2.ServerReadyRequest(), timeout=TIMEOUT).ready
            assert not inference.ModelReady(inference_pb2.ModelReadyRequest(name="credit-risk")).ready
            assert _error(predict.Predict, request).code() == grpc.StatusCode.UNAVAILABLE

            service.load()
            assert check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            assert inference.ModelReady(inference_pb2.ModelReadyRequest(name="credit-risk")).ready
            assert predict.Predict(request, timeout=TIMEOUT).HasField("probability")

            service.close()  # graceful shutdown: probes see it before the port closes
            assert check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
    finally:
        server.stop(grace=None)
        service.close()


def test_api_key_required_on_scoring_and_model_metadata_only(registry, rows):
    key = "s3cret-key-4417"
    service = ScoringService(ServeSettings(model_uri=MODEL_URI, api_key=key))
    service.load()
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = prediction_pb2_grpc.PredictionServiceStub(channel)
            inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            record = _request("r", _records(rows.head(1))[0])
            batch = _batch(rows.head(2))
            infer = _matrix_request(rows.head(2), "FP64", raw=True)
            metadata = inference_pb2.ModelMetadataRequest(name="credit-risk")
            guarded = [
                (predict.Predict, record),
                (predict.PredictBatch, batch),
                (inference.ModelInfer, infer),
                (inference.ModelMetadata, metadata),
            ]
            for call, request in guarded:
                for presented in (None, [("x-api-key", "wrong")], [("authorization", "Bearer wrong")]):
                    error = _error(call, request, metadata=presented)
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert key not in error.details()
                call(request, metadata=[("x-api-key", key)], timeout=TIMEOUT)
                call(request, metadata=[("authorization", f"Bearer {key}")], timeout=TIMEOUT)

            # Probes and discovery need no key.
            assert inference.ServerLive(inference_pb2.ServerLiveRequest(), timeout=TIMEOUT).live
            assert inference.ServerReady(inference_pb2.ServerReadyRequest(), timeout=TIMEOUT).ready
            assert inference.ModelReady(inference_pb2.ModelReadyRequest(name="credit-risk")).ready
            assert inference.ServerMetadata(inference_pb2.ServerMetadataRequest(), timeout=TIMEOUT).name
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=None)
        service.close()


class _Failing:
    def predict(self, frame):
        raise ValueError(f"cannot score {frame.to_numpy().tolist()}")


def test_model_failure_is_internal_without_the_input(registry, rows, caplog):
    service = ScoringService(
        ServeSettings(model_uri=MODEL_URI),
        loader=lambda settings: dataclasses.replace(load_served_model(settings), predictor=_Failing()),
    )
    # The probe at load scores with the real predictor; the failing one takes over after.
    service.load()
    server, port = start_grpc_server(service, "127.0.0.1", 0)
    income = str(rows["income"].iloc[0])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = prediction_pb2_grpc.PredictionServiceStub(channel)
            error = _error(predict.Predict, _request("r", _records(rows.head(1))[0]))
            assert error.code() == grpc.StatusCode.INTERNAL
            assert income not in error.details()
            assert income not in caplog.text
    finally:
        server.stop(grace=None)
        service.close()


def test_unexpected_error_is_internal_with_a_generic_message(predict, service, rows, monkeypatch, caplog):
    income = str(rows["income"].iloc[0])

    def broken(records):
        raise RuntimeError(f"unexpected, with the input {records}")

    monkeypatch.setattr(service, "submit_records", broken)
    error = _error(predict.Predict, _request("r", _records(rows.head(1))[0]))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert "RuntimeError" in caplog.text
    assert income not in caplog.text


def test_metrics_count_each_rpc_by_route_and_status(predict, channel, service, rows):
    registry_ = service.metrics.registry
    route = f"/{PREDICTION_SERVICE}/Predict"
    health_route = "/grpc.health.v1.Health/Check"
    counts = {
        "ok": ("scoring_requests_total", {"protocol": "grpc", "route": route, "status": "OK"}),
        "bad": ("scoring_requests_total", {"protocol": "grpc", "route": route, "status": "INVALID_ARGUMENT"}),
        "health": ("scoring_requests_total", {"protocol": "grpc", "route": health_route, "status": "OK"}),
        "timed": ("scoring_request_seconds_count", {"protocol": "grpc", "route": route}),
        "records": ("scoring_records_scored_total", {"protocol": "grpc"}),
    }
    before = {k: _sample(registry_, name, **labels) for k, (name, labels) in counts.items()}

    records = _records(rows.head(2))
    for record in records:
        predict.Predict(_request("r", record), timeout=TIMEOUT)
    _error(predict.Predict, _request("r", {**records[0], "age": None}))
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)

    after = {k: _sample(registry_, name, **labels) for k, (name, labels) in counts.items()}
    assert {k: after[k] - before[k] for k in counts} == {
        "ok": 2,
        "bad": 1,
        "health": 1,
        "timed": 3,
        "records": 2,
    }


def test_a_port_in_use_is_an_error(service, address):
    port = int(address.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="cannot serve gRPC"):
        start_grpc_server(service, "127.0.0.1", port)
