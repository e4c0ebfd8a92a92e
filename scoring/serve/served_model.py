"""One model, resolved and pinned exactly as the batch job pins it, loaded for serving.

The reference is resolved once (an alias becomes a version), its artifacts downloaded to a directory
of this server's, and the predictor loaded from there: the very ``scoring.model`` code the batch job's
Python workers run. A reload resolves the reference again and loads a new ``ServedModel``; the old one
keeps serving the requests that started on it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoring.errors import ModelError
from scoring.lineup import CHAMPION, Lineup
from scoring.model.combine import score_columns
from scoring.model.output import OutputSpec, Scores, prediction_values
from scoring.model.predictors import Predictor, choose_backend, load_predictor
from scoring.model.resolve import ResolvedModel, resolve_model
from scoring.model.rows import typed_records
from scoring.model.signature import Feature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """How the server loads its models and bounds its requests.

    Attributes:
        model_uri: The champion's model reference (see ``scoring.model.resolve.SUPPORTED_URIS``).
        lineup: The challengers, the ensemble and the A/B split served beside the champion, as the batch
            job's ``--challenger``, ``--ensemble`` and ``--ab`` give them.
        id_columns: The fields of a record that hold its id, hashed for its A/B variant as the batch job
            hashes its ``--id-column`` columns.
        backend: ``auto``, ``pyfunc`` or ``onnx``, for the champion; challengers get their natural backend
            (ONNX Runtime for an ONNX model), as in the batch job.
        device: ``auto``, ``cpu`` or ``cuda`` (ONNX only).
        threads: ONNX Runtime intra-op threads per model call.
        scores: ``auto``, ``label`` or ``probability``, as the job's ``--scores``.
        max_records: Most records in one request.
        max_body_bytes: Largest request body (HTTP) or message (gRPC).
        batch_rows: Most rows the dynamic batcher puts in one model call.
        batch_wait_s: Longest a request waits for others to share its model call.
        max_queue: Most scoring requests one worker holds at once (parsed, queued or being scored);
            one more is refused at once (HTTP 503 with ``Retry-After``, gRPC ``RESOURCE_EXHAUSTED``)
            rather than queued behind them, so that the requests accepted keep their latency.
        api_key: When set, scoring and admin requests must present it.
    """

    model_uri: str
    lineup: Lineup = field(default_factory=Lineup)
    id_columns: tuple[str, ...] = ("id",)
    backend: str = "auto"
    device: str = "auto"
    threads: int = 1
    scores: str = "auto"
    max_records: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    batch_rows: int = 256
    batch_wait_s: float = 0.001
    max_queue: int = 128
    api_key: str | None = None


@dataclass(frozen=True)
class ServedModel:
    """A pinned, loaded model and the shape of its output.

    Attributes:
        model: The resolved reference (name, pinned version, run, features).
        backend: ``pyfunc`` or ``onnx``.
        predictor: Scores typed feature frames.
        output: The shape of its scores, learnt from a probe row at load.
        download_dir: This server's copy of the artifacts; removed by ``discard``.
    """

    model: ResolvedModel
    backend: str
    predictor: Predictor
    output: OutputSpec
    download_dir: str

    @property
    def features(self) -> tuple[Feature, ...]:
        """The model's input columns, in order."""
        return self.model.features

    def info(self) -> dict:
        """What ``GET /model/info`` answers: the model, its pinned version, signature and output."""
        return {
            "name": self.model.name,
            "version": self.model.version,
            "uri": self.model.uri,
            "pinned_uri": self.model.pinned_uri,
            "run_id": self.model.run_id,
            "backend": self.backend,
            "signature": {
                "inputs": [
                    {"name": f.name, "type": f.type, "min": f.min, "max": f.max} for f in self.features
                ],
                # The batch job's columns for this model (scoring.model.combine), as it writes them.
                "outputs": [{"name": c.name, "type": c.type} for c in score_columns(self.output)],
            },
            **self.output.to_json(),
        }

    def discard(self) -> None:
        """Remove this server's copy of the artifacts (the predictor holds what it loaded)."""
        shutil.rmtree(self.download_dir, ignore_errors=True)


def member_settings(settings: ServeSettings, name: str) -> ServeSettings:
    """The settings that load the lineup's model ``name`` (``champion`` or a challenger).

    The champion gets ``--backend``; a challenger its natural backend, as the batch job gives it
    (``scoring.batch.job.resolve_models``), so that its scores online are those of its columns.
    """
    if name == CHAMPION:
        return settings
    uri = settings.lineup.uri(name, settings.model_uri)
    return dataclasses.replace(settings, model_uri=uri, backend="auto")


def load_served_model(settings: ServeSettings) -> ServedModel:
    """Resolve, pin, download and load the model, and probe the shape of its output.

    Raises:
        ModelError: The reference cannot be resolved, or the model cannot score a probe record.
    """
    download_dir = tempfile.mkdtemp(prefix="scoring-serve-")
    try:
        model = resolve_model(settings.model_uri, download_dir)
        backend = choose_backend(settings.backend, model.is_onnx, model.has_pyfunc)
        spec = model.scorer_spec(backend, settings.device, settings.threads, settings.scores)
        predictor = load_predictor(spec, model.local_path)
        output = OutputSpec.of(predictor.predict(probe_frame(model.features)))
    except BaseException:
        shutil.rmtree(download_dir, ignore_errors=True)
        raise
    log.info("model %s pinned to %s (%s backend)", model.uri, model.pinned_uri, backend)
    return ServedModel(model, backend, predictor, output, download_dir)


def probe_frame(features: tuple[Feature, ...]) -> pd.DataFrame:
    """One valid record (each feature at its declared minimum, else zero) to learn the output's shape.

    Raises:
        ModelError: The model's declared ranges admit no value (a minimum above its maximum).
    """
    record = {f.name: _probe_value(f) for f in features}
    columns, problems = typed_records([record], features)
    if problems:
        raise ModelError(f"the model's declared feature ranges admit no record: {problems[0].reason}")
    return pd.DataFrame(columns)


def _probe_value(feature: Feature) -> object:
    if feature.type == "string":
        return ""
    if feature.type == "boolean":
        return False
    low, high = feature.min, feature.max
    value = low if low is not None else min(0.0, high) if high is not None else 0.0
    if feature.type in ("integer", "long"):
        return int(np.ceil(value))
    if feature.type == "float":
        # The nearest float32 may fall just outside the bound; step inside it.
        narrowed = np.float32(value)
        if low is not None and float(narrowed) < low:
            narrowed = np.nextafter(narrowed, np.float32(np.inf))
        return float(narrowed)
    return value


def score_arrays(scores: Scores, output: OutputSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions and probabilities typed as the batch job writes them (no probabilities: None)."""
    prediction = prediction_values(scores.prediction, output.prediction_type)
    if output.probability is None or scores.probability is None:
        return prediction, None
    return prediction, scores.probability.astype(np.float64)


def scores_json(scores: Scores, output: OutputSpec) -> tuple[list, list | None]:
    """``score_arrays`` as JSON values."""
    prediction, probability = score_arrays(scores, output)
    return prediction.tolist(), None if probability is None else probability.tolist()
