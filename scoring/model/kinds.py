"""What kind of model a resolved model is, as far as the hardware it can use goes; no Spark.

The question it answers is whether GPU nodes can speed a model up. ONNX Runtime has no CUDA kernel
for the ONNX-ML tree ensemble operators (``TreeEnsembleClassifier``, ``TreeEnsembleRegressor``,
``TreeEnsemble``): a tree model exported to ONNX runs on the CPU even where CUDA is there. And the
pyfunc backend never asks for a GPU: scikit-learn, XGBoost and LightGBM models score on the CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# ONNX-ML operators of tree ensembles, which ONNX Runtime implements on the CPU only.
TREE_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
ONNX_ML_DOMAIN = "ai.onnx.ml"
# scikit-learn's tree and tree-ensemble estimators, by class name (their modules move between releases).
_SKLEARN_TREES = re.compile(r"DecisionTree|ExtraTree|RandomForest|GradientBoosting|IsolationForest")
# Libraries whose models are tree ensembles (their scikit-learn API, boosters and the MLflow flavors).
TREE_LIBRARIES = ("xgboost", "lightgbm", "catboost")


@dataclass(frozen=True)
class ModelKind:
    """How a model is scored and whether it is a tree ensemble.

    Attributes:
        backend: ``onnx`` or ``pyfunc``, as the job scores it.
        tree_ensemble: The operator or class that makes it a tree ensemble, or None.
    """

    backend: str
    tree_ensemble: str | None

    @property
    def can_use_gpu(self) -> bool:
        """Whether GPU nodes can score this model faster: an ONNX graph that is not a tree ensemble."""
        return self.backend == "onnx" and self.tree_ensemble is None

    def cpu_only_reason(self, uri: str) -> str | None:
        """Why ``uri`` scores on the CPU even on GPU nodes, in a clause; None when it can use the GPU."""
        if self.can_use_gpu:
            return None
        if self.backend == "onnx":
            return f"{uri} is a tree ensemble ({self.tree_ensemble}), which ONNX Runtime runs on the CPU only"
        tree = f"a tree ensemble ({self.tree_ensemble}) " if self.tree_ensemble else ""
        return f"{uri} is {tree}scored by pyfunc, which runs on the CPU only"

    def to_json(self) -> dict:
        """The kind as JSON values (an XCom)."""
        return {"backend": self.backend, "tree_ensemble": self.tree_ensemble}

    @classmethod
    def from_json(cls, value: dict) -> ModelKind:
        """The kind ``to_json`` wrote."""
        return cls(backend=value["backend"], tree_ensemble=value.get("tree_ensemble"))


def model_kind(backend: str, onnx_file: str | None, model_path: str, native: object | None) -> ModelKind:
    """The kind of a resolved model as the job scores it.

    Args:
        backend: The backend that scores it (``onnx`` or ``pyfunc``).
        onnx_file: Its ONNX graph, when it has one.
        model_path: Its local directory (or ``.onnx`` file).
        native: Its loaded native model (``PyfuncPredictor.classifier``), when pyfunc scores it and
            it has one.
    """
    if backend == "onnx" and onnx_file is not None:
        return ModelKind(backend, onnx_tree_ensemble(onnx_file))
    tree = (estimator_tree_ensemble(native) if native is not None else None) or flavor_tree_ensemble(
        model_path
    )
    return ModelKind(backend, tree)


def onnx_tree_ensemble(path: str) -> str | None:
    """The first ONNX-ML tree ensemble operator of the graph at ``path``, or None.

    None too when the ``onnx`` package is not installed (a node may have ONNX Runtime only).
    """
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(path, load_external_data=False).graph
    return next(
        (n.op_type for n in graph.node if n.domain == ONNX_ML_DOMAIN and n.op_type in TREE_ENSEMBLE_OPS),
        None,
    )


def estimator_tree_ensemble(estimator: object) -> str | None:
    """The class name of a scikit-learn, XGBoost or LightGBM tree model, or None.

    A pipeline is judged by its last step, the estimator that does the work.
    """
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:
        return estimator_tree_ensemble(steps[-1][1])
    cls = type(estimator)
    library = cls.__module__.split(".", 1)[0]
    if library in TREE_LIBRARIES or (library == "sklearn" and _SKLEARN_TREES.search(cls.__name__)):
        return cls.__name__
    return None


def flavor_tree_ensemble(model_path: str) -> str | None:
    """The tree library an MLflow model directory's flavors name (``xgboost``, ``lightgbm``), or None.

    For a model whose native model was not loaded (a regressor, a booster): the flavor says enough.
    """
    mlmodel = Path(model_path, "MLmodel")
    if not mlmodel.is_file():
        return None
    from mlflow.models import Model

    flavors = Model.load(str(mlmodel)).flavors
    library = next((name for name in TREE_LIBRARIES if name in flavors), None)
    if library is None:
        return None
    return str(flavors[library].get("model_class") or library).rsplit(".", 1)[-1]
