"""What the failure tests share: a directory nothing can write in (even as root), `distillery` run as a user
runs it, and the checks every expected failure must pass (one line, no traceback, the documented code)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distillery.contract.exit_codes import ExitCode

# Test servers stay on this machine (no hub) and small; see tests/fixtures_models.py.
CLI_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "PYTHONUNBUFFERED": "1",
}


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """`directory` made unwritable: chmod for a user; for root (whom permission bits do not stop) the
    immutable attribute (`chattr +i`, EPERM on any new entry). Skips the test where neither is possible."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a directory read-only")
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i refused here: {made.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def distillery(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> Outcome:
    """`python -m distillery ARGS` in a subprocess, as a person runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "distillery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **CLI_ENV, **(env or {})},
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def assert_acted_on(outcome: Outcome, code: ExitCode, *named: str, log: bool = True) -> str:
    """The failure checks: the documented exit status, no traceback, one line naming each of `named`,
    and (when `log`) a log path on that line that exists. Returns the line."""
    details = f"exit {outcome.code}\nstderr:\n{outcome.stderr[-4000:]}"
    assert outcome.code == code, details
    assert "Traceback" not in outcome.stderr, details
    lines = [line for line in outcome.stderr.splitlines() if all(name in line for name in named)]
    assert lines, f"no line names {named}; {details}"
    line = lines[-1]
    if log:
        found = re.search(r"\(log: ([^)]+)\)", line)
        assert found, f"no log path on {line!r}"
        assert Path(found[1]).is_file(), f"{found[1]} does not exist"
    return line
