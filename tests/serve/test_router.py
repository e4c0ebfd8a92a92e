"""``scoring serve`` with a lineup: challengers, an ensemble and an A/B split, against the batch job.

Real servers on 127.0.0.1 and the session's SQLite registry (``models:/credit-risk/1`` scikit-learn,
``models:/credit-risk/2`` ONNX and its ``champion`` alias); the batch job scores the same rows in this
process. Online and offline call the same ``scoring.model.combine`` and ``scoring.model.variants``, so
their columns agree row for row: a model's scores, the ensemble's mean, and each id's variant.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import DATE, run_score
from servers import Server, server_pool

from scoring import demo
from scoring.serve.pb import prediction_pb2, prediction_pb2_grpc

FEATURES = list(demo.FEATURE_TYPES)
KEY = "router-key"
CHAMPION = "models:/credit-risk@champion"
PLAIN = "models:/credit-risk/1"
# The ensemble's weights as given; normalised to 0.75 / 0.25 by the lineup.
ENSEMBLE = ("--ensemble", "champion=3,plain=1")
AB = ("--ab", "champion=0.9,plain=0.1", "--ab-salt", "exp-1")
AB_ROWS = 10_000
TIMEOUT = 60


@pytest.fixture(scope="module")
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start servers for the module; every one still running at the end is stopped."""
    with server_pool(env={"SCORING_API_KEY": KEY}) as start:
        yield start


