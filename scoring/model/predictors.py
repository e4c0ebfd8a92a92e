"""The two scoring backends, MLflow pyfunc and ONNX Runtime, behind one small interface.

A backend turns a pandas DataFrame of feature columns (already cast to the signature's types) into
:class:`~scoring.model.output.Scores`, mapped as ``scoring.model.output`` describes. Nothing here
imports pyspark, so an online service can score through the same code.

Classifiers give probabilities however they were logged: when an MLflow model's native model (the
scikit-learn flavor, or the scikit-learn API of XGBoost and LightGBM) has ``predict_proba`` and
``classes_``, it is scored through it, not through pyfunc's ``predict``, which gives labels only unless
the model was logged with ``pyfunc_predict_fn="predict_proba"``.

A scikit-learn model fitted on a DataFrame checks every frame it is handed, column by column (names,
dtypes, pandas' conversion to an array), in each step of a pipeline: for one record that costs several
times the model's own arithmetic. Where the result is the same value for value (``array_twin``), the
native classifier is handed the frame's array instead.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from scoring.columns import PREDICTION, PROBABILITY
from scoring.errors import ModelError
from scoring.model.output import Scores, scores_from_outputs, select_scores
from scoring.model.signature import NUMPY_TYPES, ONNX_TYPES, Feature

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyfunc", "onnx")
DEVICES = ("auto", "cpu", "cuda")

# MLflow flavors whose native model may be a classifier with predict_proba and classes_.
NATIVE_CLASSIFIER_FLAVORS = ("sklearn", "xgboost", "lightgbm")


@dataclass(frozen=True)
class ScorerSpec:
    """Everything a Python worker needs to load the model; small, immutable and picklable.

    Attributes:
        model_path: Where the model is on the worker: a path, or a name under ``SparkFiles``.
        fingerprint: The model's content identity; the worker cache is keyed by it.
        backend: ``pyfunc`` or ``onnx`` (never ``auto``: resolved on the driver).
        device: ``auto``, ``cpu`` or ``cuda``; ONNX only.
        threads: ONNX Runtime intra-op threads per task.
        features: The model's input columns, in order.
        onnx_file: The ONNX graph's path relative to ``model_path`` ("" for a bare .onnx file).
        scores: ``auto``, ``label`` or ``probability`` (see ``scoring.model.output.select_scores``).
        classes: An ONNX classifier's class labels as the driver read them from the graph
            (``graph_classes``; ``()`` when it has none), so that workers need not import ``onnx`` to
            read them again (0.5 s a process, mostly ``ml_dtypes``); None: not read yet.
    """

    model_path: str
    fingerprint: str
    backend: str
    device: str
    threads: int
    features: tuple[Feature, ...]
    onnx_file: str = ""
    scores: str = "auto"
    classes: tuple | None = None

    @property
    def cache_key(self) -> tuple:
        """Two specs with the same key can share one loaded model."""
        return (self.fingerprint, self.backend, self.device, self.threads, self.scores)


class Predictor(Protocol):
    """Scores one batch of feature rows."""

    def predict(self, frame: pd.DataFrame) -> Scores:
        """Score ``frame``, whose columns are the model's features in order."""


def choose_backend(requested: str, is_onnx: bool, has_pyfunc: bool) -> str:
    """Pick the backend for a model: ONNX Runtime for ONNX models unless pyfunc is asked for.

    Raises:
        ModelError: The requested backend cannot load this model.
    """
    if requested == "onnx" and not is_onnx:
        raise ModelError("--backend onnx needs an ONNX model (a .onnx file or the onnx flavor)")
    if requested == "pyfunc" and not has_pyfunc:
        raise ModelError("--backend pyfunc needs an MLflow model; a bare .onnx file has no pyfunc")
    if requested == "auto":
        return "onnx" if is_onnx else "pyfunc"
    return requested


def load_predictor(spec: ScorerSpec, model_path: str, device_id: int = 0) -> Predictor:
    """Load the model that ``spec`` names from ``model_path``.

    Args:
        spec: What to load and how.
        model_path: Local path of the model on this machine.
        device_id: GPU ordinal to use when ONNX Runtime runs on CUDA.
    """
    if spec.backend == "onnx":
        graph = f"{model_path}/{spec.onnx_file}" if spec.onnx_file else model_path
        return OnnxPredictor(
            graph, spec.features, spec.device, spec.threads, device_id, spec.scores, spec.classes
        )
    return PyfuncPredictor(model_path, spec.scores)


