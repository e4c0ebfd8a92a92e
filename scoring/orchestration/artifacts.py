"""Staging what an EMR cluster needs: the scoring wheel, the job script and the bootstrap script."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from scoring import PROJECT_ROOT, __version__
from scoring.dataset.storage import filesystem
from scoring.errors import ScoringError
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


def stage_artifacts(prefix: str, key: str) -> dict[str, str]:
    """Upload the wheel, ``jobs/score.py`` and ``bootstrap.sh`` under ``PREFIX/VERSION/KEY/``.

    The path is versioned by package version and idempotency key, so concurrent runs never overwrite
    each other's artifacts, and a retry overwrites its own with identical files.

    Returns:
        The URIs: ``wheel``, ``job`` and ``bootstrap``.
    """
    target = f"{prefix.rstrip('/')}/{__version__}/{key}"
    fs, root = filesystem(target)
    with tempfile.TemporaryDirectory(prefix="scoring-wheel-") as dist:
        wheel = build_wheel(Path(dist))
        sources = {
            "wheel": wheel,
            "job": PROJECT_ROOT / "jobs" / "score.py",
            "bootstrap": config_dir() / "bootstrap.sh",
        }
        uris = {}
        for name, source in sources.items():
            fs.create_dir(root, recursive=True)
            pafs.copy_files(str(source), f"{root}/{source.name}", destination_filesystem=fs)
            uris[name] = f"{target}/{source.name}"
    return uris
