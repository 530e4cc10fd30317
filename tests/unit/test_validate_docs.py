"""Every `$ distillery validate ...` shown in docs/validate.md runs, and prints what the page says it prints.

A console block is one command (`$ distillery ...`, with an optional `<<'EOF'` document given on stdin),
then its output: stdout's lines, then stderr's (as a terminal shows them, as validate writes them).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from distillery.contract.exit_codes import ExitCode

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "validate.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, list[str]]]:
    """(arguments, stdin, expected output lines) of each console block."""
    found = []
    for block in BLOCK.findall(PAGE.read_text()):
        command, *rest = block.splitlines()
        assert command.startswith("$ distillery "), command
        arguments, stdin = command.removeprefix("$ distillery "), ""
        if arguments.endswith("<<'EOF'"):
            arguments = arguments.removesuffix("<<'EOF'").strip()
            end = rest.index("EOF")
            stdin, rest = "\n".join(rest[:end]) + "\n", rest[end + 1 :]
        found.append((arguments, stdin, rest))
    return found


def test_the_page_shows_commands():
    assert len(examples()) >= 4


@pytest.mark.parametrize(("arguments", "stdin", "expected"), examples(), ids=lambda v: str(v)[:40])
def test_each_command_prints_what_the_page_shows(arguments, stdin, expected):
    result = subprocess.run(
        [sys.executable, "-m", "distillery", *shlex.split(arguments)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.stdout.splitlines() + result.stderr.splitlines() == expected
    assert result.returncode == (ExitCode.INVALID_SPEC if result.stderr else ExitCode.OK)