@pytest.fixture(scope="module")
def server(registry, server_factory) -> Server:
    """The champion, a scikit-learn challenger, an ensemble of both, a 90/10 split keyed on customer_id."""
    return server_factory(
        CHAMPION, "--challenger", f"plain={PLAIN}", *ENSEMBLE, *AB, "--id-column", "customer_id"
    )


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def batch(spark, registry, input_dir, tmp_path_factory) -> pd.DataFrame:
    """The batch job's columns of the session's input with the same challenger and ensemble."""
    output = tmp_path_factory.mktemp("router-batch")
    assert run_score(CHAMPION, input_dir, output, "--challenger", f"plain={PLAIN}", *ENSEMBLE) == 0
    return pd.read_parquet(output / f"date={DATE}").sort_values("customer_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def rows(customers, batch) -> pd.DataFrame:
    """The input rows the batch job scored, in the order of ``batch``."""
    frame = customers[DATE].set_index("customer_id").loc[batch["customer_id"]].reset_index()
    assert len(frame) == len(batch) > 100
    return frame


def _records(frame: pd.DataFrame, id_field: str = "id") -> list[dict]:
    """The original API's records: the id under ``id_field``, features as JSON values."""
    features = json.loads(frame[FEATURES].to_json(orient="records"))
    return [{id_field: int(i), "features": f} for i, f in zip(frame["customer_id"], features, strict=True)]


def _probabilities(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    return np.array([p["probability"] for p in answer.json()["predictions"]])


def test_each_model_route_equals_its_batch_columns(server, http, batch, rows, registry):
    records = _records(rows)
    for route, prefix, version in (
        ("/predict/champion/batch", "", registry["onnx"]),
        ("/predict/plain/batch", "challenger_plain_", registry["sklearn"]),
    ):
        answer = http.post(route, json=records)
        got = answer.json()
        assert (got["model_name"], got["model_version"]) == ("credit-risk", version), route
        assert [p["id"] for p in got["predictions"]] == batch["customer_id"].tolist()
        np.testing.assert_allclose(_probabilities(answer), batch[f"{prefix}probability"], rtol=0, atol=1e-9)
        labels = [p["prediction"] for p in got["predictions"]]
        assert labels == batch[f"{prefix}prediction"].tolist(), route
    # One record: /predict/{model} answers as /predict does; /predict stays the champion.
    one = records[0]
    plain = http.post("/predict/plain", json=one).json()
    assert plain["model_version"] == registry["sklearn"] and plain["id"] == one["id"]
    assert abs(plain["probability"] - batch["challenger_plain_probability"][0]) <= 1e-9
    assert http.post("/predict", json=one).json() == http.post("/predict/champion", json=one).json()
    unknown = http.post("/predict/nobody", json=one)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no model named 'nobody' here (models: champion, plain)"
    assert http.post("/predict/nobody/batch", json=records[:2]).status_code == 404
    # The route is guarded by the key as /predict is.
    assert httpx.post(f"{server.http}/predict/plain", json=one, timeout=TIMEOUT).status_code == 401


def test_the_ensemble_is_the_weighted_mean_of_the_members(http, batch, rows):
    records = _records(rows)
    answer = http.post("/predict/ensemble/batch", json=records)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["weights"] == {"champion": 0.75, "plain": 0.25}
    assert set(got["models"]) == {"champion", "plain"}
    ensemble = np.array([p["ensemble_probability"] for p in got["predictions"]])
    champion = _probabilities(http.post("/predict/champion/batch", json=records))
    plain = _probabilities(http.post("/predict/plain/batch", json=records))
    np.testing.assert_allclose(ensemble, 0.75 * champion + 0.25 * plain, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ensemble, batch["ensemble_probability"], rtol=0, atol=1e-9)
    one = http.post("/predict/ensemble", json=records[3]).json()
    assert one["id"] == records[3]["id"] and one["weights"] == got["weights"]
    assert abs(one["ensemble_probability"] - ensemble[3]) <= 1e-12
    # A record a member would refuse is refused, with the batch job's reason.
    bad = {"features": {**records[0]["features"], "age": None}}
    refused = http.post("/predict/ensemble", json=bad)
    assert refused.status_code == 422 and refused.json()["rejects"][0]["reject_reason"] == "null_feature:age"


@pytest.fixture(scope="module")
def ab_batch(spark, registry, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """10,000 customers and the batch job's A/B columns for them (champion 90 %, plain 10 %)."""
    root = tmp_path_factory.mktemp("router-ab")
    customers = demo.make_customers(AB_ROWS, DATE, seed=9)
    demo.write_partitioned(customers, root / "in", DATE)
    code = run_score(CHAMPION, root / "in", root / "out", "--challenger", f"plain={PLAIN}", *AB)
    assert code == 0
    scored = pd.read_parquet(root / "out" / f"date={DATE}").set_index("customer_id")
    assert len(scored) == AB_ROWS
    return customers, scored


def test_ab_variants_online_are_the_batch_jobs(http, ab_batch, registry):
    customers, scored = ab_batch
    records = _records(customers, id_field="customer_id")
    answers = []
    for start in range(0, AB_ROWS, 2_500):
        answer = http.post("/predict/ab/batch", json=records[start : start + 2_500])
        assert answer.status_code == 200, answer.text
        assert answer.json()["split"] == {"champion": 0.9, "plain": 0.1}
        answers += answer.json()["predictions"]
    online = pd.DataFrame(answers).set_index("customer_id").loc[scored.index]
    assert (online["variant"] == scored["variant"]).all()
    share = (online["variant"] == "plain").mean()
    assert abs(share - 0.1) <= 0.01, share
    np.testing.assert_allclose(online["probability"], scored["probability"], rtol=0, atol=1e-9)
    assert (online["prediction"] == scored["prediction"]).all()
    assert (online["model_version"] == scored["model_version"]).all()
    versions = dict(zip(online["variant"], online["model_version"], strict=False))
    assert versions == {"champion": registry["onnx"], "plain": registry["sklearn"]}
    # One record: the same variant; the id may also sit among the features.
    record = records[0]
    one = http.post("/predict/ab", json=record).json()
    assert (one["customer_id"], one["variant"]) == (
        record["customer_id"],
        scored["variant"].loc[record["customer_id"]],
    )
    among = {"features": {**record["features"], "customer_id": record["customer_id"]}}
    assert http.post("/predict/ab", json=among).json()["variant"] == one["variant"]
    # A record without its id is refused, naming the field; nothing is scored.
    missing = http.post("/predict/ab/batch", json=[record, {"id": 5, "features": record["features"]}])
    assert missing.status_code == 400 and "record 1" in missing.json()["error"]
    assert '"customer_id"' in missing.json()["error"]


def test_models_lists_the_lineup(http, registry):
    got = http.get("/models").json()
    assert [(m["model"], m["name"], m["version"]) for m in got["models"]] == [
        ("champion", "credit-risk", registry["onnx"]),
        ("plain", "credit-risk", registry["sklearn"]),
    ]
    assert got["models"][1]["pinned_uri"] == PLAIN and got["models"][0]["backend"] == "onnx"
    assert got["ensemble"] == {"weights": {"champion": 0.75, "plain": 0.25}, "column": "ensemble_probability"}
    assert got["ab"] == {"split": {"champion": 0.9, "plain": 0.1}, "salt": "exp-1"}
    assert http.get("/models/plain").json()["version"] == registry["sklearn"]
    assert http.get("/models/nobody").status_code == 404
    assert http.get("/model/info").json()["version"] == registry["onnx"]  # the champion, as before
    metrics = http.get("/metrics").text
    assert (
        'scoring_lineup_model_info{backend="pyfunc",model="plain",name="credit-risk",version="1"}' in metrics
    )


def _grpc_record(record: dict, with_id: bool = True, model: str = "") -> prediction_pb2.PredictRequest:
    """A JSON record as a gRPC one; without its id field, the id goes among the features (customer_id)."""
    values = {
        name: prediction_pb2.FeatureValue(int_value=v)
        if isinstance(v, int)
        else prediction_pb2.FeatureValue(number_value=v)
        for name, v in record["features"].items()
    }
    if not with_id:
        values["customer_id"] = prediction_pb2.FeatureValue(int_value=record["id"])
    return prediction_pb2.PredictRequest(
        id=str(record["id"]) if with_id else "", features=values, model=model
    )


@pytest.fixture(scope="module")
def stub(server) -> Iterator[prediction_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc) as channel:
        yield prediction_pb2_grpc.PredictionServiceStub(channel)


METADATA = [("x-api-key", KEY)]


def test_grpc_model_routes(stub, http, rows, registry):
    records = _records(rows.head(50))
    one = stub.Predict(_grpc_record(records[0], model="plain"), metadata=METADATA)
    want = http.post("/predict/plain", json=records[0]).json()
    assert one.model_version == registry["sklearn"] and abs(one.probability - want["probability"]) <= 1e-12
    batch = stub.PredictBatch(
        prediction_pb2.PredictBatchRequest(records=[_grpc_record(r) for r in records], model="plain"),
        metadata=METADATA,
    )
    want = _probabilities(http.post("/predict/plain/batch", json=records))
    np.testing.assert_allclose([p.probability for p in batch.predictions], want, rtol=0, atol=1e-12)
    assert batch.model_version == registry["sklearn"]
    # No model named: the champion, as before.
    champion = stub.PredictBatch(prediction_pb2.PredictBatchRequest(records=[_grpc_record(records[0])]),
                                 metadata=METADATA)  # fmt: skip
    assert champion.model_version == registry["onnx"]
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Predict(_grpc_record(records[0], model="nobody"), metadata=METADATA)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "nobody" in unknown.value.details()


def test_grpc_ensemble(stub, http, rows):
    records = _records(rows.head(50))
    got = stub.PredictEnsemble(
        prediction_pb2.PredictBatchRequest(records=[_grpc_record(r) for r in records]), metadata=METADATA
    )
    want = http.post("/predict/ensemble/batch", json=records).json()
    assert [p.id for p in got.predictions] == [str(r["id"]) for r in records]
    np.testing.assert_allclose(
        [p.ensemble_probability for p in got.predictions],
        [p["ensemble_probability"] for p in want["predictions"]],
        rtol=0,
        atol=1e-12,
    )
    assert {w.model: w.share for w in got.weights} == {"champion": 0.75, "plain": 0.25}
    with pytest.raises(grpc.RpcError) as named:
        stub.PredictEnsemble(prediction_pb2.PredictBatchRequest(model="plain"), metadata=METADATA)
    assert named.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_ab(stub, ab_batch):
    customers, scored = ab_batch
    records = _records(customers.head(400))
    # The id column is customer_id: gRPC records carry it among their features.
    got = stub.PredictAB(
        prediction_pb2.PredictBatchRequest(records=[_grpc_record(r, with_id=False) for r in records]),
        metadata=METADATA,
    )
    want = scored.loc[[r["id"] for r in records]]
    assert [p.variant for p in got.predictions] == want["variant"].tolist()
    assert "plain" in {p.variant for p in got.predictions}
    np.testing.assert_allclose(
        [p.probability for p in got.predictions], want["probability"], rtol=0, atol=1e-9
    )
    assert [p.model_version for p in got.predictions] == want["model_version"].tolist()
    assert {s.model: s.share for s in got.split} == {"champion": 0.9, "plain": 0.1}
    with pytest.raises(grpc.RpcError) as missing:
        stub.PredictAB(
            prediction_pb2.PredictBatchRequest(records=[_grpc_record(records[0])]), metadata=METADATA
        )
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert '"customer_id"' in missing.value.details()


def test_reload_moves_a_challenger_and_no_split_is_a_clear_error(registry, server_factory, rows):
    from mlflow import MlflowClient

    name = "credit-risk-router"
    sklearn_version, onnx_version = demo.register_models(registry["model"], rows.head(50), name=name)
    server = server_factory(
        f"models:/{name}/{sklearn_version}", "--challenger", f"next=models:/{name}@champion"
    )
    record = _records(rows.head(1))[0]
    with httpx.Client(base_url=server.http, headers={"x-api-key": KEY}, timeout=TIMEOUT) as client:
        assert client.post("/predict/next", json=record).json()["model_version"] == onnx_version
        for route in ("/predict/ensemble", "/predict/ab"):
            refused = client.post(route, json=record)
            assert refused.status_code == 404 and "this server has no" in refused.json()["error"], route
        MlflowClient().set_registered_model_alias(name, "champion", sklearn_version)
        outcome = client.post("/admin/reload").json()
        assert outcome["reloaded"] and outcome["from"] == outcome["to"] == sklearn_version
        assert outcome["models"] == {
            "champion": {"reloaded": False, "from": sklearn_version, "to": sklearn_version},
            "next": {"reloaded": True, "from": onnx_version, "to": sklearn_version},
        }
        assert client.post("/predict/next", json=record).json()["model_version"] == sklearn_version
        assert [m["version"] for m in client.get("/models").json()["models"]] == [sklearn_version] * 2
        assert client.post("/admin/reload").json()["reloaded"] is False
    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        for call in (stub.PredictEnsemble, stub.PredictAB):
            with pytest.raises(grpc.RpcError) as refused:
                call(prediction_pb2.PredictBatchRequest(records=[_grpc_record(record)]), metadata=METADATA)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def regressor(registry) -> str:
    """A scikit-learn regressor on the demo's features: it cannot be averaged with a classifier."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    train = demo.make_customers(500, DATE, seed=3)
    model = LinearRegression().fit(train[FEATURES], train["defaulted"])
    with mlflow.start_run(run_name="router-regressor"):
        logged = mlflow.sklearn.log_model(
            model,
            name="regressor",
            signature=infer_signature(train[FEATURES], model.predict(train[FEATURES])),
            registered_model_name="risk-regressor",
        )
    return f"models:/risk-regressor/{logged.registered_model_version}"


@pytest.mark.parametrize(
    "flags, says",
    [
        (("--challenger", f"plain={PLAIN}", "--ab", "champion=0.9,plain=0.1"), "--ab needs --ab-salt"),
        (("--challenger", "ghost=models:/credit-risk@nobody"), "challenger 'ghost': "),
        (("--challenger", f"batch={PLAIN}"), "'batch' cannot name a challenger: it is reserved"),
        (("--challenger", "REGRESSOR", "--ensemble", "champion=1,plain=1"), "cannot be combined"),
        ((), "no model: give --model-uri"),
    ],
    ids=["ab-without-salt", "unknown-alias", "route-word", "mismatched-ensemble", "no-champion"],
)
def test_a_bad_lineup_is_one_line_and_exit_1(registry, regressor, flags, says):
    flags = tuple(f"plain={regressor}" if f == "REGRESSOR" else f for f in flags)
    champion = () if says.startswith("no model") else ("--model-uri", CHAMPION)
    scoring = str(Path(sys.executable).with_name("scoring"))
    done = subprocess.run(
        [scoring, "serve", *champion, "--port", "0", "--no-grpc", *flags],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert says in errors[0] and "Traceback" not in done.stderr
    assert "serving" not in done.stderr
