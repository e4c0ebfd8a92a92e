"""``scoring serve`` as a client meets it: real servers on 127.0.0.1, real HTTP and gRPC clients.

The same rows scored by the batch job and by every dialect agree; bad records get the batch job's
reason codes; limits, the API key, reloads under load, metrics and a graceful SIGTERM hold.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATE, run_score
from servers import Server, server_pool

from scoring import demo
from scoring.serve.pb import prediction_pb2, prediction_pb2_grpc

FEATURES = list(demo.FEATURE_TYPES)
ROWS = 1_000
KEY = "s3cret-key"
# Small enough that the limit tests stay small; big enough for ROWS records in one request.
MAX_BODY = 400_000
MAX_RECORDS = ROWS


@pytest.fixture(scope="module")
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start servers for a module; every one still running at the end is stopped."""
    with server_pool() as start:
        yield start


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return demo.make_customers(ROWS, DATE, seed=11)


@pytest.fixture(scope="module")
def server(registry, server_factory):
    """One server of the session registry's champion (ONNX), with an API key and small limits."""
    return server_factory(
        "models:/credit-risk@champion",
        "--max-body-bytes", str(MAX_BODY), "--max-records", str(MAX_RECORDS),
        env={"SCORING_API_KEY": KEY},
    )  # fmt: skip


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=30) as client:
        yield client


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {"id": int(i), "features": features}
        for i, features in zip(frame["customer_id"], frame[FEATURES].to_dict("records"), strict=True)
    ]


def _plain(frame: pd.DataFrame) -> list[dict]:
    """Feature records as JSON values (numpy scalars become Python ones)."""
    return json.loads(frame[FEATURES].to_json(orient="records"))


def test_the_batch_job_and_every_dialect_give_the_same_scores(spark, server, http, rows, tmp_path):
    demo.write_partitioned(rows, tmp_path / "in", DATE)
    assert run_score("models:/credit-risk@champion", tmp_path / "in", tmp_path / "out") == 0
    batch = pd.read_parquet(tmp_path / "out" / f"date={DATE}").sort_values("customer_id")
    assert len(batch) == ROWS
    order = rows.set_index("customer_id").loc[batch["customer_id"]].reset_index()
    expected_label = batch["prediction"].to_numpy()
    expected = batch["probability"].to_numpy()

    answers = {}
    got = http.post("/predict/batch", json=_records(order)).json()
    assert [p["id"] for p in got["predictions"]] == order["customer_id"].tolist()
    answers["/predict/batch"] = (
        [p["prediction"] for p in got["predictions"]],
        [p["probability"] for p in got["predictions"]],
    )
    split = {"columns": FEATURES, "data": order[FEATURES].to_numpy().tolist()}
    got = http.post("/invocations", json={"dataframe_split": split}).json()
    answers["/invocations split"] = (got["predictions"], got["probabilities"])
    got = http.post("/invocations", json={"dataframe_records": _plain(order)}).json()
    answers["/invocations records"] = (got["predictions"], got["probabilities"])
    tensor = {"name": "features", "datatype": "FP64", "shape": [ROWS, len(FEATURES)], "data": split["data"]}
    got = http.post("/v2/models/credit-risk/infer", json={"inputs": [tensor]}).json()
    outputs = {o["name"]: o["data"] for o in got["outputs"]}
    answers["/v2 infer"] = (outputs["prediction"], outputs["probability"])

    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        request = prediction_pb2.PredictBatchRequest(
            records=[_grpc_record(r["id"], r["features"]) for r in _records(order)]
        )
        got = stub.PredictBatch(request, metadata=[("x-api-key", KEY)])
    assert [p.id for p in got.predictions] == [str(i) for i in order["customer_id"]]
    answers["grpc PredictBatch"] = (
        [p.prediction.int_value for p in got.predictions],
        [p.probability for p in got.predictions],
    )
    triton = _tritonclient_infer(server, order[FEATURES].to_numpy(np.float64), tmp_path)
    answers["tritonclient.grpc ModelInfer"] = triton["grpc"]
    # tritonclient.http with its defaults: the tensors in the binary extension, the outputs asked for
    # as binary (binary_data_output), and per output (InferRequestedOutput's binary_data=True).
    answers["tritonclient.http infer"] = triton["http"]
    answers["tritonclient.http infer, outputs asked for"] = triton["http outputs"]

    for dialect, (labels, probabilities) in answers.items():
        assert np.array_equal(np.asarray(labels), expected_label), dialect
        assert np.max(np.abs(np.asarray(probabilities) - expected)) <= 1e-9, dialect


