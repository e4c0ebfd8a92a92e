"""The second model: a scikit-learn pipeline logged the ordinary way, as a user logs one.

``StandardScaler`` then ``LogisticRegression`` on 30 float64 features ``x00`` ... ``x29`` (a
``make_classification`` sample as a DataFrame), logged with ``mlflow.sklearn.log_model`` with nothing
but a signature and an input example, both inferred from the training frame: the default ``predict``
as its pyfunc (labels), MLflow's inferred requirements, skops, and registered as ``pipeline`` in the
benchmark's registry. (A GradientBoosting pipeline cannot be logged so: ``log_model`` fails on skops'
refusal of its tree type unless ``skops_trusted_types`` names it, which is not the ordinary way.)

``WORKDIR/model/pipeline.json`` records it; a later run reuses it while the registry still has it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

NAME = "pipeline"
FEATURES = tuple(f"x{i:02d}" for i in range(30))
INFORMATIVE = 12


@dataclass(frozen=True)
class LoggedPipeline:
    """The registered pipeline.

    Attributes:
        uri: ``models:/pipeline/VERSION``.
        version: Its registry version.
        train_rows: Rows it was trained on.
    """

    uri: str
    version: str
    train_rows: int


def ensure_pipeline(workdir: Path, train_rows: int) -> LoggedPipeline:
    """Train, log and register the pipeline unless the registry of ``workdir`` has it already.

    The registry and its experiment must be set up (``bench.model.ensure_models`` does it).

    Args:
        workdir: The benchmark's work directory.
        train_rows: Size of the training sample.
    """
    record = workdir / "model" / "pipeline.json"
    if record.exists():
        logged = LoggedPipeline(**json.loads(record.read_text()))
        if logged.train_rows == train_rows and _registered(logged.version):
            return logged
    logged = _log(train_rows)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(logged), indent=2))
    return logged


def training_frame(rows: int):
    """Features (a DataFrame of the 30 columns) and labels, as a user's training data."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows, n_features=len(FEATURES), n_informative=INFORMATIVE, random_state=0
    )
    return pd.DataFrame(x, columns=list(FEATURES)), y


def _log(train_rows: int) -> LoggedPipeline:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = training_frame(train_rows)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    with mlflow.start_run(run_name=f"{NAME}-training"):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(x, pipeline.predict(x)),
            input_example=x.head(5),
            registered_model_name=NAME,
        )
    version = str(info.registered_model_version)
    return LoggedPipeline(f"models:/{NAME}/{version}", version, train_rows)


def _registered(version: str) -> bool:
    """Whether the registry has this version (a retrained batch model starts a fresh registry)."""
    import mlflow

    try:
        mlflow.MlflowClient().get_model_version(NAME, version)
    except mlflow.exceptions.MlflowException:
        return False
    return True
