"""Links in README.md and docs/*.md lead somewhere: the file is there, and so is the heading an anchor names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.doc_commands import PENDING, ROOT, doc_files

pytestmark = pytest.mark.unit

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings inside code blocks
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    broken = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and the like: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        relative = linked.relative_to(ROOT).as_posix() if linked.is_relative_to(ROOT) else str(linked)
        if not linked.exists():
            if relative not in PENDING:
                broken.append(f"{target}: no {relative}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {relative}")
    return broken


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(path: Path):
    assert broken_links(path) == []


def test_a_broken_link_is_found(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Here we go\n\n[a](missing.md) [b](#nowhere) [c](#here-we-go) [d](doc.md#here-we-go)\n")
    assert broken_links(doc) == [
        f"missing.md: no {tmp_path / 'missing.md'}",
        f"#nowhere: no heading #nowhere in {doc}",
    ]