def _labels_and_probabilities(predictions: list[dict]) -> tuple[list, list]:
    return [p["prediction"] for p in predictions], [p["probability"] for p in predictions]


def _grpc_record(record_id, features: dict) -> prediction_pb2.PredictRequest:
    values = {}
    for name, value in features.items():
        if value is None:
            values[name] = prediction_pb2.FeatureValue()
        elif isinstance(value, str):
            values[name] = prediction_pb2.FeatureValue(string_value=value)
        elif isinstance(value, float | np.floating):
            values[name] = prediction_pb2.FeatureValue(number_value=float(value))
        else:
            values[name] = prediction_pb2.FeatureValue(int_value=int(value))
    return prediction_pb2.PredictRequest(id=str(record_id), features=values)


# tritonclient registers the same `inference.*` protobuf names as our stubs: it runs in its own process.
_TRITON = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
import tritonclient.http as triton_http

grpc_target, http_target, path, key = sys.argv[1:]
matrix = np.load(path)
headers = {"x-api-key": key}
answers = {}
client = triton.InferenceServerClient(grpc_target)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("credit-risk")
assert client.get_model_metadata("credit-risk", headers=headers).name == "credit-risk"
inputs = [triton.InferInput("features", list(matrix.shape), "FP64")]
inputs[0].set_data_from_numpy(matrix)
result = client.infer("credit-risk", inputs, headers=headers)
answers["grpc"] = [result.as_numpy("prediction").tolist(), result.as_numpy("probability").tolist()]

