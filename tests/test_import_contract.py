"""The import contract in .importlinter: the tree keeps it, and each rule breaks when a module breaks it.

Each case plants one violation in a copy of the package and runs the real ``lint-imports`` on the copy,
so a rule that was weakened or mistyped (and would pass anything) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The copy first on the path: grimp analyses the package that `import scoring` finds.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path) -> Path:
    shutil.copytree(ROOT / "scoring", tmp_path / "scoring", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_the_contract(package_copy):
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("model/output.py", "import pyspark", "scoring.model is not allowed to import pyspark"),
        ("model/resolve.py", "from scoring.batch import udf", "scoring.model.resolve -> scoring.batch.udf"),
        (
            "dataset/validate.py",
            "def _later():\n    from airflow.sdk import Variable",
            "scoring.dataset is not allowed to import airflow",
        ),
        ("dataset/manifest.py", "from scoring import cli", "scoring.dataset.manifest -> scoring.cli"),
        ("batch/job.py", "import boto3", "scoring.batch is not allowed to import boto3"),
        ("batch/model_cache.py", "from scoring.batch import udf", "No cycles are allowed in scoring.batch"),
        ("errors.py", "from scoring import config", "scoring.errors -> scoring.config"),
        ("serve/http.py", "import pyspark", "scoring.serve is not allowed to import pyspark"),
        (
            "serve/service.py",
            "from scoring.batch import udf",
            "scoring.serve is not allowed to import scoring.batch",
        ),
        (
            "serve/oip.py",
            "from scoring.orchestration import tasks",
            "scoring.serve.oip -> scoring.orchestration",
        ),
        (
            "helpers.py",
            '"""A new top-level module that no layer names."""',
            "not listed as layers:\n\n- scoring.helpers",
        ),
    ],
)
def test_a_planted_violation_breaks_the_contract(package_copy, module, planted, broken):
    target = package_copy / "scoring" / module
    source = target.read_text() if target.exists() else ""
    target.write_text(f"{source}\n\n{planted}\n")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout
