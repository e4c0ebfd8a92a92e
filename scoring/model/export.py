"""Exporting a native model to ONNX: skl2onnx's converters (onnxmltools' for XGBoost and LightGBM).

The first step of ``scoring convert`` (``scoring.model.convert``): the features' types choose the
graph's input precision (``onnx_dtype``), classifiers are exported without ZipMap so that the
probabilities are a plain tensor, and a pipeline's boosters get their converters registered first.
skl2onnx and onnx are the ``convert`` extra, imported only when an export runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring.errors import ModelError, first_line
from scoring.model.resolve import ResolvedModel
from scoring.model.signature import Feature

# The ONNX opset of the exports: what the demo uses, and what every supported onnxruntime runs.
TARGET_OPSET = 17

DTYPES = ("auto", "float", "double")

_EXTRA = "scoring convert needs skl2onnx and onnx: pip install 'scoring[convert]'"

# Flavors whose native model skl2onnx (with onnxmltools' converters for the last two) can convert.
_CONVERTIBLE_FLAVORS = ("sklearn", "xgboost", "lightgbm")

_NUMERIC = ("boolean", "integer", "long", "float", "double")


@dataclass(frozen=True)
class Export:
    """An ONNX graph converted from a native model.

    Attributes:
        graph: The ONNX model (an ``onnx.ModelProto``).
        dtype: ``float`` or ``double``: the precision of its floating-point input.
        inputs: Its graph inputs, as ``name: type[shape]`` for messages.
        note: Why the precision differs from the one asked for, if it does.
    """

    graph: Any
    dtype: str
    inputs: tuple[str, ...]
    note: str | None = None


def require_converter() -> None:
    """Check that skl2onnx and onnx are installed.

    Raises:
        ModelError: They are not: the message names the extra that installs them.
    """
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as e:
        raise ModelError(_EXTRA) from e


def native_model(model: ResolvedModel) -> object:
    """The native model of an MLflow model of a convertible flavor (sklearn, xgboost, lightgbm).

    Raises:
        ModelError: The model has no convertible flavor, or MLflow cannot load it.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    flavors = sorted(set(Model.load(model.local_path).flavors) - {"python_function"})
    if not any(flavor in flavors for flavor in _CONVERTIBLE_FLAVORS):
        raise ModelError(
            f"model {model.uri!r} has flavor {', '.join(flavors) or 'none'}: scoring convert exports "
            "scikit-learn models (and XGBoost or LightGBM ones, with onnxmltools installed)"
        )
    try:
        return mlflow.pyfunc.load_model(model.local_path).get_raw_model()
    except Exception as e:  # MLflow's and the flavors' (skops') own errors; the model cannot be loaded
        raise ModelError(f"cannot load model {model.uri!r}: {first_line(str(e))}") from e


def onnx_dtype(features: Sequence[Feature], requested: str = "auto") -> str:
    """The precision of the export: ``double`` when a feature is 64-bit (double or long) under ``auto``."""
    if requested != "auto":
        return requested
    return "double" if any(f.type in ("double", "long") for f in features) else "float"


def initial_types(features: Sequence[Feature], dtype: str) -> list[tuple[str, Any]]:
    """skl2onnx's input types for the features.

    Numeric features (booleans and integers included) become one ``[N, F]`` matrix named ``features``,
    in signature order, of ``dtype``: what a scikit-learn estimator or pipeline takes. With a text
    feature, each feature is its own ``[N, 1]`` input named after its column, as a pipeline that
    starts with a ``ColumnTransformer`` selecting columns by name takes them.
    """
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = DoubleTensorType if dtype == "double" else FloatTensorType
    if all(f.type in _NUMERIC for f in features):
        return [("features", number([None, len(features)]))]
    return [
        (f.name, StringTensorType([None, 1]) if f.type == "string" else number([None, 1])) for f in features
    ]


