"""Freezing a container (SIGSTOP/SIGCONT to a pod) on an engine that cannot freeze.

CI's nested engine refuses `docker pause` ("OCI runtime pause failed: unable to freeze"); the
runtime then stops each of the container's processes from the host. Here the engine can freeze,
so a docker client that refuses `pause` with CI's words (and passes everything else to the real
engine) makes the runtime take that path; the processes' states are read from /proc.
"""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness.docker import Docker, DockerRuntime
from tests.harness.docker.runtime import DockerContainer, container_pids, process_state
from tests.support.chart import Images
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300)]

# A parent and a child, both sleeping: a freeze must stop both.
TWO_PROCESSES = "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)"
REFUSES_PAUSE = """#!/bin/sh
if [ "$1" = pause ]; then
  echo "Error response from daemon: Cannot pause container $2: OCI runtime pause failed: unable to freeze: unknown" >&2
  exit 1
fi
exec {docker} "$@"
"""


def states(pids: list[int]) -> list[str | None]:
    return [process_state(pid) for pid in pids]


class NoLogs:
    async def wait(self) -> int:
        return 0


def test_freeze_falls_back_to_stopping_each_process(runtime: DockerRuntime, images: Images, tmp_path: Path):
    client = tmp_path / "docker"
    client.write_text(REFUSES_PAUSE.format(docker=runtime.docker.binary))
    client.chmod(client.stat().st_mode | stat.S_IXUSR)
    docker = Docker(runtime.docker.host, binary=str(client))
    container = docker.run_sync(
        "run",
        "-d",
        "--rm",
        "--pull",
        "never",
        "--entrypoint",
        "python3",
        images.local_operator,  # a plain run: the engine's copy
        "-c",
        TWO_PROCESSES,
    ).strip()
    try:

        def both_running() -> list[int] | None:
            pids = asyncio.run(container_pids(docker, container))
            return pids if len(pids) == 2 else None

        pids = wait_for(both_running, "the container's two processes", 60)
        assert "T" not in states(pids)

        async def freeze_and_thaw() -> tuple[list[str], list[str], bool]:
            handle = DockerContainer(docker, container, [], pids[0], NoLogs())
            # `docker pause` is refused: each process is sent SIGSTOP, and it returns once all are stopped.
            await handle.signal(signal.SIGSTOP)
            frozen, by_signal = states(pids), handle.stopped_by_signal
            await handle.signal(signal.SIGCONT)
            await asyncio.sleep(0.2)
            thawed = states(pids)
            await docker.run("rm", "-f", container)
            await handle.wait()  # its `docker wait` ends inside this loop
            return frozen, thawed, by_signal

        frozen, thawed, by_signal = asyncio.run(freeze_and_thaw())
        assert by_signal
        assert frozen == ["T", "T"], frozen
        assert "T" not in thawed, thawed
    finally:
        subprocess.run(
            [runtime.docker.binary, "rm", "-f", container], env=runtime.docker.env, capture_output=True
        )
