"""Signalling every process of a container the process backend started, as a cgroup would.

A container runs as a process group of its own (`start_new_session`), and each of its
processes carries a marker variable (`CONTAINER_MARKER`), so a signal reaches everything it
started, even processes that left the group (a stage that starts vLLM in a session of its own).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# An environment variable every container process carries (see marked_processes).
CONTAINER_MARKER = "KUBELET_HARNESS_CONTAINER"


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries this container's marker: everything it started,
    including processes that left its process group (vLLM servers a stage starts with a
    session of their own). It stands in for the container's cgroup."""
    needle = f"{CONTAINER_MARKER}={marker}\0".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if needle in environ.read_bytes():
                found.append(int(environ.parent.name))
    return found


def signal_container(leader: int | None, marker: str, sig: int) -> None:
    """Signal every process of a container: the process group of its first process and every marked process."""
    if leader is not None:
        signal_group(leader, sig)
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
