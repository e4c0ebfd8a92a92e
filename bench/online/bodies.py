"""The requests of the online benchmark, encoded once before any timing.

The records are drawn like the batch benchmark's rows (20 standard-normal float32 features), a pool
of them sent round-robin, each encoded three ways:

- ``predict_json``: our ``POST /predict`` body, ``{"id": "...", "features": {"f00": ..., ...}}``;
- ``mlflow_json``: ``POST /invocations`` with one record in ``dataframe_split``, as a client of
  ``mlflow models serve`` sends it (our server takes the same body);
- ``predict_grpc``: a serialized ``scoring.v1.PredictRequest`` (id and a map of ``number_value``).
"""

from __future__ import annotations

import json

import numpy as np

from bench import data

PREDICT_METHOD = "/scoring.v1.PredictionService/Predict"


def records(count: int, seed: int = 7) -> np.ndarray:
    """``count`` records of the 20 features, as float64 values of float32 draws (what JSON carries)."""
    return data.features(count, np.random.default_rng([seed, 13])).astype(np.float64)


def predict_json(x: np.ndarray) -> list[bytes]:
    """One ``/predict`` body per row of ``x``."""
    return [
        json.dumps({"id": f"r{i}", "features": dict(zip(data.FEATURES, row.tolist(), strict=True))}).encode()
        for i, row in enumerate(x)
    ]


def mlflow_json(x: np.ndarray) -> list[bytes]:
    """One ``/invocations`` body per row of ``x``: a one-row ``dataframe_split``."""
    columns = list(data.FEATURES)
    return [
        json.dumps({"dataframe_split": {"columns": columns, "data": [row.tolist()]}}).encode() for row in x
    ]


def predict_grpc(x: np.ndarray) -> list[bytes]:
    """One serialized ``PredictRequest`` per row of ``x``."""
    from scoring.serve.pb import prediction_pb2

    bodies = []
    for i, row in enumerate(x):
        request = prediction_pb2.PredictRequest(id=f"r{i}")
        for name, value in zip(data.FEATURES, row.tolist(), strict=True):
            request.features[name].number_value = value
        bodies.append(request.SerializeToString())
    return bodies
