"""Every command shown in README.md and docs/*.md is run by a test, or marked with why it cannot be."""

from __future__ import annotations

import pytest

from tests.support.doc_commands import (
    NOT_RUN,
    PENDING,
    QUICKSTART,
    ROOT,
    RUN_BY,
    blocks,
    doc_files,
    expected_exit,
)

pytestmark = pytest.mark.unit


def test_every_block_is_run_by_a_test_or_marked():
    unaccounted = [
        f"{block.doc} ({block.heading or 'top'}): {block.commands[0]}"
        for path in doc_files()
        for block in blocks(path)
        if block.commands and block.not_run is None and block.doc not in RUN_BY
    ]
    assert unaccounted == [], (
        "commands no test runs: add the doc to tests/support/doc_commands.RUN_BY (and run them there), "
        "or put `<!-- not run by tests: needs a real cluster (why) -->` on the line before the block:\n"
        + "\n".join(unaccounted)
    )


@pytest.mark.parametrize("doc", sorted(RUN_BY))
def test_the_modules_that_run_a_doc_exist_and_name_it(doc: str):
    if doc in PENDING and not (ROOT / doc).exists():
        pytest.skip(f"{doc} has not landed yet (issue 25); then it must be there")
    assert (ROOT / doc).is_file(), f"RUN_BY names {doc}, which is not there"
    for module in RUN_BY[doc]:
        path = ROOT / module
        assert path.is_file(), f"RUN_BY[{doc!r}]: {module} is not there"
        source = path.read_text()
        assert doc in source or doc.split("/")[-1] in source, f"{module} runs {doc} but never names it"


def test_marks_give_a_reason_and_sit_on_a_block():
    for path in doc_files():
        lines = [line.strip() for line in path.read_text().splitlines()]
        marks = [m for m in map(NOT_RUN.fullmatch, lines) if m]
        marked_blocks = [b for b in blocks(path) if b.not_run is not None]
        assert len(marks) == len(marked_blocks), (
            f"{path.name}: a not-run mark that is not right above a ```bash block"
        )
        assert all(len(m["reason"]) > 10 for m in marks), f"{path.name}: a not-run mark without a reason"


def test_the_quick_start_is_there_and_the_readme_is_short():
    readme = ROOT / "README.md"
    assert any(b.heading == QUICKSTART for b in blocks(readme)), f"README.md lost its {QUICKSTART!r} section"
    assert len(readme.read_text().splitlines()) <= 220, "README.md: keep it short; the rest goes in docs/"


def test_the_extraction_joins_continuations_and_drops_comments():
    from tests.support.doc_commands import commands

    block = "# a comment\nhelm install x \\\n  --set a=1\n\nkubectl get dj   # trailing note\n"
    assert commands(block) == ["helm install x --set a=1", "kubectl get dj   # trailing note"]


def test_a_line_can_say_the_status_it_ends_with():
    assert expected_exit("distillery validate bad.yaml   # exits 1") == 1
    assert expected_exit("distillery validate examples/tiny.yaml") == 0
