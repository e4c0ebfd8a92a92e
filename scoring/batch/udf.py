"""The vectorized scoring UDF: Arrow batches in, model loaded once per Python worker.

Only the feature columns travel to Python (as one struct column); ids and carried columns stay in the
JVM and are joined back to the scores by Spark, row for row. Moving fewer columns through Python is
what makes a vectorized UDF fast.

On Spark 4.1 and later the UDF is an Arrow UDF: the features arrive as an Arrow struct, become a pandas
frame through pyarrow's own conversion, and the scores go back as Arrow arrays built here. On Spark 3.5
(EMR 7) it is the iterator pandas UDF, where PySpark converts both ways; it was measured to spend about
a quarter of the Python worker's time in that conversion, which is what the Arrow path saves.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from scoring import faults
from scoring.batch import model_cache
from scoring.lineup import Lineup
from scoring.model.combine import Column, lineup_columns, lineup_values
from scoring.model.output import OutputSpec
from scoring.model.predictors import OnnxPredictor, Predictor, PyfuncPredictor, ScorerSpec, load_predictor
from scoring.model.variants import variant_key

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType


def distribute_model(spark: SparkSession, local_path: str) -> str:
    """Ship the model's files to every executor, and return their name under ``SparkFiles``.

    Executors get the very files the driver resolved, so an alias moved mid-job changes nothing.
    ``local_path`` must have a name unique to this model (``scoring.model.resolve`` gives it one), since
    ``SparkFiles`` names files by their base name. A model directory travels as a zip archive, which
    each executor unpacks once: clusters refuse ``addFile`` of a local directory.
    """
    if os.path.isdir(local_path):
        archive = shutil.make_archive(local_path, "zip", root_dir=local_path)
        spark.sparkContext.addArchive(archive)
        return os.path.basename(archive)
    spark.sparkContext.addFile(local_path)
    return os.path.basename(local_path)


def output_schema(columns: Sequence[Column]) -> StructType:
    """The Spark struct the UDF returns: the run's score columns (``scoring.model.combine``)."""
    from pyspark.sql import types as T

    types = {"double": T.DoubleType(), "long": T.LongType(), "string": T.StringType(),
             "array<double>": T.ArrayType(T.DoubleType())}  # fmt: skip
    return T.StructType([T.StructField(c.name, types[c.type]) for c in columns])


@dataclass(frozen=True)
class Member:
    """One model of the run as the workers score it.

    Attributes:
        name: ``champion`` or the challenger's name.
        spec: How workers load it.
        output: The shape of its scores.
        features: Its feature columns, in its order (a subset of the run's, which are the union).
        shipped: Its native classifier, pickled: broadcast by ``ship_classifier``, or ``Shipped`` to
            local workers.
    """

    name: str
    spec: ScorerSpec
    output: OutputSpec
    features: tuple[str, ...]
    shipped: Broadcast | Shipped | None = None


def ship_classifier(spark: SparkSession, predictor: Predictor) -> Broadcast | None:
    """Broadcast the driver's loaded native classifier, so workers unpickle it instead of loading it.

    Returns:
        The broadcast pickle, or None when there is none to ship (``pickled_classifier``).
    """
    shipped = pickled_classifier(predictor)
    return None if shipped is None else spark.sparkContext.broadcast(shipped)


@dataclass(frozen=True)
class Shipped:
    """A pickled classifier handed to local workers with the pass: a broadcast's ``value``, without Spark."""

    value: bytes


def pickled_classifier(predictor: Predictor) -> bytes | None:
    """The driver's loaded native classifier, pickled, for the workers.

    Returns:
        The pickle; None when the predictor has no native classifier or its pickle is too big to
        ship (then every worker loads the model from its files).
    """
    classifier = getattr(predictor, "classifier", None)
    if classifier is None:
        return None
    shipped = pickle.dumps(classifier, protocol=pickle.HIGHEST_PROTOCOL)
    return None if len(shipped) > MAX_SHIPPED_BYTES else shipped


# A classifier bigger than this when pickled is loaded by each worker from the model's files.
MAX_SHIPPED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class BatchScorer:
    """Every model of the run, scoring one batch of typed features into the run's score columns.

    The one scoring step of both scoring passes: the UDF's (``scores_struct``) and the Arrow pass's
    (``scoring.batch.arrow_pass``). Pickled with the task and called on the Python workers.

    Attributes:
        members: Every model of the run, the champion first.
        lineup: How the models' scores combine (``scoring.model.combine``).
        keys: The batch's columns that hold the row's id, for its A/B variant (only under a split).
    """

    members: tuple[Member, ...]
    lineup: Lineup
    keys: tuple[str, ...] = ()

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        """Each model's output shape, by name."""
        return {m.name: m.output for m in self.members}

    @property
    def columns(self) -> list[Column]:
        """The score columns the run writes, in order."""
        return lineup_columns(self.lineup, self.outputs)

    def load(self) -> dict[str, Predictor]:
        """Every model of the run, from this worker's cache (loaded on first use)."""
        return {m.name: worker_predictor(m.spec, m.shipped) for m in self.members}

    def score(self, frame: pd.DataFrame, predictors: dict[str, Predictor]) -> dict[str, np.ndarray]:
        """The score columns of one batch of valid rows, the features typed as the signatures say."""
        ids = None
        if self.keys:
            ids = [variant_key(row) for row in zip(*(frame[k].tolist() for k in self.keys), strict=True)]
        scores = {m.name: predictors[m.name].predict(_model_frame(frame, m.features)) for m in self.members}
        return lineup_values(self.lineup, self.outputs, scores, ids)