class PyfuncPredictor:
    """Any MLflow model: through its native classifier where it has one, else ``mlflow.pyfunc``."""

    def __init__(self, model_path: str, scores: str = "auto") -> None:
        import mlflow.pyfunc

        self._model = mlflow.pyfunc.load_model(model_path)
        self._classifier = native_classifier(self._model)
        self._twin = array_twin(self._classifier)
        self._scores = scores

    @classmethod
    def of_classifier(cls, classifier: object, scores: str = "auto") -> PyfuncPredictor:
        """A predictor over a native classifier already loaded (see ``classifier``)."""
        predictor = cls.__new__(cls)
        predictor._model = None
        predictor._classifier = classifier
        predictor._twin = array_twin(classifier)
        predictor._scores = scores
        return predictor

    @property
    def classifier(self) -> object | None:
        """The native classifier that scores, or None when pyfunc's ``predict`` does.

        It is a plain picklable object: the batch job loads the MLflow model once, on the driver, and
        ships this to its Python workers, so that no worker pays MLflow's load (seconds per worker for
        a skops-saved scikit-learn model) nor imports MLflow.
        """
        return self._classifier

    def predict(self, frame: pd.DataFrame) -> Scores:
        """Score a batch; ``scoring.model.output`` says how outputs are mapped."""
        if self._classifier is not None:
            return select_scores(self._classify(frame), self._scores)
        raw = self._model.predict(frame)
        if isinstance(raw, pd.DataFrame):
            arrays = [raw.iloc[:, 0].to_numpy()] if raw.shape[1] == 1 else [raw.to_numpy()]
        elif isinstance(raw, pd.Series):
            arrays = [raw.to_numpy()]
        else:
            arrays = [np.asarray(raw)]
        return select_scores(scores_from_outputs(arrays, len(frame), ["pyfunc predict"]), self._scores)

    def _classify(self, frame: pd.DataFrame) -> Scores:
        """The native classifier's own labels and, unless only labels are wanted, its probabilities."""
        model, features = self._inputs(frame)
        classes = tuple(model.classes_)
        if self._scores == "label":
            labels = np.asarray(model.predict(features)).reshape(-1)
            return Scores(labels, None, ((PREDICTION, "predict"),), classes)
        matrix = np.asarray(model.predict_proba(features), dtype=np.float64)
        labels = _labels(model, features, matrix)
        probability = matrix[:, 1] if matrix.shape[1] == 2 else matrix
        return Scores(labels, probability, ((PREDICTION, "predict"), (PROBABILITY, "predict_proba")), classes)

    def _inputs(self, frame: pd.DataFrame) -> tuple[object, pd.DataFrame | np.ndarray]:
        """The model to call and what to hand it: the twin and the frame's array where they are alike."""
        model = self._classifier
        if _float32_trees(model):
            frame = _within_float32(frame)
        if not hasattr(model, "feature_names_in_"):
            # A model fitted on an array warns at every batch when it is handed named columns.
            return model, frame.to_numpy()
        if self._twin is not None and _array_alike(frame, model.feature_names_in_):
            return self._twin, frame.to_numpy()
        return model, frame


# Classifiers whose predict() is, by its definition, the most probable class of their
# predict_proba() (or a monotone function's argmax, as a sigmoid's threshold). Only a near tie can
# round to a different class, and ``_labels`` asks predict() for those rows.
ARGMAX_CLASSIFIERS = frozenset({
    "RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier",
    "HistGradientBoostingClassifier", "DecisionTreeClassifier", "ExtraTreeClassifier",
    "LogisticRegression", "LogisticRegressionCV", "KNeighborsClassifier", "GaussianNB",
    "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB", "MLPClassifier",
    "XGBClassifier", "LGBMClassifier",
})  # fmt: skip
_ARGMAX_PACKAGES = ("sklearn", "xgboost", "lightgbm")