client = triton_http.InferenceServerClient(http_target)
assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("credit-risk")
assert client.get_model_metadata("credit-risk", headers=headers)["name"] == "credit-risk"
inputs = [triton_http.InferInput("features", list(matrix.shape), "FP64")]
inputs[0].set_data_from_numpy(matrix)  # binary_data=True: the tensor travels as raw bytes
result = client.infer("credit-risk", inputs, headers=headers)
assert all("data" not in o for o in result.get_response()["outputs"])  # answered as binary
answers["http"] = [result.as_numpy("prediction").tolist(), result.as_numpy("probability").tolist()]
outputs = [triton_http.InferRequestedOutput("prediction"), triton_http.InferRequestedOutput("probability")]
result = client.infer("credit-risk", inputs, outputs=outputs, headers=headers, request_id="r-1")
assert result.get_response()["id"] == "r-1"
answers["http outputs"] = [result.as_numpy("prediction").tolist(), result.as_numpy("probability").tolist()]
print(json.dumps(answers))
"""


def _tritonclient_infer(server: Server, matrix: np.ndarray, tmp_path) -> dict[str, list]:
    """What tritonclient's gRPC and HTTP clients answer for ``matrix``, each as (labels, probabilities)."""
    np.save(tmp_path / "matrix.npy", matrix)
    http_target = server.http.removeprefix("http://")
    done = subprocess.run(
        [sys.executable, "-c", _TRITON, server.grpc, http_target, str(tmp_path / "matrix.npy"), KEY],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# One record per bad-input class, and the reason the batch job writes for it. `income` is text in
# this input, so that bad text reaches the batch job's cast as it reaches the service.
BAD = [
    ("age", None, "null_feature:age"),
    ("income", "abc", "not_castable:income"),
    ("utilization", math.nan, "nan_feature:utilization"),
    ("debt_ratio", math.inf, "infinite_feature:debt_ratio"),
    ("income", "1e400", "infinite_feature:income"),
    ("age", 5, "out_of_range:age"),
    ("income", "-5", "out_of_range:income"),
]


def test_bad_records_get_the_reason_the_batch_job_writes(spark, server, http, rows, tmp_path):
    base = rows.head(len(BAD) + 1).reset_index(drop=True)
    frame = base.astype({"income": object, "age": "Int32"}).astype({"age": object})
    frame["income"] = [str(v) for v in base["income"]]
    for i, (column, value, _) in enumerate(BAD):
        frame.loc[i, column] = value
    # Column by column from Python lists: a NaN stays NaN (pandas' conversion would make it null).
    types = {
        c: pa.string() if c == "income" else pa.from_numpy_dtype(np.dtype(rows[c].dtype)) for c in FEATURES
    }
    table = pa.table(
        {"customer_id": pa.array(frame["customer_id"].tolist(), pa.int64())}
        | {c: pa.array(frame[c].tolist(), types[c]) for c in FEATURES}
    )
    (tmp_path / "in" / f"date={DATE}").mkdir(parents=True)
    pq.write_table(table, tmp_path / "in" / f"date={DATE}" / "part-0.parquet")
    code = run_score(
        "models:/credit-risk@champion", tmp_path / "in", tmp_path / "out", "--max-reject-fraction", "1"
    )
    assert code == 0
    rejects = pd.read_parquet(tmp_path / "out" / "_rejects" / f"date={DATE}")
    batch = dict(zip(rejects["customer_id"], rejects["reject_reason"], strict=True))
    assert batch == {int(base.loc[i, "customer_id"]): reason for i, (_, _, reason) in enumerate(BAD)}

    records = [
        {"id": int(i), "features": f}
        for i, f in zip(frame["customer_id"], frame[FEATURES].to_dict("records"), strict=True)
    ]
    body = json.dumps(records, default=lambda v: v.item())  # NaN and Infinity as Python's json writes them
    answer = http.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    got = {records[r["record"]]["id"]: r["reject_reason"] for r in answer.json()["rejects"]}
    assert got == batch
    for (column, value, reason), line in zip(BAD, answer.json()["error"].split("; "), strict=False):
        assert reason in line and column in line
        if isinstance(value, str):
            assert value not in answer.text  # the value is never echoed
    # One bad record fails the request: nothing of it is scored.
    assert answer.json()["rejected"] == len(BAD)


def test_each_bad_class_alone_on_every_dialect(server, http, rows):
    good = _plain(rows.head(1))[0]
    for column, value, reason in BAD:
        record = {**good, column: value}
        body = json.dumps({"features": record})
        answer = http.post("/predict", content=body)
        assert answer.status_code == 422 and answer.json()["rejects"][0]["reject_reason"] == reason, body
        answer = http.post("/invocations", content=json.dumps({"dataframe_records": [record]}),
                           headers={"content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 422 and answer.json()["rejects"][0]["reject_reason"] == reason
        tensors = [_json_tensor(name, v) for name, v in record.items()]
        answer = http.post("/v2/models/credit-risk/infer", content=json.dumps({"inputs": tensors}))
        # The protocol's error body is the message alone, which names each record's reason.
        assert answer.status_code == 422 and list(answer.json()) == ["error"]
        assert f"record 0: {reason} " in answer.json()["error"]
    # A JSON tensor is cast as the other dialects cast: 1.5 for an integer feature is refused, not truncated.
    tensors = [_json_tensor(name, 1.5 if name == "age" else v) for name, v in good.items()]
    answer = http.post("/v2/models/credit-risk/infer", json={"inputs": tensors})
    assert answer.status_code == 422 and "record 0: not_castable:age " in answer.json()["error"]
    missing = {k: v for k, v in good.items() if k != "tenure_months"}
    answer = http.post("/predict", json={"id": 1, "features": {**missing, "not_a_feature": 1}})
    assert answer.status_code == 422
    assert answer.json()["rejects"] == [
        {
            "record": 0,
            "field": "tenure_months",
            "reason": "null_feature",
            "reject_reason": "null_feature:tenure_months",
        }
    ]
    # The features in any order, extra fields ignored: the same answer.
    shuffled = dict(reversed(list({**good, "extra": "x"}.items())))
    assert (
        http.post("/predict", json={"features": shuffled}).json()["probability"]
        == (http.post("/predict", json={"features": good}).json()["probability"])
    )
    assert http.post("/predict", content=b"{not json").status_code == 400
    assert http.post("/predict", content=b'{"id": ' + b"9" * 5000 + b"}").status_code == 400
    assert http.post("/predict", content=b"[" * 100_000).status_code == 400
    # MLflow's other shapes: one record of scalars under "inputs", its health route, a CSV body refused.
    one = http.post("/invocations", json={"inputs": good}).json()
    assert one["predictions"] == [http.post("/predict", json={"features": good}).json()["prediction"]]
    assert http.get("/ping").status_code == 200
    assert http.post("/invocations", content=b"a,b", headers={"content-type": "text/csv"}).status_code == 415
    # The binary extension's header must be the JSON header's length within the body.
    binary = {"inference-header-content-length": "10"}
    answer = http.post("/v2/models/credit-risk/infer", content=b"{}", headers=binary)
    assert answer.status_code == 400 and "inference-header-content-length" in answer.json()["error"]
    assert http.post("/v2/models/other/infer", json={"inputs": []}).status_code == 404
    assert http.post("/invocations", json={"neither": 1}).status_code == 400


def _json_tensor(name: str, value: object) -> dict:
    return {
        "name": name,
        "datatype": "BYTES" if isinstance(value, str) else "FP64",
        "shape": [1],
        "data": [value],
    }


def test_limits_answer_413(server, http, rows):
    too_many = _records(pd.concat([rows] * 2).head(MAX_RECORDS + 1))
    answer = http.post("/predict/batch", json=too_many)
    assert answer.status_code == 413 and "at most 1000" in answer.json()["error"]
    padding = {"id": "x" * (MAX_BODY + 1), "features": {}}
    assert http.post("/predict", json=padding).status_code == 413

    def chunks():  # no content-length: the limit still holds as the body streams in
        yield b'{"id": "'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"x" * 1000
        yield b'", "features": {}}'

    assert http.post("/predict", content=chunks()).status_code == 413
    # Refused before routing, and still counted.
    assert 'route="unmatched",status="413"' in http.get("/metrics").text
    assert http.post("/predict", json={"features": _plain(rows.head(1))[0]}).status_code == 200


def test_the_api_key_guards_scoring_and_admin_routes(server, rows):
    record = {"features": _plain(rows.head(1))[0]}
    with httpx.Client(base_url=server.http, timeout=30) as anonymous:
        for route, body in (("/predict", record), ("/predict/batch", [record]), ("/admin/reload", None)):
            assert anonymous.post(route, json=body).status_code == 401, route
        assert anonymous.post("/predict", json=record, headers={"x-api-key": KEY + "x"}).status_code == 401
        assert (
            anonymous.post("/predict", json=record, headers={"authorization": f"Bearer {KEY}"}).status_code
            == 200
        )
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/ready").json()["model_version"]
        assert anonymous.get("/v2/health/ready").status_code == 200
    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(_grpc_record(1, record["features"]))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_metrics_count_what_was_sent(server, http, rows):
    def count(route: str, status: str) -> float:
        text = http.get("/metrics").text
        needle = f'scoring_requests_total{{protocol="http",route="{route}",status="{status}"}} '
        line = next((x for x in text.splitlines() if x.startswith(needle)), needle + "0")
        return float(line.removeprefix(needle))

    before_ok, before_bad = count("/predict", "200"), count("/predict", "422")
    good = _plain(rows.head(3))
    for record in good:
        assert http.post("/predict", json={"features": record}).status_code == 200
    assert http.post("/predict", json={"features": {**good[0], "age": 1}}).status_code == 422
    assert count("/predict", "200") - before_ok == 3
    assert count("/predict", "422") - before_bad == 1
    text = http.get("/metrics").text
    assert 'scoring_model_info{backend="onnx",name="credit-risk",version="2"} 1.0' in text
    assert "scoring_batch_rows_count" in text and "scoring_request_seconds_bucket" in text


def test_concurrent_requests_share_model_calls_and_get_their_own_scores(server, http, rows):
    records = _plain(rows.head(200))
    alone = [http.post("/predict", json={"features": r}).json()["probability"] for r in records[:20]]
    results: dict[int, float] = {}

    def client(indices):
        with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=30) as own:
            for i in indices:
                results[i] = own.post("/predict", json={"features": records[i]}).json()["probability"]

    threads = [threading.Thread(target=client, args=(range(k, 200, 16),)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(20)] == alone
    expected = http.post("/predict/batch", json=[{"features": r} for r in records]).json()["predictions"]
    assert [results[i] for i in range(200)] == [p["probability"] for p in expected]


def test_reload_swaps_versions_under_load_without_a_failed_request(registry, server_factory, rows):
    from mlflow import MlflowClient

    name = "credit-risk-online"
    sklearn_version, onnx_version = demo.register_models(registry["model"], rows.head(50), name=name)
    server = server_factory(f"models:/{name}@champion", "--no-grpc", env={"SCORING_API_KEY": KEY})
    record = {"features": _plain(rows.head(1))[0]}
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=30) as client:
            while not stop.is_set():
                answer = client.post("/predict", json=record)
                seen.append((answer.status_code, answer.json().get("model_version")))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # load is on before the swap
        MlflowClient().set_registered_model_alias(name, "champion", sklearn_version)
        with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=60) as admin:
            outcome = admin.post("/admin/reload").json()
            assert (
                outcome["reloaded"] and outcome["from"] == onnx_version and outcome["to"] == sklearn_version
            )
            after = len(seen)
            time.sleep(0.5)
            assert admin.post("/admin/reload").json()["reloaded"] is False  # the alias did not move again
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen and all(status == 200 for status, _ in seen), {s for s, _ in seen}
    versions = [v for _, v in seen]
    assert versions[0] == onnx_version and sklearn_version in versions
    assert set(versions[after + 8 :]) == {sklearn_version}  # every request started after the swap
    # SIGHUP does the same: back to the ONNX version.
    MlflowClient().set_registered_model_alias(name, "champion", onnx_version)
    server.process.send_signal(__import__("signal").SIGHUP)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=30) as client:
        while client.get("/ready").json()["model_version"] != onnx_version:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    assert server.stop() == 0
    assert "stopped" in server.log()
    access = [line for line in server.lines if "scoring.serve.access" in line]
    assert access and all(str(record["features"]["income"]) not in line for line in access)