def to_onnx(native: object, features: Sequence[Feature], dtype: str = "auto") -> Export:
    """Convert a native model to ONNX with skl2onnx, classifiers without ZipMap.

    Under ``auto``, a model whose double-precision graph ONNX Runtime cannot run (scikit-learn's tree
    ensembles, which compute in float32 anyway) is exported in float32, with a note saying so.

    Args:
        native: A scikit-learn estimator or pipeline (XGBoost and LightGBM estimators need onnxmltools).
        features: The model's features, in signature order.
        dtype: ``auto``, ``float`` or ``double`` (see ``onnx_dtype``).

    Raises:
        ModelError: skl2onnx cannot convert the model, or ONNX Runtime cannot load the result.
    """
    _register_booster_converters(native)
    chosen = onnx_dtype(features, dtype)
    try:
        graph, inputs = _convert(native, features, chosen)
        return Export(graph, chosen, inputs)
    except ModelError as e:
        if dtype != "auto" or chosen == "float":
            raise
        graph, inputs = _convert(native, features, "float")
        ops = {node.op_type for node in graph.graph.node}
        why = (
            "its tree ensemble ops compute in float32, as scikit-learn's trees do"
            if any(op.startswith("TreeEnsemble") for op in ops)
            else str(e)
        )
        note = (
            f"exported in float32: ONNX Runtime cannot run {type(native).__name__} in double precision "
            f"({why}); the job feeds it float32"
        )
        return Export(graph, "float", inputs, note)


def _convert(native: object, features: Sequence[Feature], dtype: str) -> tuple[Any, tuple[str, ...]]:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn

    options = {id(native): {"zipmap": False}} if _is_classifier(native) else None
    try:
        graph = convert_sklearn(
            native, initial_types=initial_types(features, dtype), options=options, target_opset=TARGET_OPSET
        )
    except Exception as e:  # skl2onnx raises many types (RuntimeError, MissingShapeCalculator, ...)
        raise ModelError(
            f"cannot convert {type(native).__name__} to ONNX with skl2onnx: {first_line(str(e))}"
        ) from e
    try:
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own untyped errors
        raise ModelError(
            f"ONNX Runtime cannot run the {dtype}-precision export of {type(native).__name__}: "
            f"{first_line(str(e))}"
        ) from e
    inputs = tuple(
        f"{i.name}: {i.type.removeprefix('tensor(').rstrip(')')}{list(i.shape)}" for i in session.get_inputs()
    )
    return graph, inputs


def _is_classifier(native: object) -> bool:
    return callable(getattr(native, "predict_proba", None)) and hasattr(native, "classes_")


def _register_booster_converters(native: object) -> None:
    """Teach skl2onnx onnxmltools' XGBoost and LightGBM converters, where the model holds one.

    Raises:
        ModelError: The model holds an XGBoost or LightGBM estimator and onnxmltools is not installed.
    """
    libraries = {type(part).__module__.split(".")[0] for part in _parts(native)} & {"xgboost", "lightgbm"}
    if not libraries:
        return
    names = " and ".join(sorted({"xgboost": "XGBoost", "lightgbm": "LightGBM"}[lib] for lib in libraries))
    try:
        import onnxmltools  # noqa: F401
    except ImportError as e:
        raise ModelError(
            f"converting a {names} model needs onnxmltools' converters: pip install onnxmltools"
        ) from e
    if "xgboost" in libraries:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        _register_booster_pair("XGBoost", XGBClassifier, XGBRegressor, convert_xgboost)
    if "lightgbm" in libraries:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        _register_booster_pair(
            "LightGbm", LGBMClassifier, LGBMRegressor, convert_lightgbm, regressor_options={"split": None}
        )


def _register_booster_pair(
    alias_prefix: str,
    classifier: type,
    regressor: type,
    converter: Callable[..., Any],
    regressor_options: dict[str, Any] | None = None,
) -> None:
    """Register one booster library's classifier and regressor with skl2onnx, under onnxmltools' aliases.

    Args:
        alias_prefix: What precedes each class's name in its alias (``XGBoost``: ``XGBoostXGBClassifier``).
        classifier: The library's classifier class; registered with the options that turn ZipMap off.
        regressor: The library's regressor class.
        converter: onnxmltools' converter of the library's models.
        regressor_options: The options the regressor's converter takes (None: none).
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        classifier, f"{alias_prefix}{classifier.__name__}", calculate_linear_classifier_output_shapes,
        converter, options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )  # fmt: skip
    update_registered_converter(
        regressor, f"{alias_prefix}{regressor.__name__}", calculate_linear_regressor_output_shapes,
        converter, options=regressor_options,
    )  # fmt: skip


def _parts(native: object) -> Iterator[object]:
    """The model and the estimators nested in it (pipeline steps, column transformers' parts)."""
    yield native
    get_params = getattr(native, "get_params", None)
    if callable(get_params):
        try:
            params = get_params(deep=True)
        except Exception:  # a foreign estimator's get_params: nothing nested that we can see
            return
        yield from (value for value in params.values() if hasattr(value, "fit"))


def save_onnx(graph: Any, path: str | Path) -> Path:
    """Write an ONNX graph to ``path`` and return it."""
    import onnx

    onnx.save_model(graph, str(path))
    return Path(path)
