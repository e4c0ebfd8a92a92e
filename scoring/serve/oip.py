"""The Open Inference Protocol v2 (KServe, Triton, Seldon MLServer), shared by HTTP and gRPC.

A request names its input tensors: one per feature (named as the feature, shape ``[N]`` or ``[N, 1]``),
or one ``[N, F]`` tensor whose columns are the features in the signature's order. The answer has a
``prediction`` tensor and, for classifiers, a ``probability`` tensor (``[N]`` for binary, ``[N, C]``
for multiclass), typed as the batch job writes them. Transports convert their own encodings (JSON
lists, gRPC contents or raw bytes) to ``Tensor`` and back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.model.signature import Feature
from scoring.serve.errors import BadRequest, NotFound
from scoring.serve.served_model import ServedModel, score_arrays
from scoring.serve.service import Scored

# The longest tensor or model name a message repeats back.
MAX_NAME = 256

# Open Inference Protocol datatypes and their numpy types.
DATATYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# The datatype of each MLflow column type.
FEATURE_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
}
_PREDICTION_DATATYPES = {"double": "FP64", "long": "INT64", "string": "BYTES"}


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request or an answer, decoded to numpy (BYTES as Python str)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def check_model(served: ServedModel, name: str, version: str | None = None) -> None:
    """Refuse a request for a model (or version) this server does not serve.

    Raises:
        NotFound: ``name`` or ``version`` is not the served model's.
    """
    if name != served.model.name or (version not in (None, "", served.model.version)):
        asked = f"model {name[:MAX_NAME]!r}" + (f" version {version[:MAX_NAME]!r}" if version else "")
        raise NotFound(f"{asked} is not served here")


def columns_from_tensors(
    tensors: Sequence[Tensor], features: Sequence[Feature]
) -> tuple[dict[str, np.ndarray], int]:
    """The request's feature columns and rows: one tensor per feature, or one [N, F] tensor.

    Raises:
        BadRequest: The tensors do not fit the model's features.
    """
    if not tensors:
        raise BadRequest("inputs: no input tensors")
    names = [f.name for f in features]
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].shape[1] == len(names) > 1:
        matrix = tensors[0].data.reshape(tensors[0].shape)
        return {name: _column(matrix[:, j]) for j, name in enumerate(names)}, tensors[0].shape[0]
    columns = {}
    for tensor in tensors:
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadRequest(
                f"input {tensor.name[:MAX_NAME]!r}: shape {list(tensor.shape)}; a feature tensor is [N] or "
                f"[N, 1], or send one [N, {len(names)}] tensor"
            )
        columns[tensor.name] = _column(tensor.data.reshape(-1))
    rows = {len(c) for c in columns.values()}
    if len(rows) != 1:
        raise BadRequest("inputs: the input tensors have different numbers of rows")
    return columns, rows.pop()


def _column(values: np.ndarray) -> np.ndarray | list:
    """A typed tensor's column as it is; JSON values as a list, which the row checks cast one way."""
    return values.tolist() if values.dtype == object else values


def output_tensors(scored: Scored, requested: Sequence[str] | None = None) -> list[Tensor]:
    """``prediction`` and (for classifiers) ``probability``, or only the ``requested`` ones.

    Raises:
        BadRequest: A requested output is not one the model gives.
    """
    prediction, probability = score_arrays(scored.scores, scored.served.output)
    rows = len(prediction)
    output = scored.served.output
    tensors = {
        "prediction": Tensor("prediction", _PREDICTION_DATATYPES[output.prediction_type], (rows,), prediction)
    }
    if probability is not None:
        tensors["probability"] = Tensor("probability", "FP64", probability.shape, probability)
    for name in requested or ():
        if name not in tensors:
            raise BadRequest(f"outputs: the model has no output {name!r} (it has {', '.join(tensors)})")
    return [tensors[name] for name in (requested or tensors)]


def model_metadata(served: ServedModel) -> dict:
    """``GET /v2/models/{name}`` (and gRPC ``ModelMetadata``)."""
    output = served.output
    outputs = [
        {"name": "prediction", "datatype": _PREDICTION_DATATYPES[output.prediction_type], "shape": [-1]}
    ]
    if output.probability == "binary":
        outputs.append({"name": "probability", "datatype": "FP64", "shape": [-1]})
    elif output.probability == "multiclass":
        outputs.append(
            {"name": "probability", "datatype": "FP64", "shape": [-1, len(output.classes or ()) or -1]}
        )
    return {
        "name": served.model.name,
        "versions": [served.model.version],
        "platform": "onnxruntime_onnx" if served.backend == "onnx" else "mlflow_pyfunc",
        "inputs": [
            {"name": f.name, "datatype": FEATURE_DATATYPES[f.type], "shape": [-1]} for f in served.features
        ],
        "outputs": outputs,
    }


def server_metadata() -> dict:
    """``GET /v2`` (and gRPC ``ServerMetadata``)."""
    from importlib.metadata import version

    return {"name": "scoring", "version": version("scoring"), "extensions": []}


def tensor_from_json(item: object, where: str) -> Tensor:
    """A JSON input tensor: ``{"name", "datatype", "shape", "data"}`` (data flat or nested).

    Raises:
        BadRequest: The tensor is malformed or its data does not fit its shape.
    """
    if not isinstance(item, Mapping) or not all(k in item for k in ("name", "datatype", "shape", "data")):
        raise BadRequest(f"{where}: a tensor needs name, datatype, shape and data")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise BadRequest(f"{where}: a tensor's name must be a string of at most {MAX_NAME} characters")
    if datatype not in DATATYPES:
        raise BadRequest(f"{where}: unknown datatype; the protocol's are {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers")
    data = np.asarray(item["data"], dtype=object).reshape(-1)
    if data.size != int(np.prod(shape)):
        raise BadRequest(f"{where}: {data.size} values for shape {shape}")
    # The JSON values as they came, not cast to the declared datatype: the row checks cast them as
    # every other dialect's (a 1.5 for an integer feature is not_castable, not truncated to 1).
    return Tensor(name, datatype, tuple(shape), data)


def tensor_to_json(tensor: Tensor) -> dict:
    """An output tensor as the JSON the protocol answers with (data flattened, row-major)."""
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "data": tensor.data.reshape(-1).tolist(),
    }
