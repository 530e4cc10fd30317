"""The stage subprocesses of `distillery run`: each started with the command line its pod runs, its
typed summary read from the file that stands in for the termination message, its stderr kept in a
log file (tracebacks there, not on the terminal), and Ctrl-C passed on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from distillery.contract.commands import PYTHON_MODULE, TERMINATION_LOG_ENV, StageCommand
from distillery.contract.exit_codes import debug_enabled
from distillery.contract.summaries import StageSummary, read_summary

CHILD_STOP_SECONDS = 30.0
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()

# This interpreter, not whatever `distillery` PATH finds: one install runs every stage.
ENTRY = (sys.executable, "-m", PYTHON_MODULE)


class TracebackFilter:
    """Which of a stage's stderr lines reach the terminal: all but Python tracebacks (the log keeps them).

    A traceback runs from `Traceback (most recent call last):` through its indented frames to the
    exception's line; chained ones ("During handling of the above exception...") are dropped too.
    The stage prints its one-line failure after it. (The second line of a multi-line exception message
    does show: nothing marks where such a message ends.)"""

    CHAIN = ("During handling of the above exception", "The above exception was the direct cause")

    def __init__(self) -> None:
        self.inside = False
        self.after = False

    def keep(self, line: str) -> bool:
        text = line.rstrip("\n")
        if text.startswith("Traceback (most recent call last):"):
            self.inside, self.after = True, False
            return False
        if self.inside:
            if not text.strip() or text[0].isspace():
                return False
            self.inside, self.after = False, True  # the exception's own line ends it
            return False
        if self.after and (not text.strip() or text.startswith(self.CHAIN)):
            return False
        self.after = False
        return True


def _relay(stream: IO[bytes], log_path: Path) -> None:
    """Copy a stage's stderr into its log file, and (tracebacks left out unless debugging) to ours."""
    keep = (lambda line: True) if debug_enabled() else TracebackFilter().keep
    try:
        log: IO[bytes] | None = open(log_path, "ab")  # noqa: SIM115 (closed below, after the stream ends)
    except OSError:  # the storage refuses writes: the stage will say so; keep relaying so it never blocks
        log = None
    with contextlib.ExitStack() as closing:
        if log is not None:
            closing.enter_context(log)
        for raw in iter(stream.readline, b""):
            if log is not None:
                log.write(raw)
                log.flush()
            line = raw.decode("utf-8", "replace")
            if keep(line):
                sys.stderr.write(line)
                sys.stderr.flush()


def run_stage_process(
    command: StageCommand, summary_path: Path, log_path: Path, show_stdout: bool = False
) -> tuple[int, StageSummary | None]:
    """Run one stage command as a subprocess; its exit code and summary.

    Its progress (stderr) is shown live and kept in `log_path` (with any traceback, which the
    terminal is spared: `TracebackFilter`); stdout, where it repeats its summary, only when asked
    (training prints its loss curve there). The summary goes to `summary_path` as it would
    to a pod's termination message.
    """
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, TERMINATION_LOG_ENV: str(summary_path)}
    stdout = None if show_stdout else subprocess.DEVNULL
    process = subprocess.Popen(command.argv(ENTRY), env=env, stdout=stdout, stderr=subprocess.PIPE)
    relay = threading.Thread(target=_relay, args=(process.stderr, log_path), daemon=True)
    relay.start()
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
        relay.join(timeout=5.0)  # its last lines (the one-line failure) before ours
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
    if code == -signal.SIGKILL:
        return (
            "killed by SIGKILL (most often the kernel's out-of-memory killer); its log says what it was doing"
        )
    if code < 0:
        return f"killed by {signal.Signals(-code).name}; its log says what it was doing"
    return f"exit code {code}; its log says why"
