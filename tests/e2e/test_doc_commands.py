"""Run the commands shown in README.md and docs/*.md that need no cluster, as written.

Each unmarked ```bash block of a doc that tests/support/doc_commands.RUN_BY gives to this module
runs here, line by line, in the checkout with `.venv/bin`, helm and promtool on PATH; every
line must exit 0, or with the status its `# exits N` comment says. Left to other tests: README.md's "Quick start on a cluster"
(tests/e2e/test_quickstart.py) and the few long commands in doc_commands.ELSEWHERE (each run by
the module it names). Blocks marked `<!-- not run by tests: ... -->` need a real cluster or a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.doc_commands import ELSEWHERE, QUICKSTART, ROOT, RUN_BY, blocks
from tests.tools import helm_binary, promtool_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

THIS = "tests/e2e/test_doc_commands.py"
# Docs this module runs: README.md, docs/cluster.md, docs/monitoring.md, docs/development.md (RUN_BY).
DOCS = sorted(doc for doc, modules in RUN_BY.items() if THIS in modules and (ROOT / doc).exists())


def commands_here() -> list[tuple[str, str]]:
    """(doc, command) for every command this module runs."""
    found = []
    for doc in DOCS:
        for block in blocks(ROOT / doc):
            if block.not_run is not None or (doc == "README.md" and block.heading == QUICKSTART):
                continue
            found += [(doc, command) for command in block.commands if command not in ELSEWHERE]
    return found


def test_this_module_runs_commands_of_every_doc_it_claims():
    claimed = {doc for doc, _ in commands_here()}
    with_commands = {doc for doc in DOCS if any(b.not_run is None and b.commands for b in blocks(ROOT / doc))}
    assert claimed == with_commands, (
        f"RUN_BY gives {sorted(set(DOCS) - claimed)} to {THIS}, which has no command of them"
    )


@pytest.mark.parametrize("command", sorted(ELSEWHERE))
def test_long_commands_are_run_by_the_module_that_names_them(command: str):
    module, words = ELSEWHERE[command]
    assert words in (ROOT / module).read_text(), f"{module} does not run {command!r}"
    assert any(command in block.commands for doc in DOCS for block in blocks(ROOT / doc)), (
        f"ELSEWHERE names {command!r}, which no doc shows any more"
    )


@pytest.mark.parametrize(("doc", "command"), commands_here(), ids=lambda v: v if "/" in v else None)
def test_doc_command_runs(doc: str, command: str, tmp_path: Path):
    tools = {
        str(Path(helm_binary()).parent),
        str(Path(promtool_binary()).parent),
        str(ROOT / ".venv" / "bin"),
    }
    env = {
        **os.environ,
        "PATH": os.pathsep.join([*tools, os.environ.get("PATH", "")]),
        "PYTHONPATH": str(ROOT / "operator"),
        "HOME": str(tmp_path),  # helm writes its cache and config there
    }
    result = subprocess.run(
        command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500, check=False
    )
    assert result.returncode == 0, (
        f"{doc}: {command}\nexit {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
