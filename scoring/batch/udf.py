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
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from scoring import faults
from scoring.batch import model_cache
from scoring.model.output import OutputSpec, Scores, prediction_values, scores_frame
from scoring.model.predictors import Predictor, PyfuncPredictor, ScorerSpec, load_predictor

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import Column, SparkSession
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


def output_schema(output: OutputSpec) -> StructType:
    """The Spark struct the UDF returns: ``prediction`` and, for classifiers, ``probability``."""
    from pyspark.sql import types as T

    prediction = {"double": T.DoubleType, "long": T.LongType, "string": T.StringType}
    fields = [T.StructField("prediction", prediction[output.prediction_type]())]
    if output.probability == "binary":
        fields.append(T.StructField("probability", T.DoubleType()))
    elif output.probability == "multiclass":
        fields.append(T.StructField("probability", T.ArrayType(T.DoubleType())))
    return T.StructType(fields)


def ship_classifier(spark: SparkSession, predictor: Predictor) -> Broadcast | None:
    """Broadcast the driver's loaded native classifier, so workers unpickle it instead of loading it.

    Returns:
        The broadcast pickle, or None when the predictor has no native classifier or its pickle is
        too big to broadcast (then every worker loads the model from its files).
    """
    classifier = getattr(predictor, "classifier", None)
    if classifier is None:
        return None
    shipped = pickle.dumps(classifier, protocol=pickle.HIGHEST_PROTOCOL)
    if len(shipped) > MAX_SHIPPED_BYTES:
        return None
    return spark.sparkContext.broadcast(shipped)


# A classifier bigger than this when pickled is loaded by each worker from the model's files.
MAX_SHIPPED_BYTES = 512 * 1024 * 1024


def score_column(
    features: Column, spec: ScorerSpec, output: OutputSpec, shipped: Broadcast | None = None
) -> Column:
    """A column of scores for a struct column of features.

    Args:
        features: A struct of the model's features, in order and cast to the signature's types.
        spec: How workers load the model.
        output: The shape of the model's output.
        shipped: The native classifier, pickled and broadcast by ``ship_classifier``.
    """
    from pyspark.sql import functions as F

    schema = output_schema(output)
    if hasattr(F, "arrow_udf"):  # Spark >= 4.1

        def score_arrow(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            predictor = worker_predictor(spec, shipped)
            after_batch = faults.worker_fault()
            for batch in batches:
                frame = pa.Table.from_struct_array(batch).to_pandas()
                yield scores_arrow(predictor.predict(frame), output)
                after_batch()

        udf = F.arrow_udf(score_arrow, returnType=schema)  # the type hints say: iterator of arrays
    else:

        def score_pandas(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            predictor = worker_predictor(spec, shipped)
            after_batch = faults.worker_fault()
            for frame in batches:
                yield scores_frame(predictor.predict(frame), output)
                after_batch()

        udf = F.pandas_udf(score_pandas, returnType=schema)  # the type hints say: iterator of frames
    # Non-deterministic, so that the optimizer never inlines the UDF once per output field and
    # scores every row twice.
    return udf.asNondeterministic()(features)


def scores_arrow(scores: Scores, output: OutputSpec) -> pa.StructArray:
    """Scores as the Arrow struct of ``output_schema(output)``, the Arrow UDF's return value."""
    prediction = prediction_values(scores.prediction, output.prediction_type)
    arrays = [pa.array(prediction, type=_ARROW_PREDICTION[output.prediction_type])]
    names = ["prediction"]
    if output.probability == "binary":
        arrays.append(pa.array(scores.probability.astype(np.float64)))
        names.append("probability")
    elif output.probability == "multiclass":
        matrix = np.ascontiguousarray(scores.probability, dtype=np.float64)
        flat = pa.array(matrix.reshape(-1))
        offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
        arrays.append(pa.ListArray.from_arrays(offsets, flat))
        names.append("probability")
    return pa.StructArray.from_arrays(arrays, names=names)


_ARROW_PREDICTION = {"double": pa.float64(), "long": pa.int64(), "string": pa.string()}


def worker_predictor(spec: ScorerSpec, shipped: Broadcast | None = None) -> Predictor:
    """The model for ``spec``, loaded on first use in this Python worker and cached after."""

    def load() -> Predictor:
        from pyspark import SparkFiles

        if shipped is not None:
            return PyfuncPredictor.of_classifier(pickle.loads(shipped.value), spec.scores)

        path = spec.model_path if os.path.isabs(spec.model_path) else SparkFiles.get(spec.model_path)
        return load_predictor(spec, path, _gpu_ordinal())

    return model_cache.get_or_load(spec.cache_key, load)


def _gpu_ordinal() -> int:
    """The GPU Spark assigned to this task (``spark.task.resource.gpu.amount``), else 0."""
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return int(gpus.addresses[0]) if gpus is not None and gpus.addresses else 0
