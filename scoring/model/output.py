"""What a model's scores look like, whichever backend produced them, and how they are written.

Output convention (also in the README):
    * ``prediction``: the model's label or value. When a model returns only class probabilities,
      the index of the most probable class.
    * ``probability``: only for classifiers. Binary: the probability of the positive class (class
      index 1) as a double. Multiclass: an array of doubles, one per class, in class-index order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.errors import ModelError


@dataclass(frozen=True)
class Scores:
    """Model output for one batch.

    Attributes:
        prediction: One value per row.
        probability: None for regressors; 1-D (positive class) for binary classifiers; 2-D
            (rows x classes) for multiclass classifiers.
    """

    prediction: np.ndarray
    probability: np.ndarray | None


@dataclass(frozen=True)
class OutputSpec:
    """The shape of a model's output, found once on the driver by scoring a small sample.

    Attributes:
        prediction_type: ``double``, ``long`` or ``string``.
        probability: None, ``binary`` or ``multiclass``.
    """

    prediction_type: str
    probability: str | None

    @classmethod
    def of(cls, scores: Scores) -> OutputSpec:
        """Describe the output of a sample batch."""
        kind = scores.prediction.dtype.kind
        prediction_type = {"f": "double", "i": "long", "u": "long", "b": "long"}.get(kind, "string")
        probability = None
        if scores.probability is not None:
            probability = "binary" if scores.probability.ndim == 1 else "multiclass"
        return cls(prediction_type, probability)


def scores_from_outputs(arrays: Sequence[np.ndarray], rows: int) -> Scores:
    """Map a model's raw outputs onto prediction and probability.

    A column-shaped output ([N] or [N, 1]) is the prediction; a matrix output ([N, C], C >= 2) holds
    class probabilities.

    Args:
        arrays: The model's outputs for one batch.
        rows: Rows in the batch, to check the outputs against.

    Raises:
        ModelError: The outputs have the wrong length or cannot be told apart.
    """
    columns = [a.reshape(-1) for a in arrays if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)]
    matrices = [a for a in arrays if a.ndim == 2 and a.shape[1] >= 2]
    if len(columns) > 1 or len(matrices) > 1 or len(columns) + len(matrices) != len(arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ModelError(f"cannot map the model's outputs (shapes {shapes}) to prediction/probability")
    for a in arrays:
        if len(a) != rows:
            raise ModelError(f"the model returned {len(a)} rows for a batch of {rows} rows")
    matrix = matrices[0].astype(np.float64) if matrices else None
    prediction = columns[0] if columns else np.argmax(matrix, axis=1)
    probability = None
    if matrix is not None:
        probability = matrix[:, 1] if matrix.shape[1] == 2 else matrix
    return Scores(prediction, probability)


def scores_frame(scores: Scores, output: OutputSpec) -> pd.DataFrame:
    """Scores as the pandas frame of the UDF's output struct."""
    columns = {"prediction": _as_type(scores.prediction, output.prediction_type)}
    if output.probability == "binary":
        columns["probability"] = scores.probability.astype(np.float64)
    elif output.probability == "multiclass":
        columns["probability"] = list(scores.probability.astype(np.float64))
    return pd.DataFrame(columns)


def _as_type(values: np.ndarray, prediction_type: str) -> np.ndarray:
    if prediction_type == "double":
        return values.astype(np.float64)
    if prediction_type == "long":
        return values.astype(np.int64)
    return values.astype(str).astype(object)
