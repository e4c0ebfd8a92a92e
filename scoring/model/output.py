"""What a model's scores look like, whichever backend produced them, and how they are written.

Output convention (also in the README):
    * ``prediction``: the model's label or value. When a model returns only class probabilities,
      the index of the most probable class.
    * ``probability``: only for classifiers. Binary: the probability of the positive class (class
      index 1, the second of the model's classes) as a double. Multiclass: an array of doubles, one
      per class, in class-index order.

Which columns a run writes is the job's ``--scores`` (``scoring.config.SCORES``): ``auto`` writes
probabilities wherever the model gives them, ``label`` only the prediction, ``probability`` fails for a
model that gives none (``select_scores``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.columns import PREDICTION, PROBABILITY
from scoring.errors import ModelError


@dataclass(frozen=True)
class Scores:
    """Model output for one batch.

    Attributes:
        prediction: One value per row.
        probability: None for regressors; 1-D (positive class) for binary classifiers; 2-D
            (rows x classes) for multiclass classifiers.
        methods: How each column was computed, as (column, method) pairs: ``predict``, an ONNX
            output's name, ``argmax of ...``.
        classes: The class labels in probability order, where the model names them.
    """

    prediction: np.ndarray
    probability: np.ndarray | None
    methods: tuple[tuple[str, str], ...] = ()
    classes: tuple | None = None


@dataclass(frozen=True)
class OutputSpec:
    """The shape of a model's output, found once on the driver by scoring a small sample.

    Attributes:
        prediction_type: ``double``, ``long`` or ``string``.
        probability: None, ``binary`` or ``multiclass``.
        methods: How each column is computed (see ``Scores``).
        classes: The class labels in probability order, where the model names them.
    """

    prediction_type: str
    probability: str | None
    methods: tuple[tuple[str, str], ...] = ()
    classes: tuple | None = None

    @classmethod
    def of(cls, scores: Scores) -> OutputSpec:
        """Describe the output of a sample batch."""
        kind = scores.prediction.dtype.kind
        prediction_type = {"f": "double", "i": "long", "u": "long", "b": "long"}.get(kind, "string")
        probability = None
        if scores.probability is not None:
            probability = "binary" if scores.probability.ndim == 1 else "multiclass"
        return cls(prediction_type, probability, scores.methods, scores.classes)

    def to_json(self) -> dict:
        """The output's description for the manifest: columns, how each is computed, the classes."""
        classes = None if self.classes is None else [_plain(c) for c in self.classes]
        return {
            "prediction_type": self.prediction_type,
            "probability": self.probability,
            "methods": dict(self.methods),
            "classes": classes,
        }


def select_scores(scores: Scores, mode: str) -> Scores:
    """The columns ``--scores`` asks for.

    Args:
        scores: What the model gave.
        mode: ``auto`` (everything the model gives), ``label`` (the prediction only) or
            ``probability`` (the probabilities are required).

    Raises:
        ModelError: ``probability`` was asked of a model that gives no class probabilities.
    """
    if mode == "label" and scores.probability is not None:
        methods = tuple((column, how) for column, how in scores.methods if column != PROBABILITY)
        return Scores(scores.prediction, None, methods, scores.classes)
    if mode == "probability" and scores.probability is None:
        raise ModelError(
            "--scores probability, but the model gives no class probabilities "
            "(it is not a classifier with predict_proba, nor does it output a probability matrix)"
        )
    return scores


def scores_from_outputs(
    arrays: Sequence[np.ndarray],
    rows: int,
    names: Sequence[str] | None = None,
    classes: tuple | None = None,
) -> Scores:
    """Map a model's raw outputs onto prediction and probability.

    A column-shaped output ([N] or [N, 1]) is the prediction; a matrix output ([N, C], C >= 2) holds
    class probabilities.

    Args:
        arrays: The model's outputs for one batch.
        rows: Rows in the batch, to check the outputs against.
        names: What each output is (``pyfunc predict``, an ONNX output's name), for ``Scores.methods``.
        classes: The class labels of the probability matrix's columns, where known.

    Raises:
        ModelError: The outputs have the wrong length or cannot be told apart.
    """
    column_at = [i for i, a in enumerate(arrays) if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)]
    matrix_at = [i for i, a in enumerate(arrays) if a.ndim == 2 and a.shape[1] >= 2]
    if len(column_at) > 1 or len(matrix_at) > 1 or len(column_at) + len(matrix_at) != len(arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ModelError(f"cannot map the model's outputs (shapes {shapes}) to prediction/probability")
    for a in arrays:
        if len(a) != rows:
            raise ModelError(f"the model returned {len(a)} rows for a batch of {rows} rows")
    matrix = arrays[matrix_at[0]].astype(np.float64) if matrix_at else None
    prediction = arrays[column_at[0]].reshape(-1) if column_at else np.argmax(matrix, axis=1)
    probability = None
    if matrix is not None:
        probability = matrix[:, 1] if matrix.shape[1] == 2 else matrix
    methods: tuple[tuple[str, str], ...] = ()
    if names is not None:
        source = names[column_at[0]] if column_at else f"argmax of {names[matrix_at[0]]}"
        methods = ((PREDICTION, source),)
        if matrix_at:
            methods += ((PROBABILITY, names[matrix_at[0]]),)
    return Scores(prediction, probability, methods, classes if matrix is not None else None)


def scores_frame(scores: Scores, output: OutputSpec) -> pd.DataFrame:
    """Scores as the pandas frame of the UDF's output struct."""
    columns = {PREDICTION: prediction_values(scores.prediction, output.prediction_type)}
    if output.probability == "binary":
        columns[PROBABILITY] = scores.probability.astype(np.float64)
    elif output.probability == "multiclass":
        columns[PROBABILITY] = list(scores.probability.astype(np.float64))
    return pd.DataFrame(columns)


def prediction_values(values: np.ndarray, prediction_type: str) -> np.ndarray:
    """Predictions as the numpy type of ``OutputSpec.prediction_type``: float64, int64 or str objects."""
    if prediction_type == "double":
        return values.astype(np.float64)
    if prediction_type == "long":
        return values.astype(np.int64)
    return values.astype(str).astype(object)


def _plain(value: object) -> object:
    """A numpy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
