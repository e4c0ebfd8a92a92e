"""The benchmark's models: trained once, exported to ONNX and registered in a SQLite MLflow registry.

- ``bench``, a 100-tree depth-4 ``GradientBoostingClassifier``: registered as sklearn (alias ``sklearn``)
  and as ONNX (alias ``onnx``) in ``WORKDIR/mlflow.db``; the ONNX graph is also saved as
  ``WORKDIR/model/gbt.onnx`` for the ways that load a file.
- for the lineup ways, ``bench_retrained``: the same kind of classifier (100 trees, depth 4) retrained on
  another sample with another seed and ``subsample=0.8``, registered as ONNX only (alias ``onnx``), the
  second challenger of ``ours_lineup``; the first challenger is ``bench@sklearn``.
- for ``--gpu``, an ``MLPClassifier`` saved as ``WORKDIR/model/mlp.onnx`` only.

``WORKDIR/model/models.json`` records what was made; a later run reuses it when the training parameters
are the same.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import data

MODEL_NAME = "bench"
RETRAINED_NAME = "bench_retrained"
RETRAINED_SUBSAMPLE = 0.8
TREES = 100
DEPTH = 4
MLP_HIDDEN = (256, 256)


@dataclass(frozen=True)
class Models:
    """What the ways score with.

    Attributes:
        tracking_uri: The SQLite registry (``MLFLOW_TRACKING_URI`` for the ways).
        sklearn_uri: ``models:/bench@sklearn``.
        onnx_uri: ``models:/bench@onnx``.
        sklearn_version: Registry version of the sklearn model.
        onnx_version: Registry version of the ONNX model.
        gbt_onnx: Path of the ONNX graph of the classifier.
        mlp_onnx: Path of the MLP's ONNX graph, or None when it was not asked for.
        train_rows: Rows the models were trained on.
        retrained_uri: ``models:/bench_retrained@onnx``, or None when it was not asked for.
        retrained_version: Its registry version, or None.
    """

    tracking_uri: str
    sklearn_uri: str
    onnx_uri: str
    sklearn_version: str
    onnx_version: str
    gbt_onnx: str
    mlp_onnx: str | None
    train_rows: int
    retrained_uri: str | None = None
    retrained_version: str | None = None


def ensure_models(workdir: Path, train_rows: int, mlp: bool, retrained: bool = False) -> Models:
    """Train, export and register the models unless an earlier run made the same ones.

    Args:
        workdir: The benchmark's work directory (the registry lives there).
        train_rows: Size of the training sample.
        mlp: Whether the MLP of ``--gpu`` is needed too.
        retrained: Whether ``bench_retrained`` (the lineup's second challenger) is needed too.
    """
    from scoring import demo

    directory = workdir / "model"
    record = directory / "models.json"
    if record.exists():
        models = Models(**json.loads(record.read_text()))
        if models.train_rows == train_rows and Path(models.gbt_onnx).exists():
            os.environ["MLFLOW_TRACKING_URI"] = models.tracking_uri
            if mlp and models.mlp_onnx is None:
                models = _with_mlp(models, directory)
            if retrained and models.retrained_uri is None:
                models = _with_retrained(models)
            record.write_text(json.dumps(asdict(models), indent=2))
            return models
    # A fresh registry: versions and aliases from an earlier training would otherwise pile up.
    record.unlink(missing_ok=True)
    (workdir / "mlflow.db").unlink(missing_ok=True)
    shutil.rmtree(workdir / "mlartifacts", ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)

    x, y = data.training_sample(train_rows)
    classifier = _train_gbt(x, y)
    graph = demo.to_onnx(classifier, len(data.FEATURES))
    gbt_onnx = directory / "gbt.onnx"
    gbt_onnx.write_bytes(graph.SerializeToString())
    demo.use_local_registry(workdir)
    sklearn_version, onnx_version = _register(classifier, graph, x[:100])
    models = Models(
        tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
        sklearn_uri=f"models:/{MODEL_NAME}@sklearn",
        onnx_uri=f"models:/{MODEL_NAME}@onnx",
        sklearn_version=sklearn_version,
        onnx_version=onnx_version,
        gbt_onnx=str(gbt_onnx),
        mlp_onnx=None,
        train_rows=train_rows,
    )
    if mlp:
        models = _with_mlp(models, directory)
    if retrained:
        models = _with_retrained(models)
    record.write_text(json.dumps(asdict(models), indent=2))
    return models


def _frame(x: np.ndarray):
    import pandas as pd

    return pd.DataFrame(x, columns=list(data.FEATURES))


def _train_gbt(x: np.ndarray, y: np.ndarray, random_state: int = 0, subsample: float = 1.0):
    from sklearn.ensemble import GradientBoostingClassifier

    # Fitted on named columns, as the pyfunc ways hand it a DataFrame.
    model = GradientBoostingClassifier(
        n_estimators=TREES, max_depth=DEPTH, subsample=subsample, random_state=random_state
    )
    return model.fit(_frame(x), y)


def _with_retrained(models: Models) -> Models:
    """Train ``bench_retrained`` on another sample, and register its ONNX graph (alias ``onnx``).

    A challenger as a retraining gives one: the champion's kind and size (so it costs what the champion
    costs to score), other trees.
    """
    import mlflow
    from mlflow.models import infer_signature

    from scoring import demo

    x, y = data.training_sample(models.train_rows, seed=3)
    classifier = _train_gbt(x, y, random_state=1, subsample=RETRAINED_SUBSAMPLE)
    graph = demo.to_onnx(classifier, len(data.FEATURES))
    frame = _frame(x[:100])
    signature = infer_signature(frame, classifier.predict_proba(frame))
    with mlflow.start_run(run_name=f"{RETRAINED_NAME}-training"):
        info = mlflow.onnx.log_model(
            graph,
            name="onnx-model",
            signature=signature,
            registered_model_name=RETRAINED_NAME,
            pip_requirements=_pinned("onnx", "onnxruntime"),
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(RETRAINED_NAME, "onnx", version)
    return Models(
        **{**asdict(models), "retrained_uri": f"models:/{RETRAINED_NAME}@onnx", "retrained_version": version}
    )


def _pinned(*names: str) -> list[str]:
    """Requirements named, not inferred.

    MLflow's inference imports the model in a subprocess, 5 s or more per model, for environments that
    no way recreates (spark_udf runs with env_manager="local").
    """
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def _with_mlp(models: Models, directory: Path) -> Models:
    from sklearn.neural_network import MLPClassifier

    from scoring import demo

    x, y = data.training_sample(models.train_rows, seed=2)
    mlp = MLPClassifier(hidden_layer_sizes=MLP_HIDDEN, max_iter=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converging in 10 iterations is fine for timing
        mlp.fit(_frame(x), y)
    path = directory / "mlp.onnx"
    path.write_bytes(demo.to_onnx(mlp, len(data.FEATURES)).SerializeToString())
    return Models(**{**asdict(models), "mlp_onnx": str(path)})


def _register(classifier, graph, sample: np.ndarray) -> tuple[str, str]:
    """Log the classifier as sklearn and as ONNX under one name, and point the two aliases at them.

    ``scoring.demo.register_models`` does the same for the demo's own features, aliases and ranges;
    this is its shape for the benchmark's columns.
    """
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    frame = _frame(sample)
    signature = infer_signature(frame, classifier.predict_proba(frame))
    with mlflow.start_run(run_name=f"{MODEL_NAME}-training"):
        # MLflow 3.17 loads sklearn models with skops, which refuses types nobody named as trusted.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(classifier))
        sklearn_info = mlflow.sklearn.log_model(
            classifier,
            name="model",
            signature=signature,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=trusted,
            registered_model_name=MODEL_NAME,
            pip_requirements=_pinned("scikit-learn", "skops"),
        )
        onnx_info = mlflow.onnx.log_model(
            graph,
            name="onnx-model",
            signature=signature,
            registered_model_name=MODEL_NAME,
            pip_requirements=_pinned("onnx", "onnxruntime"),
        )
    versions = str(sklearn_info.registered_model_version), str(onnx_info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, "sklearn", versions[0])
    client.set_registered_model_alias(MODEL_NAME, "onnx", versions[1])
    return versions