def scores_struct(
    features: SparkColumn, members: Sequence[Member], lineup: Lineup, keys: Sequence[str] = ()
) -> SparkColumn:
    """A struct column of every score column of the run, for a struct column of features.

    Args:
        features: A struct of the run's features (the union of the models'), cast to the signatures'
            types, followed by the id columns ``keys`` names when the run has an A/B split.
        members: Every model of the run, the champion first.
        lineup: How the models' scores combine (``scoring.model.combine``).
        keys: The fields of ``features`` that hold the row's id, for its A/B variant.
    """
    from pyspark.sql import functions as F

    scorer = BatchScorer(tuple(members), lineup, tuple(keys))
    columns = scorer.columns
    schema = output_schema(columns)

    if hasattr(F, "arrow_udf"):  # Spark >= 4.1

        def score_arrow(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            predictors = scorer.load()
            after_batch = faults.worker_fault()
            for batch in batches:
                frame = pa.Table.from_struct_array(batch).to_pandas()
                yield values_arrow(scorer.score(frame, predictors), columns)
                after_batch()

        udf = F.arrow_udf(score_arrow, returnType=schema)  # the type hints say: iterator of arrays
    else:

        def score_pandas(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            predictors = scorer.load()
            after_batch = faults.worker_fault()
            for frame in batches:
                yield values_frame(scorer.score(frame, predictors), columns)
                after_batch()

        udf = F.pandas_udf(score_pandas, returnType=schema)  # the type hints say: iterator of frames
    # Non-deterministic, so that the optimizer never inlines the UDF once per output field and
    # scores every row twice.
    return udf.asNondeterministic()(features)


def _model_frame(frame: pd.DataFrame, features: tuple[str, ...]) -> pd.DataFrame:
    """One model's columns of the batch; the batch itself when they are all of it, in order (no copy)."""
    return frame if tuple(frame.columns) == features else frame[list(features)]


def values_arrow(values: dict[str, np.ndarray], columns: Sequence[Column]) -> pa.StructArray:
    """Score columns (``scoring.model.combine.lineup_values``) as the Arrow UDF's struct."""
    arrays = []
    for column in columns:
        data = values[column.name]
        if column.type == "array<double>":
            matrix = np.ascontiguousarray(data, dtype=np.float64)
            flat = pa.array(matrix.reshape(-1))
            offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
            arrays.append(pa.ListArray.from_arrays(offsets, flat))
        else:
            arrays.append(pa.array(data, type=_ARROW_TYPES[column.type]))
    return pa.StructArray.from_arrays(arrays, names=[c.name for c in columns])


def values_frame(values: dict[str, np.ndarray], columns: Sequence[Column]) -> pd.DataFrame:
    """Score columns as the pandas UDF's frame (Spark 3.5): a matrix becomes one list per row."""
    return pd.DataFrame(
        {c.name: list(values[c.name]) if c.type == "array<double>" else values[c.name] for c in columns}
    )


_ARROW_TYPES = {"double": pa.float64(), "long": pa.int64(), "string": pa.string()}


def worker_predictor(spec: ScorerSpec, shipped: Broadcast | Shipped | None = None) -> Predictor:
    """The model for ``spec``, loaded on first use in this Python worker and cached after."""

    def load() -> Predictor:
        if shipped is not None:
            return PyfuncPredictor.of_classifier(pickle.loads(shipped.value), spec.scores)
        path = spec.model_path
        if not os.path.isabs(path):  # shipped by Spark (``distribute_model``)
            from pyspark import SparkFiles

            path = SparkFiles.get(path)
        return load_predictor(spec, path, _gpu_ordinal())

    return model_cache.get_or_load(spec.cache_key, load)


def probe_on_worker(spec: ScorerSpec, sample: pd.DataFrame) -> tuple[OutputSpec, tuple]:
    """Score the probe's rows with this worker's model (``scoring.batch.pool.SlicePool.call``).

    The model stays cached here for the worker's first slice.

    Returns:
        The shape of the model's output, and an ONNX classifier's labels (``ScorerSpec.classes``).
    """
    predictor = worker_predictor(spec)
    output = OutputSpec.of(predictor.predict(sample))
    return output, predictor.classes if isinstance(predictor, OnnxPredictor) else ()


def _gpu_ordinal() -> int:
    """The GPU Spark assigned to this task (``spark.task.resource.gpu.amount``), else 0."""
    if "pyspark" not in sys.modules:  # a local worker (``scoring.batch.pool``): no Spark to ask
        return 0
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return int(gpus.addresses[0]) if gpus is not None and gpus.addresses else 0
