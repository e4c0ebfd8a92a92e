"""The Open Inference Protocol v2 (KServe, Triton, Seldon MLServer), shared by HTTP and gRPC.

A request names its input tensors: one per feature (named as the feature, shape ``[N]`` or ``[N, 1]``),
or one ``[N, F]`` tensor whose columns are the features in the signature's order. The answer has a
``prediction`` tensor and, for classifiers, a ``probability`` tensor (``[N]`` for binary, ``[N, C]``
for multiclass), typed as the batch job writes them. Transports convert their own encodings (JSON
lists, gRPC contents or raw bytes) to ``Tensor`` and back.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.model.signature import Feature
from scoring.serve.errors import BadRequest, NotFound
from scoring.serve.served_model import ServedModel, score_arrays
from scoring.serve.service import Scored

# The binary tensor data extension announces itself with this header: the JSON header's length in bytes.
BINARY_HEADER = "Inference-Header-Content-Length"

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
# The JSON kinds a tensor of each datatype may hold, and how an error names them.
_INTEGERS = frozenset(name for name in DATATYPES if name.startswith(("INT", "UINT")))
_JSON_KINDS = {name: (int,) if name in _INTEGERS else (int, float) for name in DATATYPES} | {
    "BOOL": (bool,),
    "BYTES": (str,),
}
_JSON_NAMES = {name: "integers" if name in _INTEGERS else "numbers" for name in DATATYPES} | {
    "BOOL": "booleans",
    "BYTES": "strings",
}
# Most elements in one tensor: a shape beyond any body this server takes is refused before any work.
MAX_ELEMENTS = 2**31
# A BYTES element's length in the raw layout.
_LENGTH = struct.Struct("<I")
_END = object()


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request or an answer, decoded to numpy (BYTES as Python str)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def check_model_named(served: ServedModel, name: str, version: str | None = None) -> None:
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
    known = set(names)
    for tensor in tensors:
        where = f"input {tensor.name[:MAX_NAME]!r}"
        if tensor.name in columns:
            raise BadRequest(f"{where}: sent twice; one tensor per feature")
        if tensor.name not in known:
            raise BadRequest(
                f"{where}: the model has no feature of that name (GET /v2/models/NAME lists them)"
            )
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadRequest(
                f"{where}: shape {list(tensor.shape)}; a feature tensor is [N] or "
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


def check_outputs(served: ServedModel, requested: Sequence[str] | None) -> None:
    """Refuse, before any scoring, a request for an output the model does not give.

    Raises:
        BadRequest: A requested output is not ``prediction`` or (classifiers) ``probability``.
    """
    given = ["prediction"] + (["probability"] if served.output.probability is not None else [])
    for name in requested or ():
        if name not in given:
            raise BadRequest(
                f"outputs: the model has no output {name[:MAX_NAME]!r} (it has {', '.join(given)})"
            )


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


@dataclass(frozen=True)
class RequestedOutput:
    """One output a request asks for, and whether it wants it in the binary tensor data extension."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class InferRequest:
    """An infer request, decoded from JSON (and the binary extension's bytes) or from protobuf.

    Attributes:
        id: The request's id, repeated in the answer.
        inputs: The input tensors.
        outputs: The outputs asked for (none: every output).
        binary_output: The request's ``binary_data_output`` parameter: outputs as raw bytes by default.
    """

    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput]
    binary_output: bool = False

    def output_names(self) -> list[str] | None:
        """The outputs asked for by name, or None for every output."""
        return [o.name for o in self.outputs] or None

    def binary(self, name: str) -> bool:
        """Whether output ``name`` is answered as raw bytes (its own ``binary_data``, else the request's)."""
        for output in self.outputs:
            if output.name == name and output.binary is not None:
                return output.binary
        return self.binary_output


def infer_request_from_json(body: object, binary: bytes | memoryview = b"") -> InferRequest:
    """A JSON infer request, its tensors' data in JSON or after the JSON header as raw bytes.

    Args:
        body: The decoded JSON (the binary extension's JSON header).
        binary: What follows the JSON header (``Inference-Header-Content-Length``): the data of the
            inputs whose ``parameters`` give a ``binary_data_size``, in input order.

    Raises:
        BadRequest: The request does not follow the protocol; the message names the field.
    """
    if not isinstance(body, Mapping):
        raise BadRequest('body: expected {"inputs": [tensor, ...]}')
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id: must be a string")
    parameters = _parameters(body, "parameters")
    binary_output = _flag(parameters, "binary_data_output", "parameters")
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise BadRequest("inputs: expected a list of tensors")
    view = memoryview(binary)
    tensors, offset = [], 0
    for i, item in enumerate(inputs):
        tensor, offset = _input_from_json(item, f"inputs[{i}]", view, offset)
        tensors.append(tensor)
    if offset != len(view):
        raise BadRequest(
            f"binary data: {len(view) - offset} bytes after the inputs' binary_data_size; none may be left"
        )
    return InferRequest(request_id, tensors, _requested_outputs(body.get("outputs")), bool(binary_output))


