"""The requests of the online benchmark, encoded once before any timing.

Each model gets its own records (a pool of them, sent round-robin where the load generator can): the
batch benchmark's 20 float32 features ``f00`` ... for its classifier, 30 float64 features ``x00`` ...
for the scikit-learn pipeline (``bench.online.pipeline``). Each record is encoded three ways:

- ``predict_json``: our ``POST /predict`` body, ``{"id": "...", "features": {"f00": ..., ...}}``;
- ``mlflow_json``: ``POST /invocations`` with one record in ``dataframe_split``, as a client of
  ``mlflow models serve`` sends it (our server takes the same body);
- ``predict_grpc``: a serialized ``scoring.v1.PredictRequest`` (id and a map of ``number_value``).

The C load generators read them from files (``write_lines``, ``write_grpc_frame``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench import data

PREDICT_METHOD = "/scoring.v1.PredictionService/Predict"


def records(count: int, features: Sequence[str] = data.FEATURES, seed: int = 7) -> np.ndarray:
    """``count`` standard-normal records, as float64 values of float32 draws (what JSON carries).

    The float32 draws are the batch benchmark's rows (``bench.data.features``) for its 20 features, and
    draws of the same kind for any other number of features.
    """
    rng = np.random.default_rng([seed, 13])
    if tuple(features) == data.FEATURES:
        return data.features(count, rng).astype(np.float64)
    return rng.standard_normal((count, len(features)), dtype=np.float32).astype(np.float64)


def predict_json(x: np.ndarray, features: Sequence[str] = data.FEATURES) -> list[bytes]:
    """One ``/predict`` body per row of ``x``."""
    return [
        json.dumps({"id": f"r{i}", "features": dict(zip(features, row.tolist(), strict=True))}).encode()
        for i, row in enumerate(x)
    ]


def mlflow_json(x: np.ndarray, features: Sequence[str] = data.FEATURES) -> list[bytes]:
    """One ``/invocations`` body per row of ``x``: a one-row ``dataframe_split``."""
    columns = list(features)
    return [
        json.dumps({"dataframe_split": {"columns": columns, "data": [row.tolist()]}}).encode() for row in x
    ]


def predict_grpc(x: np.ndarray, features: Sequence[str] = data.FEATURES) -> list[bytes]:
    """One serialized ``PredictRequest`` per row of ``x``."""
    from scoring.serve.pb import prediction_pb2

    bodies = []
    for i, row in enumerate(x):
        request = prediction_pb2.PredictRequest(id=f"r{i}")
        for name, value in zip(features, row.tolist(), strict=True):
            request.features[name].number_value = value
        bodies.append(request.SerializeToString())
    return bodies


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed (0), the length (4 bytes, big-endian), the message."""
    return b"\0" + struct.pack(">I", len(message)) + message


def write_lines(path: Path, bodies: Sequence[bytes]) -> Path:
    """The JSON bodies one per line (wrk's script reads them); JSON bodies hold no newline."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("a body holds a newline: it cannot be one line")
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path


def write_grpc_frame(path: Path, message: bytes) -> Path:
    """One framed gRPC request (h2load sends the same body on every request)."""
    path.write_bytes(grpc_frame(message))
    return path
