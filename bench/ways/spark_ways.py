"""The Spark ways: each reads the date's partition, scores (or not) and writes parquet.

Every one starts its session with ``scoring.batch.session.get_session``, as the job does, with the same
master, and reads the input the same way (the root, filtered on the date partition). ONNX Runtime is
imported only by the ways that score, so that ``floor`` and ``zeros`` do not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from bench import data


def _session(master: str, name: str):
    from scoring.batch.session import get_session

    spark = get_session(master, app_name=f"bench-{name}")
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _read(spark, input_root: Path):
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(input_root))
    return frame.where(F.col(data.PARTITION_COLUMN) == F.lit(data.DATE))


def _features():
    from pyspark.sql import functions as F

    return F.struct(*[F.col(name) for name in data.FEATURES])


def _scores_type():
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField("prediction", T.DoubleType()), T.StructField("probability", T.DoubleType())]
    )


def floor(input_root: Path, output: Path, master: str) -> None:
    """Read, add a constant double column, write: Spark's own I/O, no Python worker."""
    from pyspark.sql import functions as F

    spark = _session(master, "floor")
    _read(spark, input_root).select(data.ID_COLUMN, F.lit(0.0).alias("prediction")).write.parquet(str(output))


def zeros(input_root: Path, output: Path, master: str) -> None:
    """An iterator pandas UDF that takes the features as one struct and returns zeros."""
    from pyspark.sql.functions import pandas_udf

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        for frame in batches:
            yield pd.Series(np.zeros(len(frame)))

    spark = _session(master, "zeros")
    udf = pandas_udf(score, "double")
    scored = _read(spark, input_root).select(data.ID_COLUMN, udf(_features()).alias("prediction"))
    scored.write.parquet(str(output))


def plain(input_root: Path, output: Path, master: str, model_path: str) -> None:
    """An iterator pandas UDF scoring with ONNX Runtime, the session cached per Python worker."""
    from pyspark.sql.functions import pandas_udf

    from bench.ways import ort

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = ort.session(model_path)
        for frame in batches:
            label, probability = ort.predict(model, frame.to_numpy(dtype=np.float32))
            yield pd.DataFrame({"prediction": label, "probability": probability})

    spark = _session(master, "plain")
    # Non-deterministic, as in the job, so that the optimizer never evaluates the UDF once per field.
    udf = pandas_udf(score, _scores_type()).asNondeterministic()
    scored = _read(spark, input_root).select(data.ID_COLUMN, udf(_features()).alias("s"))
    scored.select(data.ID_COLUMN, "s.prediction", "s.probability").write.parquet(str(output))


def predict_batch_udf(input_root: Path, output: Path, master: str, model_path: str) -> None:
    """``pyspark.ml.functions.predict_batch_udf`` with ONNX Runtime, the features as one struct.

    A struct reaches ``predict`` as one ``[rows, 20]`` matrix; 20 separate columns would need a
    ``predict`` of 20 named parameters.
    """
    from pyspark.ml.functions import predict_batch_udf as make_udf

    from bench.ways import ort

    def make_predict_fn():
        model = ort.session(model_path)

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            label, probability = ort.predict(model, x.astype(np.float32, copy=False))
            return {"prediction": label, "probability": probability}

        return predict

    spark = _session(master, "predict_batch_udf")
    udf = make_udf(make_predict_fn, return_type=_scores_type(), batch_size=10_000)
    scored = _read(spark, input_root).select(data.ID_COLUMN, udf(_features()).alias("s"))
    scored.select(data.ID_COLUMN, "s.prediction", "s.probability").write.parquet(str(output))


def spark_udf(input_root: Path, output: Path, master: str, model_uri: str) -> None:
    """``mlflow.pyfunc.spark_udf`` of the sklearn model from the registry, as its users call it.

    The model was logged with ``pyfunc_predict_fn="predict_proba"``: the UDF returns both classes'
    probabilities; the positive one is written.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = _session(master, "spark_udf")
    udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, env_manager="local", result_type=T.ArrayType(T.DoubleType())
    )
    features = [F.col(name) for name in data.FEATURES]
    scored = _read(spark, input_root).select(data.ID_COLUMN, udf(*features).alias("p"))
    scored.select(data.ID_COLUMN, F.col("p")[1].alias("probability")).write.parquet(str(output))


def row_udf(input_root: Path, output: Path, master: str, model_path: str) -> None:
    """A row-at-a-time ``@udf``: ONNX Runtime called once per row (the session cached per worker)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from bench.ways import ort

    def score(*values: float) -> float:
        model = ort.session(model_path)
        _, probability = ort.predict(model, np.array([values], dtype=np.float32))
        return float(probability[0])

    spark = _session(master, "row_udf")
    udf = F.udf(score, T.DoubleType())
    features = [F.col(name) for name in data.FEATURES]
    scored = _read(spark, input_root).select(data.ID_COLUMN, udf(*features).alias("probability"))
    scored.write.parquet(str(output))
