"""The Daft peers (issue 33): Daft's ``read_parquet`` -> a batch UDF class -> ``write_parquet``.

Daft's native (local) runner. The UDF class holds the model, made once per UDF worker; Daft runs it in
as many worker processes as cores (``max_concurrency``, ``use_process=True``), one ONNX Runtime
thread each, while its own native threads read and write the parquet. Batches of 10,000 rows, as
every other way.

- ``daft``: the ONNX model (``model/gbt.onnx``), ONNX Runtime with one intra-op thread.
- ``daft_sklearn``: the registry's scikit-learn model (``models:/bench@sklearn``, loaded with
  ``mlflow.sklearn.load_model``), ``predict_proba`` on the batch as a pandas frame of named columns:
  what the job's pyfunc backend is compared with.

Each writes the id, the prediction and the probability, as ``raw`` does. Daft comes from the
``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import daft
import numpy as np
import pyarrow as pa
from daft import DataType, col

from bench import data

BATCH_ROWS = 10_000
WORKERS = os.cpu_count() or 1
SCORES = DataType.struct({"prediction": DataType.float64(), "probability": DataType.float64()})


def _scores(label: np.ndarray, probability: np.ndarray) -> pa.StructArray:
    arrays = [pa.array(label, pa.float64()), pa.array(probability, pa.float64())]
    return pa.StructArray.from_arrays(arrays, names=["prediction", "probability"])


def _numpy(series: daft.Series) -> np.ndarray:
    return series.to_arrow().to_numpy(zero_copy_only=False)


@daft.cls(max_concurrency=WORKERS, use_process=True)
class OnnxScorer:
    """The ONNX Runtime session (one thread), made once per worker; the 20 features in, the scores out."""

    def __init__(self, model_path: str):
        from bench.ways import ort

        self.model = ort.session(model_path, "cpu", threads=1)

    @daft.method.batch(return_dtype=SCORES, unnest=True, batch_size=BATCH_ROWS)
    def score(self, *features: daft.Series) -> pa.StructArray:
        """Scores of one batch: prediction and probability."""
        from bench.ways import ort

        x = np.column_stack([_numpy(f) for f in features]).astype(np.float32, copy=False)
        return _scores(*ort.predict(self.model, x))


@daft.cls(max_concurrency=WORKERS, use_process=True)
class SklearnScorer:
    """The registry's scikit-learn model, loaded once per worker; the 20 features in, the scores out."""

    def __init__(self, model_uri: str):
        import mlflow.sklearn

        self.model = mlflow.sklearn.load_model(model_uri)

    @daft.method.batch(return_dtype=SCORES, unnest=True, batch_size=BATCH_ROWS)
    def score(self, *features: daft.Series) -> pa.StructArray:
        """Scores of one batch: prediction and probability."""
        import pandas as pd

        frame = pd.DataFrame({name: _numpy(f) for name, f in zip(data.FEATURES, features, strict=True)})
        probabilities = self.model.predict_proba(frame)
        label = self.model.classes_[probabilities.argmax(axis=1)].astype(np.float64)
        return _scores(label, probabilities[:, 1].astype(np.float64))


def _run(input_root: Path, output: Path, scorer) -> None:
    files = [str(p) for p in sorted(data.partition_dir(input_root).glob("*.parquet"))]
    frame = daft.read_parquet(files)
    scored = frame.select(col(data.ID_COLUMN), scorer.score(*[col(name) for name in data.FEATURES]))
    scored.write_parquet(str(output))


def daft_onnx(input_root: Path, output: Path, model_path: str) -> None:
    """``daft``: the ONNX model in Daft's batch UDF class."""
    _run(input_root, output, OnnxScorer(model_path))


def daft_sklearn(input_root: Path, output: Path, model_uri: str) -> None:
    """``daft_sklearn``: the registry's scikit-learn model in the same UDF class."""
    _run(input_root, output, SklearnScorer(model_uri))
