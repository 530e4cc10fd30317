"""Stopping a local server leaves no process of its group behind (`serving.vllm.stop_process`).

vLLM's engine process can outlive its API server by a moment; here a stand-in server's child ignores
SIGTERM outright, so only the SIGKILL to the whole group ends it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from distillery.serving.vllm import group_alive, stop_process

pytestmark = pytest.mark.stages

# A parent that exits on SIGTERM and a child (the "engine") that ignores it; the child writes its pid.
SERVER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(os.getpid(), flush=True); time.sleep(120)"],
    stdout=sys.stdout)
time.sleep(120)
"""


def test_stop_process_leaves_no_process_of_the_group():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    assert group_alive(process.pid)
    started = time.monotonic()
    stop_process(process, grace=1.0)
    assert process.poll() is not None
    assert not group_alive(process.pid), f"the engine stand-in {child} outlived stop_process"
    assert time.monotonic() - started < 11.0  # the grace, then the SIGKILL: not the 10 s wait after it


def test_stop_process_ends_an_engine_left_behind_by_a_server_that_already_exited():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER.replace("time.sleep(120)\n", "")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    int(process.stdout.readline())
    process.wait(timeout=30)
    assert group_alive(process.pid)  # its "engine" lives on in the group
    stop_process(process, grace=1.0)
    assert not group_alive(process.pid)
