"""The stage subprocesses of `distillery run`: each started with the command line its pod runs, its
typed summary read from the file that stands in for the termination message, and Ctrl-C passed on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from distillery.contract.commands import PYTHON_MODULE, TERMINATION_LOG_ENV, StageCommand
from distillery.contract.summaries import StageSummary, read_summary

CHILD_STOP_SECONDS = 30.0
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()

# This interpreter, not whatever `distillery` PATH finds: one install runs every stage.
ENTRY = (sys.executable, "-m", PYTHON_MODULE)


def run_stage_process(
    command: StageCommand, summary_path: Path, show_stdout: bool = False
) -> tuple[int, StageSummary | None]:
    """Run one stage command as a subprocess; its exit code and summary.

    Its progress (stderr) is shown live; stdout, where it repeats its summary, only when asked
    (training prints its loss curve there). The summary goes to `summary_path` as it would
    to a pod's termination message.
    """
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    env = {**os.environ, TERMINATION_LOG_ENV: str(summary_path)}
    stdout = None if show_stdout else subprocess.DEVNULL
    process = subprocess.Popen(command.argv(ENTRY), env=env, stdout=stdout)
    with _children_lock:
        _children.add(process)
    try:
        process.wait()
    except KeyboardInterrupt:
        stop_children()  # this child and any other stage subprocess still running
        raise
    finally:
        with _children_lock:
            _children.discard(process)
    return process.returncode, read_summary(summary_path)


def stop_children() -> None:
    """Ctrl-C reaches only this process when it is not in a terminal's foreground: pass it on to the
    stage subprocesses (they stop cleanly on SIGINT; SIGKILL after CHILD_STOP_SECONDS)."""
    with _children_lock:
        children = list(_children)
    for process in children:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
    for process in children:
        try:
            process.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def failure_text(stage: str, code: int, summary: StageSummary | None) -> str:
    if summary is not None and summary.failure is not None:
        return f"{summary.failure.reason.value}: {summary.failure.message}"
    return f"exit code {code}; its output above says why"