def test_model_info_names_the_pinned_model(server, http, registry):
    info = http.get("/model/info").json()
    assert (info["name"], info["version"], info["backend"]) == ("credit-risk", registry["onnx"], "onnx")
    assert info["pinned_uri"] == f"models:/credit-risk/{registry['onnx']}" and info["run_id"]
    assert [f["name"] for f in info["signature"]["inputs"]] == FEATURES
    assert info["signature"]["outputs"] == [
        {"name": "prediction", "type": "long"},
        {"name": "probability", "type": "double"},
    ]  # the batch job's columns and types
    assert info["classes"] == [0, 1] and info["probability"] == "binary"
    v2 = http.get("/v2/models/credit-risk").json()
    assert v2["versions"] == [registry["onnx"]] and [i["name"] for i in v2["inputs"]] == FEATURES


def test_a_port_in_use_is_one_line_and_exit_1(registry, server):
    port = server.http.rsplit(":", 1)[1]
    done = subprocess.run(
        [str(Path(sys.executable).with_name("scoring")), "serve",
         "--model-uri", "models:/credit-risk@champion", "--port", port, "--no-grpc"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and len(errors) == 1 and f"cannot serve HTTP on 127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in done.stderr


def test_sigint_stops_as_sigterm_does(registry, server_factory):
    import signal

    server = server_factory("models:/credit-risk@champion")
    with grpc.insecure_channel(server.grpc) as channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    assert server.stop(signal.SIGINT) == 0
    assert "stopped" in server.log() and "Traceback" not in server.log()
