"""The docker CLI, called as a subprocess: blocking calls for set-up and tear-down (the test's
thread), async calls for everything the kubelet does (its event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from tests.harness.errors import HarnessError

CALL_TIMEOUT_SECONDS = 120.0  # a docker call that takes longer is a stuck engine


class DockerError(HarnessError):
    """A docker command failed: its arguments and what it said."""

    def __init__(self, args: list[str], code: int, stderr: str):
        super().__init__(f"docker {' '.join(args)[:400]}: exit {code}: {stderr.strip()[-2000:]}")
        self.args_ = args
        self.code = code
        self.stderr = stderr


class Docker:
    """One engine, reached as `docker` (or $DISTILLERY_DOCKER) with `host` as DOCKER_HOST."""

    def __init__(self, host: str | None = None, binary: str | None = None):
        self.binary = binary or os.environ.get("DISTILLERY_DOCKER") or shutil.which("docker") or "docker"
        self.host = host or os.environ.get("DOCKER_HOST") or ""
        self.env = {**os.environ, **({"DOCKER_HOST": self.host} if self.host else {})}

    def argv(self, args: list[str]) -> list[str]:
        return [self.binary, *args]

    def run_sync(self, *args: str, check: bool = True, timeout: float = CALL_TIMEOUT_SECONDS) -> str:
        """Run one command and return its stdout; DockerError when it fails and `check`."""
        result = subprocess.run(
            self.argv(list(args)), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise DockerError(list(args), result.returncode, result.stderr)
        return result.stdout

    async def run(self, *args: str, check: bool = True, timeout: float = CALL_TIMEOUT_SECONDS) -> str:
        """The async `run_sync`."""
        code, out, err = await self.call(list(args), timeout)
        if check and code != 0:
            raise DockerError(list(args), code, err)
        return out

    async def call(self, args: list[str], timeout: float = CALL_TIMEOUT_SECONDS) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of one command; asyncio.TimeoutError (command killed) after `timeout`."""
        process = await asyncio.create_subprocess_exec(
            *self.argv(args),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def follow_logs(self, container: str, log: Path) -> asyncio.subprocess.Process:
        """`docker logs --follow`, appending stdout and stderr to `log`; it ends with the container."""
        with log.open("ab") as handle:
            return await self._spawn(["logs", "--follow", container], handle)

    async def _spawn(self, args: list[str], out: IO[bytes]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv(args), env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )


def labels_filter(labels: Mapping[str, str]) -> list[str]:
    """`--filter label=k=v` words for `docker ps/volume ls/network ls`."""
    words: list[str] = []
    for key, value in labels.items():
        words += ["--filter", f"label={key}={value}"]
    return words
