"""docs/client.md as written: its first walk runs line by line against the emulated cluster, and every
other `kubectl distillery` / `distillery` line in its ```bash blocks parses with the plugin's own parser.

The walk runs with the real /usr/bin/kubectl (it finds `kubectl-distillery` on PATH) in a directory
whose `examples/` is the checkout's; a thread plays the operator once the job exists
(tests/support/client_world.py: `play_operator`), so `submit --wait` returns when it has succeeded.
The outputs the page shows are checked against this run's (`OUTPUTS` below).
"""

from __future__ import annotations

import re
import shlex
import threading
from pathlib import Path

import pytest

from distillery.client import Client
from distillery.client.cli import build_parser
from tests.harness import ProcessRuntime
from tests.support.client_world import (
    ROOT,
    Operator,
    job_document,
    play_operator,
    run_tool,
    running_status,
    write_kubeconfig,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DOC = ROOT / "docs" / "client.md"
WALK = "## A first walk"
CANCEL = "## Cancel"
NS = "default"
CLAIM = "tiny-data"
# Commands of the page that need more than the emulated cluster has; shown, not run.
NOT_RUN = ("pip install", "kubectl krew install", "python examples/client.py")


def bash_blocks(text: str) -> list[list[str]]:
    """Each ```bash block's commands (comments and blank lines dropped, `\\` continuations joined)."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands, pending = [], ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                commands.append(pending.split("  #")[0].strip())
                pending = ""
        blocks.append(commands)
    return blocks


def section_commands(heading: str) -> list[str]:
    """The commands of the first ```bash block under `heading`."""
    section = DOC.read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return bash_blocks(section)[0]


def walk_commands() -> list[str]:
    """Every command of the walk's ```bash blocks, in order."""
    section = DOC.read_text().split(WALK + "\n", 1)[1].split("\n## ", 1)[0]
    return [c for block in bash_blocks(section) for c in block]


def walk_outputs() -> list[tuple[list[str], str]]:
    """(the commands of a walk block, the ```text block shown right after it) for each block that has one."""
    section = DOC.read_text().split(WALK + "\n", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"```bash\n(.*?)```\n+```text\n(.*?)```", section, re.S)
    return [(bash_blocks(f"```bash\n{commands}```")[0], shown) for commands, shown in pairs]


def test_every_plugin_line_of_the_page_parses():
    lines = [c for block in bash_blocks(DOC.read_text()) for c in block]
    plugin = [c for c in lines if c.startswith(("kubectl distillery ", "distillery "))]
    assert len(plugin) >= 10, plugin
    for command in plugin:
        words = shlex.split(command)
        build_parser().parse_args(words[2:] if words[0] == "kubectl" else words[1:])
    others = [c for c in lines if c not in plugin and not c.startswith(NOT_RUN)]
    run = walk_commands() + section_commands(CANCEL)
    assert all(c in run for c in others), f"commands neither run nor parsed: {others}"


def test_the_first_walk_runs_as_written(make_cluster, tmp_path: Path):
    cluster = make_cluster([NS], runtime=ProcessRuntime())
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    config = write_kubeconfig(cluster.url, NS, tmp_path / "kubeconfig")
    player = threading.Thread(target=play_operator, args=(cluster, NS, "tiny", CLAIM), daemon=True)
    player.start()
    outputs = {}
    for command in walk_commands():
        outputs[command] = run_line(command, config, work)
    shown = walk_outputs()
    assert len(shown) >= 6, "the page shows what the walk prints"
    for commands, text in shown:
        printed = "".join(outputs[c] for c in commands)
        expected, got = _shape(text), _shape(printed)
        if any(c.startswith("kubectl logs -l") for c in commands):
            # kubectl prints each selected pod's log in its own order (it keeps the requests in a Go
            # map), so the page's order is one of several.
            expected, got = sorted(expected), sorted(got)
        assert expected == got, f"{commands} printed:\n{printed}"
    print("\n".join(f"$ {c}\n{o}" for c, o in outputs.items()))
    assert (work / "tiny-report" / "reports" / "evaluation.md").is_file()
    assert (work / "tiny-report" / "student" / "config.json").is_file()
    assert cluster.api(NS).get("distillery.dev/v1alpha1", "distillationjobs", "tiny") is None

    # The cancel section on a running job: suspended by the plugin, resumed by kubectl patch.
    body = (
        Client(kubeconfig=str(config)).submit(job_document("tiny", NS)).model_dump(by_alias=True, mode="json")
    )
    Operator(cluster.url).write_status(body, running_status())
    suspended = []
    for command in section_commands(CANCEL):
        run_line(command, config, work)
        suspended.append(
            cluster.api(NS).get("distillery.dev/v1alpha1", "distillationjobs", "tiny")["spec"]["suspend"]
        )
    assert suspended == [True, False]


def run_line(command: str, config: Path, work: Path) -> str:
    """One line of the page, run with the real kubectl; its output (it must exit 0)."""
    words = shlex.split(command)
    if words[0] == "kubectl":
        words[0] = "/usr/bin/kubectl"
    result = run_tool(words, config, work)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def _shape(text: str) -> list[str]:
    """The lines with times and ages masked (they move between runs) and runs of spaces as one (columns widen
    with the ages)."""
    masked = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", text)
    masked = re.sub(r"\b\d+(s|m\d*s?|h)\b", "<age>", masked)
    return [" ".join(line.split()) for line in masked.strip().splitlines()]
