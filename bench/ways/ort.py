"""ONNX Runtime sessions, one per model and provider per process (a Python worker's cache).

Module-level, in an importable module, so that a Spark Python worker (reused across tasks) keeps the
session it loaded first: a function defined in a local scope is pickled with its closure, a module is
imported.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

_sessions: dict[tuple[str, str, int], ort.InferenceSession] = {}

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderMissing(RuntimeError):
    """The provider asked for is not the one ONNX Runtime runs the model on."""


def session(path: str, provider: str = "cpu", threads: int = 1) -> ort.InferenceSession:
    """The session of the model at ``path``, created on first use in this process.

    Args:
        path: An ``.onnx`` file.
        provider: ``cpu`` or ``cuda``; ``cuda`` never falls back to the CPU silently.
        threads: Intra-op threads (Spark already runs one task per core).

    Raises:
        ProviderMissing: When ONNX Runtime does not run the model on ``provider``.
    """
    key = (path, provider, threads)
    if key not in _sessions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        name = PROVIDERS[provider]
        if name not in ort.get_available_providers():
            raise ProviderMissing(f"ONNX Runtime has no {name} (it has {ort.get_available_providers()})")
        created = ort.InferenceSession(path, sess_options=options, providers=[name])
        if created.get_providers()[0] != name:
            raise ProviderMissing(f"ONNX Runtime runs the model on {created.get_providers()}, not {name}")
        _sessions[key] = created
    return _sessions[key]


def predict(model: ort.InferenceSession, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (float64) and positive-class probabilities (float64) of a float32 feature matrix.

    The graphs are skl2onnx's with ``zipmap=False``: one matrix input; outputs label and probabilities.
    """
    label, probabilities = model.run(None, {model.get_inputs()[0].name: x})
    return label.astype(np.float64), probabilities[:, 1].astype(np.float64)
