"""Staging what an EMR cluster needs: the wheel, the job and bootstrap scripts, and the pinned models.

The models (the champion and each challenger) are staged too, so that EMR nodes never talk to the
registry: the Airflow worker, which can reach it, downloads each pinned version once and copies its
files, with a record of what they were pinned from (``scoring.model.resolve.write_provenance``),
beside the run's other artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pyarrow.fs as pafs

from scoring import PROJECT_ROOT, __version__
from scoring.dataset.storage import filesystem
from scoring.errors import ScoringError
from scoring.model.resolve import resolve_model, write_provenance
from scoring.orchestration.emr import config_dir


def build_wheel(dist_dir: Path) -> Path:
    """The scoring wheel: ``SCORING_WHEEL`` if set, else built from this checkout.

    Raises:
        ScoringError: There is no checkout to build from, or the build failed.
    """
    prebuilt = os.environ.get("SCORING_WHEEL")
    if prebuilt:
        return Path(prebuilt)
    if not (PROJECT_ROOT / "setup.py").is_file():
        raise ScoringError("no scoring checkout to build a wheel from: set SCORING_WHEEL to a built wheel")
    # No build isolation: the build needs only setuptools, which this environment has; no index.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(dist_dir), str(PROJECT_ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wheels = sorted(dist_dir.glob("scoring-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ScoringError(f"building the scoring wheel failed: {result.stderr.strip()[-500:]}")
    return wheels[-1]


def stage_model(model_uri: str, target: str) -> str:
    """Copy the model's files, with their provenance, to the directory ``target`` (a URI).

    Args:
        model_uri: The pinned model reference (``models:/NAME/VERSION``).
        target: Where the model directory goes, e.g. ``s3://bucket/prefix/model``.

    Returns:
        ``target``, which the job takes as ``--model-uri``.

    Raises:
        ModelError: The model does not resolve, or is a bare ``.onnx`` file.
    """
    fs, path = filesystem(target)
    with tempfile.TemporaryDirectory(prefix="scoring-stage-model-") as download_dir:
        model = resolve_model(model_uri, download_dir)
        write_provenance(model)
        fs.create_dir(path, recursive=True)
        pafs.copy_files(model.local_path, path, destination_filesystem=fs)
    return target


def stage_artifacts(
    prefix: str, key: str, model_uri: str | None = None, challengers: Mapping[str, str] | None = None
) -> dict:
    """Upload the wheel, ``jobs/score.py``, ``bootstrap.sh`` and the models under ``PREFIX/VERSION/KEY/``.

    The path is versioned by package version and idempotency key, so concurrent runs never overwrite
    each other's artifacts, and a retry overwrites its own with identical files.

    Args:
        prefix: The artifacts' root URI.
        key: The run's idempotency key.
        model_uri: The pinned model to stage as ``model/``, if any.
        challengers: The pinned challengers to stage as ``challengers/NAME/``, by name.

    Returns:
        The URIs: ``wheel``, ``job``, ``bootstrap``, ``requirements``, with ``model_uri``, ``model``, and
        with ``challengers``, ``challengers``: each staged challenger's URI, by name.
    """
    target = f"{prefix.rstrip('/')}/{__version__}/{key}"
    fs, root = filesystem(target)
    with tempfile.TemporaryDirectory(prefix="scoring-wheel-") as dist:
        wheel = build_wheel(Path(dist))
        sources = {
            "wheel": wheel,
            "job": PROJECT_ROOT / "jobs" / "score.py",
            "bootstrap": config_dir() / "bootstrap.sh",
            # Beside the wheel: the bootstrap looks for it there.
            "requirements": config_dir() / "requirements-node.txt",
        }
        uris = {}
        for name, source in sources.items():
            fs.create_dir(root, recursive=True)
            pafs.copy_files(str(source), f"{root}/{source.name}", destination_filesystem=fs)
            uris[name] = f"{target}/{source.name}"
    if model_uri is not None:
        uris["model"] = stage_model(model_uri, f"{target}/model")
    if challengers:
        uris["challengers"] = {
            name: stage_model(uri, f"{target}/challengers/{name}") for name, uri in challengers.items()
        }
    return uris