# Probabilities of the two most probable classes closer than this are a tie: predict() decides.
TIE = 1e-6


def _labels(model: object, features: pd.DataFrame | np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The classifier's predict() labels, from its probabilities where that is exact.

    Scoring a tree ensemble costs about as much in predict() as in predict_proba(); taking the labels
    from the probabilities halves the model's cost. Only for ``ARGMAX_CLASSIFIERS`` (an SVC's Platt
    scaling, for one, can disagree with its own predict()), and with predict() for near ties, whose
    tie-break differs between estimators (a gradient-boosted binary classifier picks class 1 at 0.5).
    """
    if not _predicts_argmax(model):
        return np.asarray(model.predict(features)).reshape(-1)
    labels = np.asarray(model.classes_)[np.argmax(matrix, axis=1)]
    top = np.partition(matrix, -2, axis=1)[:, -2:] if matrix.shape[1] > 2 else matrix
    ties = np.abs(top[:, -1] - top[:, -2]) <= TIE
    if ties.any():
        labels[ties] = np.asarray(model.predict(features[ties])).reshape(-1)
    return labels


def _predicts_argmax(model: object) -> bool:
    """Whether ``model`` (a pipeline's last step counts) is one of ``ARGMAX_CLASSIFIERS``."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        model = steps[-1][1]
    kind = type(model)
    return kind.__name__ in ARGMAX_CLASSIFIERS and kind.__module__.split(".")[0] in _ARGMAX_PACKAGES


# scikit-learn estimators whose predict_proba and predict (transform, for a pipeline's steps) do with a
# DataFrame of float columns exactly what they do with its array: they check the column names, then
# convert the frame as ``DataFrame.to_numpy`` does and compute on the array. Not here: anything that
# selects columns by name or dtype (ColumnTransformer, HistGradientBoosting's categorical features from
# dtypes), runs a user's function (FunctionTransformer), encodes categories, or holds sub-estimators
# fitted on the frame itself (Voting, Stacking).
ARRAY_ALIKE = frozenset({
    "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer", "Binarizer",
    "QuantileTransformer", "PowerTransformer", "SimpleImputer", "PolynomialFeatures", "PCA",
    "VarianceThreshold",
    "RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier",
    "DecisionTreeClassifier", "ExtraTreeClassifier", "LogisticRegression", "LogisticRegressionCV",
    "KNeighborsClassifier", "GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB",
    "MLPClassifier",
})  # fmt: skip


def array_twin(model: object | None) -> object | None:
    """A copy of a scikit-learn classifier (or pipeline) that scores a frame's array as it scores the frame.

    The copy is shallow (the fitted arrays and trees are shared) and has no ``feature_names_in_``, so that
    scikit-learn neither checks names it is not given nor warns that it was fitted with them. The caller
    still checks, at each call, that the frame's columns are the fitted names in order and of one float
    dtype (``_array_alike``): then ``DataFrame.to_numpy`` gives the array scikit-learn's own check would.

    Returns:
        The twin, or None when some step of ``model`` is not known to be alike (``ARRAY_ALIKE``) or was
        fitted on an array (nothing to skip then).
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    steps = getattr(model, "steps", None)
    if steps is None:
        return _stripped(model) if _alike(model) else None
    if not isinstance(steps, list) or not steps:
        return None
    estimators = [step for _, step in steps if step not in (None, "passthrough")]
    if not estimators or not all(_alike(step) for step in estimators):
        return None
    twin = copy.copy(model)
    twin.steps = [(name, _stripped(step) if step in estimators else step) for name, step in steps]
    return twin


# scikit-learn's tree ensembles, which compare every feature as float32 with float32 thresholds and
# refuse a value beyond float32's range ("too large for dtype('float32')") instead of scoring it.
FLOAT32_TREES = frozenset({
    "DecisionTreeClassifier", "ExtraTreeClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
    "GradientBoostingClassifier",
})  # fmt: skip
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float32_trees(model: object) -> bool:
    kind = type(model)
    return kind.__name__ in FLOAT32_TREES and kind.__module__.startswith("sklearn.")


def _within_float32(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with float64 values beyond float32's range brought to its edge, for a tree ensemble.

    A finite double beyond float32's range passes the row checks; every float32 threshold of a tree is
    below it, so the edge value takes each split exactly as the value itself (and as ONNX Runtime's
    float32 cast to infinity does): the scores are the tree's, where scikit-learn would raise instead.
    """
    wide = [name for name, dtype in frame.dtypes.items() if dtype == np.float64]
    beyond = [name for name in wide if np.abs(frame[name].to_numpy()).max(initial=0.0) > _FLOAT32_MAX]
    if not beyond:
        return frame
    clipped = frame.copy()
    for name in beyond:
        clipped[name] = np.clip(frame[name].to_numpy(), -_FLOAT32_MAX, _FLOAT32_MAX)
    return clipped


def _alike(estimator: object) -> bool:
    kind = type(estimator)
    if kind.__name__ not in ARRAY_ALIKE or not kind.__module__.startswith("sklearn."):
        return False
    # A step set to hand DataFrames on (set_output) names its output's columns from the fitted names.
    output = getattr(estimator, "_sklearn_output_config", None) or {}
    return output.get("transform", "default") == "default"


def _stripped(estimator: object) -> object:
    twin = copy.copy(estimator)
    twin.__dict__.pop("feature_names_in_", None)
    return twin


def _array_alike(frame: pd.DataFrame, names: np.ndarray) -> bool:
    """Whether ``frame`` is the fitted columns, in order, all of one float dtype, with no global output."""
    import sklearn

    if frame.columns.tolist() != names.tolist():
        return False
    dtypes = set(frame.dtypes)
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        return False
    # sklearn.set_config(transform_output="pandas") makes every step hand a DataFrame on.
    return sklearn.get_config().get("transform_output", "default") == "default"


def native_classifier(model: object) -> object | None:
    """The native classifier of a loaded pyfunc model, or None when it has none.

    A classifier here is a model of a ``NATIVE_CLASSIFIER_FLAVORS`` flavor with ``predict_proba`` and
    ``classes_`` (scikit-learn estimators and pipelines, XGBoost's and LightGBM's scikit-learn API).
    """
    flavors = getattr(getattr(model, "metadata", None), "flavors", None) or {}
    if not any(flavor in flavors for flavor in NATIVE_CLASSIFIER_FLAVORS):
        return None
    try:
        raw = model.get_raw_model()
    except NotImplementedError:  # MLflow's answer when a flavor's wrapper exposes no native model
        return None
    if callable(getattr(raw, "predict_proba", None)) and hasattr(raw, "classes_"):
        return raw
    return None


class OnnxPredictor:
    """An ONNX graph through ONNX Runtime, on CUDA where the node has it, else on the CPU."""

    def __init__(
        self,
        path: str,
        features: Sequence[Feature],
        device: str,
        threads: int,
        device_id: int = 0,
        scores: str = "auto",
        classes: tuple | None = None,
    ) -> None:
        """Open an ONNX Runtime session on ``path``.

        Args:
            path: The ONNX graph.
            features: The model's input columns, in order.
            device: ``auto``, ``cpu`` or ``cuda``.
            threads: ONNX Runtime intra-op threads.
            device_id: GPU ordinal on CUDA.
            scores: ``auto``, ``label`` or ``probability``.
            classes: The graph's class labels, already read (``ScorerSpec.classes``); None reads them.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Spark already runs one task per core: more threads per task would oversubscribe the node.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = onnx_providers(device, device_id)
        self._session = ort.InferenceSession(path, sess_options=options, providers=providers)
        check_providers(providers, self._session.get_providers(), device)
        self._features = list(features)
        self._inputs = self._session.get_inputs()
        self._output_names = [f"onnx output {o.name}" for o in self._session.get_outputs()]
        self._scores = scores
        self._classes = (classes or None) if classes is not None else graph_classes(path)

    @property
    def classes(self) -> tuple:
        """The graph's class labels, in probability order; ``()`` when it has none (``graph_classes``)."""
        return self._classes or ()

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, best first."""
        return self._session.get_providers()

    def predict(self, frame: pd.DataFrame) -> Scores:
        """Score a batch; ``scoring.model.output`` says how outputs are mapped."""
        outputs = self._session.run(None, self._feeds(frame))
        classes = next((tuple(sorted(o[0])) for o in outputs if _is_zipmap(o)), self._classes)
        scores = scores_from_outputs([_dense(o) for o in outputs], len(frame), self._output_names, classes)
        return select_scores(scores, self._scores)

    def _feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(self._inputs) == 1 and len(self._features) > 1:
            graph_input = self._inputs[0]
            dtype = NUMPY_TYPES[_onnx_scalar_type(graph_input.type)]
            return {graph_input.name: frame.to_numpy(dtype=dtype)}
        feeds = {}
        by_name = {f.name: f for f in self._features}
        for graph_input, feature in zip(self._inputs, self._features, strict=False):
            source = by_name.get(graph_input.name, feature)
            column = frame[source.name].to_numpy(dtype=NUMPY_TYPES[_onnx_scalar_type(graph_input.type)])
            feeds[graph_input.name] = column.reshape(-1, 1) if len(graph_input.shape) == 2 else column
        return feeds


# ONNX-ML classifier operators, whose class labels (in probability order) are node attributes.
_CLASSIFIER_OPS = ("TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")


def graph_classes(path: str) -> tuple | None:
    """The class labels of an ONNX classifier graph, in the order of its probability columns.

    A graph exported without a ZipMap (``zipmap=False``) gives plain probability tensors; its labels
    are the classifier node's integer or string ``classlabels_*`` attribute. None when the graph
    has no such node, or when the ``onnx`` package is not installed (a node may have ONNX Runtime only).
    """
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(path, load_external_data=False).graph
    for node in graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _CLASSIFIER_OPS:
            for attribute in node.attribute:
                # Tree ensembles name them classlabels_int64s; linear and SVM classifiers classlabels_ints.
                if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                    return tuple(int(c) for c in attribute.ints)
                if attribute.name == "classlabels_strings" and attribute.strings:
                    return tuple(c.decode() for c in attribute.strings)
    return None


def onnx_providers(device: str, device_id: int = 0) -> list:
    """ONNX Runtime execution providers for ``device`` on this machine.

    Raises:
        ModelError: ``cuda`` was forced but this onnxruntime build has no CUDA provider.
    """
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ModelError(
            "--device cuda, but this node's onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu)"
        )
    if has_cuda:
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_providers(requested: list, active: list[str], device: str) -> None:
    """Say so when ONNX Runtime dropped CUDA: it falls back to the CPU without an error.

    A node with onnxruntime-gpu but a missing or mismatched CUDA or cuDNN library gets a session that
    runs on the CPU (microsoft/onnxruntime#23372): GPU prices for CPU work. ``--device cuda`` makes
    that an error; ``--device auto`` logs a warning and scores on the CPU.

    Args:
        requested: The providers the session was created with.
        active: The providers the session actually has (``InferenceSession.get_providers()``).
        device: The job's ``--device``.

    Raises:
        ModelError: CUDA was forced and the session has no CUDA provider.
    """
    names = [p[0] if isinstance(p, tuple) else p for p in requested]
    if "CUDAExecutionProvider" not in names or "CUDAExecutionProvider" in active:
        return
    message = (
        "ONNX Runtime could not start CUDA on this node (a CUDA or cuDNN library is missing or does not "
        f"match onnxruntime-gpu); the session runs on {', '.join(active)}"
    )
    if device == "cuda":
        raise ModelError(f"--device cuda, but {message}")
    log.warning("--device auto: %s", message)


def _dense(output: object) -> np.ndarray:
    """ONNX outputs as arrays; a ZipMap output (a list of {class: probability}) becomes a matrix."""
    if _is_zipmap(output):
        classes = sorted(output[0])
        return np.array([[row[c] for c in classes] for row in output], dtype=np.float64)
    return np.asarray(output)


def _is_zipmap(output: object) -> bool:
    """Whether an ONNX output is a ZipMap: skl2onnx's default, a list of {class: probability}."""
    return isinstance(output, list) and bool(output) and isinstance(output[0], dict)


def _onnx_scalar_type(tensor_type: str) -> str:
    try:
        return ONNX_TYPES[tensor_type]
    except KeyError:
        raise ModelError(f"ONNX input type {tensor_type} is not supported") from None
