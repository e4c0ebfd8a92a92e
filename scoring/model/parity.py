"""Parity of an export with its source, on what the job would write, and the speed of each.

A sample of input rows (``--input``, or the model's input example), typed and filtered as the job
types and rejects them, is scored with both models through the job's own predictors
(``scoring.model.predictors``) and output convention (``scoring.model.output``); the largest difference
of the columns written is the parity, which a conversion checks against its tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.errors import InputError, ModelError, first_line
from scoring.model.output import OutputSpec, scores_frame
from scoring.model.predictors import Predictor, ScorerSpec, load_predictor
from scoring.model.resolve import ResolvedModel
from scoring.model.rows import scorable_rows
from scoring.model.schema import arrow_column_types, check_columns
from scoring.model.signature import Feature

# Timed runs of each model over the sample; the best one counts.
SPEED_REPEATS = 5


@dataclass(frozen=True)
class Sample:
    """Feature rows to measure parity and speed on, typed as the job types them.

    Attributes:
        frame: The rows, one column per feature in model order, of the signature's numpy types.
        source: The parquet input they were read from; None for the model's logged input example.
        read: Rows read, before those the job would reject were left out.
    """

    frame: pd.DataFrame
    source: str | None
    read: int

    def describe(self) -> str:
        """One line: how many rows, from where, and how many were left out."""
        where = "the model's logged input example" if self.source is None else f"the first {self.read:,}"
        if self.source is not None:
            where += f" of {self.source}"
        left_out = self.read - len(self.frame)
        if left_out:
            where += (
                f", less {left_out:,} that the job would reject: null, NaN/inf, not castable or outside "
                "the model's declared range"
            )
        return f"sample: {len(self.frame):,} rows ({where})"


@dataclass(frozen=True)
class Parity:
    """How far a candidate model's written columns are from the source model's, on one sample.

    Attributes:
        rows: Rows compared.
        measure: ``probability`` (classifiers), ``prediction`` (regressors) or ``label`` (classifiers
            without probabilities).
        difference: The largest absolute difference of the measured column; for ``label``, the share
            of rows whose label differs. This is what the tolerance applies to.
        label_agreement: Share of rows with the same ``prediction``, for classifiers; else None.
    """

    rows: int
    measure: str
    difference: float
    label_agreement: float | None = None

    def within(self, tolerance: float) -> bool:
        """Whether the difference is at most ``tolerance``."""
        return self.difference <= tolerance

    def describe(self) -> str:
        """The figures, in words."""
        if self.measure == "label":
            what = f"labels differ on {self.difference:.4%} of {self.rows:,} rows"
        else:
            what = f"max |diff| of {self.measure} {self.difference:.3g} on {self.rows:,} rows"
        if self.label_agreement is not None and self.measure != "label":
            what += f", labels agree on {self.label_agreement:.4%}"
        return what


def read_sample(input_path: str, features: Sequence[Feature], rows: int) -> Sample:
    """The first ``rows`` rows of a parquet file or directory, the features' columns only.

    Raises:
        InputError: The input cannot be read, lacks a feature, has a type the job would refuse, or
            holds no scorable row.
    """
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(input_path, format="parquet", partitioning="hive")
        check_columns(arrow_column_types(dataset.schema), features, (), input_path)
        table = dataset.head(rows, columns=[f.name for f in features])
    except (OSError, ValueError) as e:  # not found, or not parquet
        raise InputError(f"input {input_path}: cannot read parquet: {first_line(str(e))}") from e
    return _sample(table.to_pandas(), features, input_path)


def example_sample(model: ResolvedModel) -> Sample:
    """The model's logged input example as a sample.

    Raises:
        InputError: The model has no input example that holds its features: ``--input`` is needed.
    """
    from mlflow.models import Model

    ask = f"model {model.uri!r} has no logged input example with its features: pass --input PARQUET"
    try:
        example = Model.load(model.local_path).load_input_example(model.local_path)
    except Exception as e:  # MLflow's own errors for an unreadable example
        raise InputError(ask) from e
    if isinstance(example, np.ndarray) and example.ndim == 2 and example.shape[1] == len(model.features):
        example = pd.DataFrame(example, columns=model.feature_names)
    if not isinstance(example, pd.DataFrame) or not set(model.feature_names) <= set(example.columns):
        raise InputError(ask)
    return _sample(example[model.feature_names], model.features, None)


def _sample(frame: pd.DataFrame, features: Sequence[Feature], source: str | None) -> Sample:
    typed, read = scorable_rows(frame, features), len(frame)
    if typed.empty:
        where = "the model's logged input example" if source is None else source
        raise InputError(f"none of the {read:,} rows read from {where} is scorable")
    return Sample(typed, source, read)


def onnx_predictor(onnx_file: str | Path, features: Sequence[Feature]) -> Predictor:
    """The job's ONNX predictor for a graph file, on the CPU with one thread, as one Spark task runs."""
    spec = ScorerSpec(str(onnx_file), "", "onnx", "cpu", 1, tuple(features))
    return load_predictor(spec, str(onnx_file))


