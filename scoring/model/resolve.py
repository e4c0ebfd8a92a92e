"""Resolve a model reference to one immutable model, once, on the driver.

A job must score every row with the same model even if somebody moves the registry alias while it runs.
So the reference is resolved here exactly once: an alias becomes a concrete version, the artifacts are
downloaded to a local directory, and that directory is what the executors receive (see
``scoring.batch.udf``). Executors never talk to the registry.

The feature columns, their order and their types come from the model's signature (see
``scoring.model.signature``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from scoring.errors import ModelError, first_line
from scoring.lineup import CHAMPION, Lineup
from scoring.model.predictors import ScorerSpec
from scoring.model.signature import Feature, model_features

SUPPORTED_URIS = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, "
    "an MLflow model directory (local or s3://...) or a local .onnx file"
)

# Written into a staged copy of a registry model (``write_provenance``): what it was pinned from, so
# that a job scoring the copy, with no registry access, still names the registry model and version.
PROVENANCE_FILE = "registered_model.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference pinned to immutable artifacts on local disk.

    Attributes:
        uri: The reference as the user gave it.
        pinned_uri: The immutable reference it resolved to (``models:/NAME/VERSION`` for an alias).
        name: Registered model name, or the file or directory name for a local model.
        version: Registry version; the run id or model id for run and logged-model references; a
            content hash for a local path.
        run_id: The MLflow run that produced the model, where known.
        local_path: The downloaded model directory, or the ``.onnx`` file.
        onnx_file: Path of the ONNX graph when the model is an ONNX model, else None.
        features: Input columns in the order the model expects them.
        fingerprint: Identifies the model's content; the worker-side model cache is keyed by it.
    """

    uri: str
    pinned_uri: str
    name: str
    version: str
    run_id: str | None
    local_path: str
    onnx_file: str | None
    features: tuple[Feature, ...]
    fingerprint: str

    @property
    def is_onnx(self) -> bool:
        """Whether ONNX Runtime can score this model."""
        return self.onnx_file is not None

    @property
    def has_pyfunc(self) -> bool:
        """Whether MLflow's pyfunc loader can score this model (any MLflow model directory can)."""
        return Path(self.local_path, "MLmodel").is_file()

    @property
    def relative_onnx_file(self) -> str:
        """The ONNX graph's path inside the model directory ("" for a bare .onnx file)."""
        if self.onnx_file is None or self.onnx_file == self.local_path:
            return ""
        return self.onnx_file.removeprefix(self.local_path).lstrip("/")

    @property
    def feature_names(self) -> list[str]:
        """Names of the input columns, in model order."""
        return [f.name for f in self.features]

    def scorer_spec(
        self, backend: str, device: str = "cpu", threads: int = 1, scores: str = "auto"
    ) -> ScorerSpec:
        """What loads this model from where it is now (``local_path``).

        Args:
            backend: ``onnx`` or ``pyfunc``, already chosen (``choose_backend``).
            device: ``auto``, ``cpu`` or ``cuda``; ONNX only.
            threads: ONNX Runtime intra-op threads.
            scores: ``auto``, ``label`` or ``probability``.
        """
        return ScorerSpec(
            model_path=self.local_path,
            fingerprint=self.fingerprint,
            backend=backend,
            device=device,
            threads=threads,
            features=self.features,
            onnx_file=self.relative_onnx_file,
            scores=scores,
        )


@dataclass(frozen=True)
class PinnedModel:
    """A registry or run reference resolved to an immutable one, before anything is downloaded.

    Attributes:
        pinned_uri: ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH`` or ``models:/m-ID``.
        name: Registered model name (the artifact path's last part for a run).
        version: Registry version, or the run or logged-model id.
        run_id: The MLflow run that produced the model, where known.
        fingerprint: Identifies the model's content.
        created_at: When the version was registered, where known (UTC).
    """

    pinned_uri: str
    name: str
    version: str
    run_id: str | None
    fingerprint: str
    created_at: dt.datetime | None = None


def resolve_model(
    uri: str, download_dir: str | os.PathLike[str], features: Sequence[str] | None = None
) -> ResolvedModel:
    """Pin a model reference and download its artifacts.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-ID``, ``runs:/RUN_ID/PATH``,
            an MLflow model directory (a local path, or any URI MLflow's artifact repositories read,
            such as ``s3://``) or a local ``.onnx`` file. The registry is the one
            ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``) point at; a model directory needs no
            registry, and one staged with its provenance (``write_provenance``) keeps the registry's
            name, version and run id.
        download_dir: Directory the model is downloaded (or, for a local path, copied) into.
        features: Column names to use instead of the signature's, for models without one.

    Returns:
        The pinned model.

    Raises:
        ModelError: The reference is malformed, unknown to the registry, or the model is unusable.
    """
    # A unique name: Spark ships the model to executors under its base name (see scoring.batch.udf).
    target = Path(download_dir, f"model-{uuid.uuid4().hex[:12]}")
    if uri.startswith(("models:/", "runs:/")):
        pinned = pin_model_uri(uri)
        local_path = _download(pinned.pinned_uri, target)
    elif _is_remote(uri):
        local_path = _download_directory(uri, target)
        pinned = _pinned_copy(uri.rstrip("/").rsplit("/", 1)[-1], Path(local_path), uri)
    else:
        source = _local_model_path(uri)
        # A copy, so that the file scored is the file hashed even if the original is replaced.
        local_path = _copy(source, target.with_suffix(source.suffix))
        pinned = _pinned_copy(source.name.removesuffix(".onnx"), Path(local_path), str(source))
    onnx_file = _onnx_file(local_path)
    inputs = model_features(local_path, onnx_file, features, uri)
    return ResolvedModel(
        uri=uri,
        pinned_uri=pinned.pinned_uri,
        name=pinned.name,
        version=pinned.version,
        run_id=pinned.run_id,
        local_path=local_path,
        onnx_file=onnx_file,
        features=inputs,
        fingerprint=pinned.fingerprint,
    )


