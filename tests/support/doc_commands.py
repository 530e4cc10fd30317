"""The commands shown in README.md and docs/*.md: which test runs them, or why none can.

Every ```bash block of a doc is either run by a test (RUN_BY names, per doc file, the test modules
that run its blocks; each must mention the file) or follows a line

    <!-- not run by tests: needs a real cluster (what it needs) -->

tests/unit/test_doc_commands.py checks that this holds; tests/e2e/test_doc_commands.py and
tests/e2e/test_quickstart.py run the blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = re.compile(r"<!-- not run by tests: (?P<reason>.+?) -->")
QUICKSTART = "## Quick start on a cluster"  # README's section that tests/e2e/test_quickstart.py runs

# Doc file (relative to the checkout) -> the test modules that run its unmarked ```bash blocks.
RUN_BY: dict[str, tuple[str, ...]] = {
    "README.md": ("tests/e2e/test_quickstart.py", "tests/e2e/test_doc_commands.py"),
    "docs/cluster.md": ("tests/e2e/test_doc_commands.py",),
    "docs/monitoring.md": ("tests/e2e/test_doc_commands.py", "tests/unit/test_monitoring_targets.py"),
    "docs/development.md": ("tests/e2e/test_doc_commands.py",),
    # Written with the other items of issue 25; listed ahead so that their commands run once they land.
    "docs/validate.md": ("tests/unit/test_validate_docs.py",),
    "docs/errors.md": ("tests/e2e/test_run_errors.py", "tests/unit/test_errors.py"),
    "docs/client.md": ("tests/integration/test_client_docs.py",),
}
PENDING: set[str] = set()  # docs listed ahead of the work that writes them
EXITS = re.compile(
    r"#\s*exits? (?P<code>[0-9]+)\s*$"
)  # `cmd  # exits 2`: the status the doc says it ends with


def expected_exit(command: str) -> int:
    """The exit status a doc line says its command ends with (`# exits N` at its end), else 0."""
    match = EXITS.search(command)
    return int(match["code"]) if match else 0


# Commands too long for tests/e2e/test_doc_commands.py that another test runs (the module must name them).
ELSEWHERE: dict[str, tuple[str, str]] = {
    ".venv/bin/python hack/prepare_tiny.py": ("tests/support/tiny.py", "prepare_tiny"),
    ".venv/bin/distillery run examples/tiny.yaml": (
        "tests/e2e/test_run_tiny.py",
        "distillery run examples/tiny.yaml",
    ),
}


@dataclass(frozen=True)
class Block:
    doc: str  # README.md, docs/cluster.md
    heading: str  # the `## ` section it is in ("" before the first)
    commands: tuple[str, ...]
    not_run: str | None  # the reason of its NOT_RUN line, or None


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(block: str) -> list[str]:
    """A ```bash block's commands, one per entry: continuation lines joined, comments and blank lines dropped."""
    found: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        piece = line.strip() if pending else line.rstrip()
        pending += piece.rstrip("\\").rstrip() + " " if line.endswith("\\") else piece
        if not line.endswith("\\"):
            found.append(pending.strip())
            pending = ""
    return found


def blocks(path: Path) -> list[Block]:
    """Every ```bash block of a Markdown file, with its section and its NOT_RUN reason, if any."""
    doc = path.relative_to(ROOT).as_posix()
    found, heading, previous = [], "", ""
    lines = path.read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line.strip()
        if line.strip() == "```bash":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            mark = NOT_RUN.fullmatch(previous.strip())
            body = "".join(lines[i + 1 : end])
            found.append(Block(doc, heading, tuple(commands(body)), mark["reason"] if mark else None))
            i, previous = end, lines[end]
        elif line.strip():
            previous = line
        i += 1
    return found


def section_commands(path: Path, heading: str) -> list[str]:
    """The commands of every ```bash block in one `## ` section of a doc."""
    return [c for block in blocks(path) if block.heading == heading for c in block.commands]
