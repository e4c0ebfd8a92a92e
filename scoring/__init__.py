"""Batch scoring of parquet data with MLflow and ONNX models on Spark.

The package is importable without pyspark: only the modules that build Spark plans import it, and they
do so lazily, so the model-resolution and scoring code can be reused by an online service.
"""

from pathlib import Path

__version__ = "0.1.0"

# The checkout this package runs from (jobs/, emr/, dags/ beside it) when installed in editable mode.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
