"""What scores: a model reference pinned to its files, its features, the predictors and their output.

Imports neither pyspark nor Airflow (checked by ``lint-imports``, see ``.importlinter``): the batch job,
the pre-flight and an online service all score through this package.

Modules: ``resolve`` (pin a reference and fetch its files), ``signature`` (the features and their
types), ``schema`` (which input column types can feed them), ``predictors`` (ONNX Runtime and MLflow
pyfunc), ``output`` (the prediction/probability convention).
"""
