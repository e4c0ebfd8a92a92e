"""Packaging of the ``scoring`` library; pinned versions for CI live in requirements.txt."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="scoring",
    version="0.1.0",
    description="Batch scoring of parquet data with MLflow and ONNX models on Spark",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["scoring", "scoring.*"]),
    install_requires=[
        "pyspark>=3.5,<5",
        "mlflow>=3.1,<4",
        "onnxruntime>=1.20",
        "pyarrow>=15",
        # --table: scores published as an Apache Iceberg table, one commit per date.
        "pyiceberg[sql-sqlite,pyarrow]>=0.12",
        "pandas>=2.2",
        "numpy>=1.26",
        # Spearman's ranks of the challengers' agreement figures.
        "scipy>=1.11",
        # The run report's plots (``_report.html``).
        "matplotlib>=3.8",
    ],
    extras_require={
        "demo": ["scikit-learn>=1.5", "skl2onnx>=1.17"],
        # `scoring convert`: scikit-learn models to ONNX (XGBoost and LightGBM also need onnxmltools).
        "convert": ["skl2onnx>=1.17", "onnx>=1.16"],
        # `scoring serve`: the model over HTTP and gRPC (no pyspark on that path).
        "serve": [
            "fastapi>=0.110",
            "uvicorn>=0.29",
            "grpcio>=1.60",
            "grpcio-health-checking>=1.60",
            "protobuf>=6.31",
            "prometheus-client>=0.20",
            # The class labels of an ONNX classifier exported without a ZipMap are read from its graph.
            "onnx>=1.16",
        ],
        # `make bench`: the peers the batch benchmark measures beside the job (daft, ray_data; issue 33).
        # An extra, so that the project's own install does not grow by Ray and Daft. Exact pins, as a
        # benchmark compares versions: the newest of each that installs beside requirements.txt's pyarrow
        # 25.0.1, numpy 2.4.6 and pandas 2.3.3 on Python 3.11 without changing any of them.
        "bench": ["daft==0.7.26", "ray[data]==2.60.0"],
    },
    entry_points={"console_scripts": ["scoring=scoring.cli:console_script"]},
)