def resolve_lineup(
    lineup: Lineup, model_uri: str | None, download_dir: str, features: Sequence[str] | None = None
) -> dict[str, ResolvedModel]:
    """Pin and download every model of a run's lineup, the champion first, each in a directory of its own.

    Args:
        lineup: The run's models besides the champion.
        model_uri: The champion's reference (``--model-uri``), where the lineup does not name it.
        download_dir: The champion's directory; each challenger's is the subdirectory of its name.
        features: Column names for models without a signature (``--features``).

    Returns:
        The resolved models by name, in the lineup's order.

    Raises:
        ModelError: A reference does not resolve; a challenger's error names it.
    """
    models = {}
    for name in lineup.names:
        where = download_dir if name == CHAMPION else os.path.join(download_dir, name)
        try:
            models[name] = resolve_model(lineup.uri(name, model_uri), where, features)
        except ModelError as e:
            raise (e if name == CHAMPION else ModelError(f"challenger {name!r}: {e}")) from e
    return models


def pin_model_uri(uri: str) -> PinnedModel:
    """Resolve a ``models:/`` or ``runs:/`` reference in the registry (an alias to its version).

    Raises:
        ModelError: The reference is malformed or unknown to the registry.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        if uri.startswith("runs:/"):
            match = re.fullmatch(r"runs:/([^/]+)/(.+)", uri)
            if not match:
                raise ModelError(f"malformed model URI {uri!r}: expected runs:/RUN_ID/PATH")
            run_id, path = match.groups()
            client.get_run(run_id)
            return PinnedModel(uri, Path(path).name, run_id, run_id, uri)
        ref = uri.removeprefix("models:/")
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in ref:
            name, version = ref.rsplit("/", 1)
            if not version.isdigit():
                raise ModelError(
                    f"malformed model URI {uri!r}: expected models:/NAME/VERSION with a numeric "
                    "version, or models:/NAME@ALIAS"
                )
            mv = client.get_model_version(name, version)
        elif ref.startswith("m-"):
            logged = client.get_logged_model(ref)
            return PinnedModel(uri, logged.name, ref, logged.source_run_id, uri)
        else:
            raise ModelError(f"malformed model URI {uri!r}: expected one of {SUPPORTED_URIS}")
    except MlflowException as e:
        raise ModelError(f"cannot resolve model {uri!r}: {first_line(e.message)}") from e
    pinned = f"models:/{mv.name}/{mv.version}"
    created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
    return PinnedModel(pinned, mv.name, str(mv.version), mv.run_id, pinned, created)


def write_provenance(model: ResolvedModel) -> None:
    """Record in the model's local directory what it was pinned from, before it is staged elsewhere.

    Raises:
        ModelError: The model is a bare ``.onnx`` file, which has no directory to hold the record.
    """
    if not Path(model.local_path).is_dir():
        raise ModelError(f"model {model.uri!r} is a single file: only a model directory can be staged")
    record = {
        "pinned_uri": model.pinned_uri,
        "name": model.name,
        "version": model.version,
        "run_id": model.run_id,
    }
    Path(model.local_path, PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))


def _pinned_copy(name: str, path: Path, source: str) -> PinnedModel:
    """A model known by its files: its provenance record where it has one, else its content hash."""
    digest = _content_hash(path)
    record = path / PROVENANCE_FILE
    if path.is_dir() and record.is_file():
        try:
            known = json.loads(record.read_text())
            return PinnedModel(
                known["pinned_uri"], known["name"], str(known["version"]), known["run_id"], digest
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"model {source!r}: {PROVENANCE_FILE} is not a provenance record") from e
    return PinnedModel(source, name, digest[:12], None, digest)


def _is_remote(uri: str) -> bool:
    """Whether ``uri`` names a location MLflow's artifact repositories read (s3://, gs://, ...)."""
    scheme = urlparse(uri).scheme
    return len(scheme) > 1 and scheme not in ("file", "models", "runs")  # one letter: a Windows drive


def _download_directory(uri: str, target: Path) -> str:
    """Download a model directory to ``target`` (MLflow puts it under its base name: move it)."""
    downloaded = Path(_download(uri, target.with_name(f"{target.name}-download")))
    if not (downloaded / "MLmodel").is_file():
        raise ModelError(f"{uri!r} is not an MLflow model directory (no MLmodel file)")
    downloaded.rename(target)
    return str(target)


def _download(pinned_uri: str, download_dir: str | os.PathLike[str]) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=pinned_uri, dst_path=str(download_dir))
    except MlflowException as e:
        raise ModelError(f"cannot download model {pinned_uri!r}: {first_line(e.message)}") from e


def _local_model_path(uri: str) -> Path:
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    if (path.is_file() and path.suffix == ".onnx") or (path / "MLmodel").is_file():
        return path
    if not path.exists():
        raise ModelError(f"model not found: {uri!r} (expected one of {SUPPORTED_URIS})")
    raise ModelError(f"{uri!r} is neither an MLflow model directory (no MLmodel file) nor a .onnx file")


def _copy(source: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return str(target)


def _onnx_file(local_path: str) -> str | None:
    """Path of the ONNX graph of a bare ``.onnx`` file or of an MLflow model with the onnx flavor."""
    if local_path.endswith(".onnx"):
        return local_path
    from mlflow.models import Model

    flavor = Model.load(local_path).flavors.get("onnx")
    return str(Path(local_path, flavor["data"])) if flavor else None


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
