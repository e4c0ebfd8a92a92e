"""The gRPC protocol: committed stubs match the protos, and tritonclient talks to our inference.proto."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from scoring.serve.pb import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
PB = Path("scoring", "serve", "pb")
GENERATED = [
    f"{name}{suffix}"
    for name in ("prediction", "inference")
    for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
]


def test_committed_stubs_are_generated_from_the_protos(tmp_path):
    # The command of `make protos`, into tmp_path; paths relative to the root, as make runs it.
    sources = sorted(str(p.relative_to(ROOT)) for p in (PROTOS / PB).glob("*.proto"))
    assert [Path(s).stem for s in sources] == ["inference", "prediction"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *sources,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / PB).iterdir()) == sorted(GENERATED)
    for name in GENERATED:
        committed = ROOT / PB / name
        assert committed.exists(), f"stale gRPC stubs: run `make protos` ({name} is missing)"
        assert committed.read_bytes() == (tmp_path / PB / name).read_bytes(), (
            f"stale gRPC stubs: run `make protos` ({name} differs)"
        )


class _EchoInference(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """Live, and echoes input 0 back as output OUT0 in raw bytes; keeps the requests it got."""

    def __init__(self):
        self.requests = []

    def ServerLive(self, request, context):
        return inference_pb2.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):
        self.requests.append(request)
        tensor = request.inputs[0]
        response = inference_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        response.outputs.add(name="OUT0", datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(request.raw_input_contents[0])
        return response


@pytest.fixture
def echo_server():
    servicer = _EchoInference()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


# The client side, in its own process: tritonclient's service_pb2 defines the same `inference.*` symbols as
# our inference_pb2, and protobuf refuses a second definition of a symbol in one process (TypeError:
# duplicate symbol), whichever is imported first. A real client is another process anyway.
_TRITON_CLIENT = """
import sys

import numpy as np
import tritonclient.grpc as triton

client = triton.InferenceServerClient(sys.argv[1])
assert client.is_server_live()
data = np.array([[1.5, -2.0], [0.25, 3.0], [np.pi, 1e-3]], dtype=np.float32)
infer_input = triton.InferInput("IN0", list(data.shape), "FP32")
infer_input.set_data_from_numpy(data)
result = client.infer("echo", [infer_input], request_id="r-1", priority=3)
out = result.as_numpy("OUT0")
assert out.dtype == np.float32 and out.shape == (3, 2), (out.dtype, out.shape)
np.testing.assert_array_equal(out, data)
response = result.get_response()
assert (response.model_name, response.model_version, response.id) == ("echo", "1", "r-1"), response
client.close()
print("round-tripped", out.tolist())
"""


def test_tritonclient_speaks_our_inference_proto(echo_server):
    address, servicer = echo_server
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_CLIENT, address],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("round-tripped [[1.5, -2.0], [0.25, 3.0]")

    # What tritonclient sent, as our stubs read it: raw bytes (not `contents`), and `priority` as
    # InferParameter.uint64_param, the Triton field (5) that KServe's proto lacks.
    (request,) = servicer.requests
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("IN0", "FP32", [3, 2])
    assert not tensor.HasField("contents")
    assert len(request.raw_input_contents[0]) == 3 * 2 * 4
    priority = request.parameters["priority"]
    assert (priority.WhichOneof("parameter_choice"), priority.uint64_param) == ("uint64_param", 3)