def written_columns(predictor: Predictor, frame: pd.DataFrame) -> tuple[OutputSpec, pd.DataFrame]:
    """The ``prediction`` (and ``probability``) columns the job writes for ``frame``, and their shape."""
    scores = predictor.predict(frame)
    output = OutputSpec.of(scores)
    return output, scores_frame(scores, output)


def measure_parity(source: Predictor, candidate: Predictor, frame: pd.DataFrame) -> Parity:
    """Compare the columns the job would write with ``candidate`` to those it writes with ``source``.

    Raises:
        ModelError: The two write different columns or types (a label type, probabilities or none).
    """
    expected_spec, expected = written_columns(source, frame)
    actual_spec, actual = written_columns(candidate, frame)
    return compare_columns(expected_spec, expected, actual_spec, actual)


def compare_columns(
    expected_spec: OutputSpec, expected: pd.DataFrame, actual_spec: OutputSpec, actual: pd.DataFrame
) -> Parity:
    """Parity of two models' written columns (see ``Parity``).

    Raises:
        ModelError: The two write different columns or types.
    """
    for what in ("prediction_type", "probability"):
        want, got = getattr(expected_spec, what), getattr(actual_spec, what)
        if want != got:
            raise ModelError(
                f"the ONNX export writes {what.replace('_', ' ')} {got}, the source model {want}: "
                "the job's output would change shape"
            )
    rows = len(expected)
    if expected_spec.probability is None and expected_spec.prediction_type == "double":
        diff = np.abs(actual["prediction"].to_numpy() - expected["prediction"].to_numpy())
        return Parity(rows, "prediction", float(diff.max(initial=0.0)))
    agreement = float((actual["prediction"].to_numpy() == expected["prediction"].to_numpy()).mean())
    if expected_spec.probability is None:
        return Parity(rows, "label", 1.0 - agreement, agreement)
    want = np.stack(expected["probability"].to_numpy()).astype(np.float64)
    got = np.stack(actual["probability"].to_numpy()).astype(np.float64)
    return Parity(rows, "probability", float(np.abs(got - want).max(initial=0.0)), agreement)


def measured_rows_per_second(
    predictor: Predictor, frame: pd.DataFrame, repeats: int = SPEED_REPEATS, min_seconds: float = 0.2
) -> float:
    """Rows per second of ``predictor.predict`` on ``frame``: the best of at least ``repeats`` runs.

    Runs go on, up to 100, until they took ``min_seconds`` in all, so that a small sample's figure is
    not one scheduler hiccup.
    """
    best, spent, runs = float("inf"), 0.0, 0
    while runs < repeats or (spent < min_seconds and runs < 100):
        start = time.perf_counter()
        predictor.predict(frame)
        took = time.perf_counter() - start
        best, spent, runs = min(best, took), spent + took, runs + 1
    return len(frame) / max(best, 1e-9)


def check_tolerance(parity: Parity, tolerance: float, what: str, source: str) -> None:
    """Refuse a candidate whose difference is above the tolerance, before anything is kept."""
    if parity.within(tolerance):
        return
    figure = "share of differing labels" if parity.measure == "label" else f"max |diff| of {parity.measure}"
    raise ModelError(
        f"{what} of {source} is off by {parity.difference:.3g} ({figure} on {parity.rows:,} rows), "
        f"above --tolerance {tolerance:g}: nothing registered or written"
    )
