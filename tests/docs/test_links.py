"""The docs' links resolve, and the files the architecture note walks through exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``doc``: lower case, punctuation out, spaces to hyphens."""
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def links(doc: Path) -> list[str]:
    """The relative link targets of ``doc``, outside code blocks."""
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def broken(doc: Path) -> list[str]:
    """The relative links of ``doc`` to no file, or to no heading of a Markdown file."""
    found = []
    for target in links(doc):
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            found.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            found.append(f"{target}: no such heading")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_relative_link_resolves(doc):
    assert broken(doc) == []


def test_a_missing_file_and_a_missing_heading_are_found(tmp_path):
    doc = tmp_path / "doc.md"
    links_line = "[a](#title-here) [b](missing.md) [c](#nowhere) [d](doc.md#title-here)"
    doc.write_text(f"# Title here\n\n{links_line}\n```\n# not a heading [e](gone.md)\n```\n")
    assert broken(doc) == ["missing.md: no such file", "#nowhere: no such heading"]


def test_every_file_the_architecture_note_names_exists():
    note = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:scoring|dags|jobs|emr)/[\w/.]+\.py)`", note))
    assert len(named) > 30
    assert sorted(n for n in named if not (ROOT / n).exists()) == []
