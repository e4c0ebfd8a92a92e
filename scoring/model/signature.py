"""The model's input columns: names, order, types and valid ranges, from its signature.

The feature columns come from the model's MLflow signature (or, for a bare ONNX graph, from its named
inputs), never from hard-coded names. No pyspark here: the batch job, the pre-flight and an online
service read the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.errors import ModelError, first_line

# Where a model declares the valid range of its features, in its MLmodel metadata.
FEATURE_RANGES_KEY = "feature_ranges"

# The MLflow column types we can feed to a model, and the ONNX tensor types that map onto them.
SUPPORTED_TYPES = ("boolean", "integer", "long", "float", "double", "string")
ONNX_TYPES = {
    "tensor(float)": "float",
    "tensor(double)": "double",
    "tensor(int64)": "long",
    "tensor(int32)": "integer",
    "tensor(bool)": "boolean",
    "tensor(string)": "string",
}

# The numpy type of each MLflow column type, as models receive it.
NUMPY_TYPES = {
    "boolean": np.bool_,
    "integer": np.int32,
    "long": np.int64,
    "float": np.float32,
    "double": np.float64,
    "string": object,
}


@dataclass(frozen=True)
class Feature:
    """One input column of the model.

    Attributes:
        name: Column name, as the input data must spell it.
        type: MLflow data type name (one of ``SUPPORTED_TYPES``).
        min: Smallest valid value, where the model declares one.
        max: Largest valid value, where the model declares one.
    """

    name: str
    type: str
    min: float | None = None
    max: float | None = None


def model_features(
    local_path: str, onnx_file: str | None, override: Sequence[str] | None, uri: str
) -> tuple[Feature, ...]:
    """The model's input columns, in the order it expects them.

    Args:
        local_path: The model directory, or the ``.onnx`` file.
        onnx_file: The ONNX graph, when the model is an ONNX model.
        override: Column names to use instead of the signature's (``--features``).
        uri: The reference as the user gave it, for messages.

    Raises:
        ModelError: The model names no input columns and none were given, or an input has a type
            that cannot be scored.
    """
    declared = _signature_features(local_path, uri)
    if declared is None and onnx_file is not None:
        declared = _onnx_input_features(onnx_file)
    if override:
        known = {f.name: f for f in declared or ()}
        default = _onnx_matrix_type(onnx_file) if onnx_file else "double"
        return tuple(known.get(name, Feature(name, default)) for name in override)
    if not declared:
        raise ModelError(
            f"model {uri!r} has no signature with named input columns; "
            "log it with a signature or pass --features a,b,c"
        )
    return declared


def _signature_features(local_path: str, uri: str) -> tuple[Feature, ...] | None:
    if not Path(local_path, "MLmodel").is_file():
        return None
    from mlflow.models import Model
    from mlflow.types.schema import ColSpec, DataType

    mlmodel = Model.load(local_path)
    signature = mlmodel.signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    ranges = _feature_ranges(mlmodel.metadata or {}, uri)
    features = []
    for spec in signature.inputs.inputs:
        dtype = spec.type if isinstance(spec, ColSpec) else None
        if not isinstance(dtype, DataType) or dtype.name not in SUPPORTED_TYPES:
            raise ModelError(
                f"model {uri!r}: input {spec.name!r} has type {getattr(spec, 'type', spec)}, "
                f"but only scalar columns of type {', '.join(SUPPORTED_TYPES)} can be scored"
            )
        low, high = ranges.get(spec.name, (None, None))
        features.append(Feature(spec.name, dtype.name, low, high))
    return tuple(features)


def _feature_ranges(metadata: dict, uri: str) -> dict[str, tuple[float | None, float | None]]:
    """Valid ranges the model declares in its MLmodel metadata.

    Declared at logging time as ``metadata={"feature_ranges": {"age": {"min": 18, "max": 120}}}``;
    rows outside a range are rejected, not scored.
    """
    declared = metadata.get(FEATURE_RANGES_KEY) or {}
    try:
        return {
            name: (
                None if bounds.get("min") is None else float(bounds["min"]),
                None if bounds.get("max") is None else float(bounds["max"]),
            )
            for name, bounds in declared.items()
        }
    except (AttributeError, TypeError, ValueError) as e:
        raise ModelError(
            f"model {uri!r}: metadata {FEATURE_RANGES_KEY!r} must map feature names to "
            '{"min": number, "max": number}'
        ) from e


def _onnx_session_inputs(onnx_file: str) -> list:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
        raise ModelError(f"cannot load ONNX graph {onnx_file!r}: {first_line(str(e))}") from e
    return session.get_inputs()


def _onnx_input_features(onnx_file: str) -> tuple[Feature, ...] | None:
    """One feature per graph input when every input is a single column (shape [N] or [N, 1])."""
    inputs = _onnx_session_inputs(onnx_file)
    if len(inputs) < 2 and not (inputs and len(inputs[0].shape) == 1):
        return None  # one [N, F] matrix input: its columns have no names
    features = []
    for i in inputs:
        if len(i.shape) > 2 or (len(i.shape) == 2 and i.shape[1] != 1) or i.type not in ONNX_TYPES:
            return None
        features.append(Feature(i.name, ONNX_TYPES[i.type]))
    return tuple(features)


def _onnx_matrix_type(onnx_file: str) -> str:
    inputs = _onnx_session_inputs(onnx_file)
    return ONNX_TYPES.get(inputs[0].type, "float") if len(inputs) == 1 else "float"