def _input_from_json(item: object, where: str, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    """One JSON input tensor and where the next tensor's binary data starts."""
    if not isinstance(item, Mapping):
        raise BadRequest(f"{where}: a tensor is an object with name, datatype, shape and data")
    for key in ("name", "datatype", "shape"):
        if key not in item:
            raise BadRequest(f"{where}.{key}: missing")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise BadRequest(f"{where}.name: must be a string of at most {MAX_NAME} characters")
    count = check_header(datatype, shape, where)
    size = _binary_size(_parameters(item, f"{where}.parameters"), where)
    if size is None:
        if "data" not in item:
            raise BadRequest(f"{where}.data: missing (or give parameters.binary_data_size)")
        data = json_elements(item["data"], datatype, f"{where}.data")
    else:
        if "data" in item:
            raise BadRequest(f"{where}: both data and parameters.binary_data_size; send one of them")
        if offset + size > len(binary):
            raise BadRequest(f"{where}.parameters.binary_data_size: more bytes than the body holds")
        data = from_raw(binary[offset : offset + size], datatype, count, where)
        offset += size
    if data.size != count:
        raise BadRequest(f"{where}: {data.size} values for shape {list(shape)}")
    # JSON values as they came, not cast to the declared datatype: the row checks cast them as every
    # other dialect's (a 1.5 for an integer feature is not_castable, not truncated to 1).
    return Tensor(name, datatype, tuple(shape), data), offset


def check_header(datatype: object, shape: object, where: str) -> int:
    """Check a tensor's datatype and shape; the number of elements the shape holds.

    Raises:
        BadRequest: The datatype is not the protocol's, or the shape is not a list of
            non-negative integers, or it holds more elements than any request can.
    """
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(f"{where}.datatype: not one of the protocol's ({', '.join(DATATYPES)})")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"{where}.shape: must be a list of non-negative integers")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise BadRequest(f"{where}.shape: {count} elements; at most {MAX_ELEMENTS} in one tensor")
    return count


def json_elements(data: object, datatype: str, where: str) -> np.ndarray:
    """A JSON tensor's elements, row-major: a flat list, or nested lists (ragged or not, flattened).

    Elements must be of the datatype's JSON kind (numbers, booleans or strings); ``null`` passes, as
    a missing value the row checks name (``null_feature``).

    Raises:
        BadRequest: ``data`` is not a list, or holds an object or an element of another kind.
    """
    if not isinstance(data, list):
        raise BadRequest(f"{where}: must be a list")
    kinds = _JSON_KINDS[datatype]
    flat: list = []
    pending = [iter(data)]
    while pending:  # iterative: nesting as deep as the JSON decoder allows costs no recursion here
        item = next(pending[-1], _END)
        if item is _END:
            pending.pop()
        elif isinstance(item, list):
            pending.append(iter(item))
        elif item is None or (isinstance(item, kinds) and not (isinstance(item, bool) and bool not in kinds)):
            flat.append(item)
        else:
            raise BadRequest(f"{where}: a {datatype} tensor holds {_JSON_NAMES[datatype]} only")
    return np.fromiter(flat, dtype=object, count=len(flat))


def _requested_outputs(outputs: object) -> list[RequestedOutput]:
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        raise BadRequest('outputs: expected a list of {"name": ...} objects')
    requested = []
    for i, item in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise BadRequest(f"{where}.name: must be a string")
        parameters = _parameters(item, f"{where}.parameters")
        if "classification" in parameters:
            raise BadRequest(f"{where}.parameters.classification: the classification extension is not served")
        binary = _flag(parameters, "binary_data", f"{where}.parameters")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


def _parameters(item: Mapping, where: str) -> Mapping:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise BadRequest(f"{where}: must be an object")
    return parameters


def _flag(parameters: Mapping, key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}.{key}: must be true or false")
    return value


def _binary_size(parameters: Mapping, where: str) -> int | None:
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise BadRequest(f"{where}.parameters.binary_data_size: must be a non-negative integer")
    return size


def from_raw(raw: bytes | memoryview, datatype: str, count: int, where: str) -> np.ndarray:
    """A tensor's elements from the protocol's raw layout (gRPC raw contents, HTTP binary data).

    Raises:
        BadRequest: The bytes do not hold ``count`` elements of ``datatype``.
    """
    if datatype == "BYTES":
        return unpack_bytes(raw, where)
    dtype = np.dtype(DATATYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: {len(raw)} raw bytes; {datatype} of {count} elements takes {count * dtype.itemsize}"
        )
    # The protocol's raw layout is little-endian; astype gives a native, writable copy.
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)


def unpack_bytes(raw: bytes | memoryview, where: str) -> np.ndarray:
    """BYTES elements laid out as the protocol says: each a 4-byte little-endian length, then its bytes.

    Raises:
        BadRequest: The layout is cut short, or an element is not UTF-8 text.
    """
    items = []
    offset = 0
    view = memoryview(raw)
    while offset < len(view):
        if offset + _LENGTH.size > len(view):
            raise BadRequest(f"{where}: raw BYTES cut short in an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise BadRequest(f"{where}: raw BYTES cut short in an element")
        items.append(text(bytes(view[offset : offset + length]), where))
        offset += length
    return np.array(items, dtype=object)


def text(value: bytes, where: str) -> str:
    """A BYTES element as text.

    Raises:
        BadRequest: It is not UTF-8.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: a BYTES element is not UTF-8 text") from None


def raw_bytes(tensor: Tensor) -> bytes:
    """An output tensor's elements in the protocol's raw layout (row-major, little-endian)."""
    if tensor.datatype == "BYTES":
        parts = []
        for item in tensor.data.reshape(-1).tolist():
            encoded = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    dtype = np.dtype(DATATYPES[tensor.datatype]).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def tensor_to_json(tensor: Tensor, binary: bool = False) -> tuple[dict, bytes]:
    """An output tensor as the JSON the protocol answers with, and its raw bytes when ``binary``.

    JSON data is flattened, row-major; a binary output names its size (``binary_data_size``) instead,
    and its bytes follow the JSON header in the answer, in output order.
    """
    header = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    if not binary:
        return {**header, "data": tensor.data.reshape(-1).tolist()}, b""
    raw = raw_bytes(tensor)
    return {**header, "parameters": {"binary_data_size": len(raw)}}, raw
