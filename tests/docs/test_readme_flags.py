"""The README's flag table names every flag of ``scoring score`` (the same flags as spark-submit's)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from scoring.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def score_flags() -> set[str]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    score = commands.choices["score"]
    options = (option for action in score._actions for option in action.option_strings)
    return {option for option in options if option.startswith("--")}


def test_every_score_flag_is_in_the_readme_flag_table():
    table = re.findall(r"^\| `(--[a-z-]+)`(?:, `(--[a-z-]+)`)? \|", README.read_text(), flags=re.MULTILINE)
    documented = {flag for row in table for flag in row if flag}
    missing = score_flags() - documented - {"--help"}
    assert "--model-uri" in documented
    assert not missing, f"flags missing from the README's table: {sorted(missing)}"
