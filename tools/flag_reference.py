"""The flag reference, ``docs/flags.md``, generated from the ``scoring`` command's own parser.

Run ``make docs`` (or ``.venv/bin/python tools/flag_reference.py``) after changing a flag;
``tests/docs/test_flags.py`` fails while the page and the parser disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from scoring.cli import build_parser

# A help's own "(default: ...)", one level of parentheses inside allowed: it goes to the default column.
DEFAULT_IN_HELP = re.compile(r"\s*\(default: ((?:[^()]|\([^()]*\))*)\)")
PAGE = Path(__file__).resolve().parents[1] / "docs" / "flags.md"
HEADER = """\
# Flag reference

Generated from the parser by `tools/flag_reference.py` (`make docs`); do not edit by hand.
`spark-submit jobs/score.py` takes the flags of `scoring score`, `spark-submit jobs/backfill.py` those of
`scoring backfill`. Environment: `MLFLOW_TRACKING_URI` (and `MLFLOW_REGISTRY_URI`) locate the registry,
`PYICEBERG_HOME` and `PYICEBERG_CATALOG__*` configure the Iceberg catalogs
([The output](output.md#the-table---table)).
"""


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, in the order ``scoring --help`` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line help."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in action._choices_actions}


def default_cell(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """What a flag is when it is not given: required, one of a group, off/on, or its default."""
    for group in parser._mutually_exclusive_groups:
        if action in group._group_actions and group.required and len(group._group_actions) > 1:
            return "one of " + ", ".join(f"`{a.option_strings[0]}`" for a in group._group_actions)
    if action.required or any(
        action in group._group_actions and group.required for group in parser._mutually_exclusive_groups
    ):
        return "required"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "off"  # a switch: not given
    if action.default in (None, (), [], argparse.SUPPRESS):
        return "-"
    value = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else action.default
    return f"`{value}`"


def table(parser: argparse.ArgumentParser) -> list[str]:
    """A subcommand's flags as a Markdown table, in the order ``--help`` lists them."""
    formatter = parser._get_formatter()
    rows = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        invocation = formatter._format_action_invocation(action).replace("|", "\\|")
        meaning = " ".join(formatter._expand_help(action).split()).replace("|", "\\|")
        default = default_cell(parser, action)
        if said := DEFAULT_IN_HELP.search(meaning):  # the help's words for it say more than the value
            default, meaning = said.group(1), DEFAULT_IN_HELP.sub("", meaning, count=1)
        rows.append(f"| `{invocation}` | {default} | {meaning} |")
    return rows


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole page."""
    parser = parser or build_parser()
    helps = summaries(parser)
    sections = [HEADER]
    for name, command in commands(parser).items():
        summary = helps[name][:1].upper() + helps[name][1:]
        sections.append("\n".join([f"## scoring {name}", "", f"{summary}.", "", *table(command)]) + "\n")
    return "\n".join(sections)


def main() -> int:
    """Write the page; with ``--check``, exit 1 where the page on disk differs instead."""
    text = render()
    if "--check" in sys.argv[1:]:
        same = PAGE.exists() and PAGE.read_text(encoding="utf-8") == text
        print(f"{PAGE}: {'up to date' if same else 'out of date: run make docs'}")
        return 0 if same else 1
    PAGE.write_text(text, encoding="utf-8")
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
