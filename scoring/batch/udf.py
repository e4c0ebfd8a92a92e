"""The vectorized scoring UDF: Arrow batches in, model loaded once per Python worker.

Only the feature columns travel to Python (as one struct column); ids and carried columns stay in the
JVM and are joined back to the scores by Spark, row for row. Moving fewer columns through Python is
what makes a pandas UDF fast.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from scoring import faults
from scoring.batch import model_cache
from scoring.model.output import OutputSpec, scores_frame
from scoring.model.predictors import Predictor, ScorerSpec, load_predictor

if TYPE_CHECKING:
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


def score_column(features: Column, spec: ScorerSpec, output: OutputSpec) -> Column:
    """A column of scores for a struct column of features.

    Args:
        features: A struct of the model's features, in order and cast to the signature's types.
        spec: How workers load the model.
        output: The shape of the model's output.
    """
    from pyspark.sql.functions import pandas_udf

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        predictor = worker_predictor(spec)
        after_batch = faults.worker_fault()
        for frame in batches:
            yield scores_frame(predictor.predict(frame), output)
            after_batch()

    udf = pandas_udf(score_batches, returnType=output_schema(output))
    # Non-deterministic, so that the optimizer never inlines the UDF once per output field and
    # scores every row twice.
    return udf.asNondeterministic()(features)


def worker_predictor(spec: ScorerSpec) -> Predictor:
    """The model for ``spec``, loaded on first use in this Python worker and cached after."""

    def load() -> Predictor:
        from pyspark import SparkFiles

        path = spec.model_path if os.path.isabs(spec.model_path) else SparkFiles.get(spec.model_path)
        return load_predictor(spec, path, _gpu_ordinal())

    return model_cache.get_or_load(spec.cache_key, load)


def _gpu_ordinal() -> int:
    """The GPU Spark assigned to this task (``spark.task.resource.gpu.amount``), else 0."""
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return int(gpus.addresses[0]) if gpus is not None and gpus.addresses else 0
