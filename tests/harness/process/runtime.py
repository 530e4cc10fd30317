"""`ProcessRuntime`: the `Runtime` that runs each container as a local process group, with the
rewrites listed in `tests/harness/process/__init__.py`."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.errors import HarnessError
from tests.harness.helpers import exit_code
from tests.harness.process.groups import CONTAINER_MARKER, signal_container, signal_group
from tests.harness.process.rewrites import (
    IMAGE_ENTRYPOINTS,
    image_entrypoint,
    path_rewriter,
    remap_ports,
    service_rewriter,
)
from tests.harness.runtime import Address, ContainerConfig, ServiceKey, StartError

LOOPBACK = "127.0.0.1"
TERMINATION_LOG_VARIABLE = "DISTILLERY_TERMINATION_LOG"  # where a stage writes its summary, if set


@dataclass
class ProcessSandbox:
    """A pod for the process backend: an address of its own on the loopback, and its port map.

    Processes listen on 127.0.0.1 at their remapped ports; the pod's own address (127.0.x.y,
    its status.podIP) forwards each declared container port there, so a client that reaches a
    pod by its IP and container port (an operator scraping /metrics) finds it as in a cluster.
    """

    name: str
    namespace: str
    directory: Path
    ip: str = LOOPBACK
    host_ip: str = LOOPBACK
    forwarders: list[asyncio.AbstractServer] = field(default_factory=list)
    # Container port -> local port. It outlives a container, so a restarted container
    # listens where probes and proxies look.
    ports: dict[int, int] = field(default_factory=dict)
    # Container name -> the CONTAINER_MARKER value its processes carry.
    markers: dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessContainer:
    """One run of a container: its first process, its command line, and what exec probes need."""

    process: asyncio.subprocess.Process
    argv: list[str]
    env: dict[str, str]
    cwd: str
    marker: str

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    async def signal(self, sig: int) -> None:
        signal_container(self.process.pid, self.marker, sig)

    async def wait(self) -> int:
        returncode = await self.process.wait()
        # The runtime tears the whole container down when its first process ends.
        signal_container(self.process.pid, self.marker, signal.SIGKILL)
        return exit_code(returncode)


class ProcessRuntime:
    """Runs containers as local process groups (see `tests/harness/process/__init__.py`).

    `env` stands in for the image's ENV (e.g. `VLLM_CPU_KVCACHE_SPACE`); `entrypoints` for the
    ENTRYPOINT of images a container without `command` runs (default `IMAGE_ENTRYPOINTS`).
    """

    def __init__(
        self, *, env: Mapping[str, str] | None = None, entrypoints: Mapping[str, list[str]] | None = None
    ):
        self.image_env = dict(env or {})
        self.entrypoints = dict(IMAGE_ENTRYPOINTS if entrypoints is None else entrypoints)
        self._allocated: set[int] = set()
        self._addresses = (f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in itertools.count())

    # ------------------------------------------------------------ the Runtime protocol

    async def run_sandbox(
        self, pod: Mapping[str, Any], directory: Path, dns_names: Sequence[str] = ()
    ) -> ProcessSandbox:
        # No names of its own: every pod shares the host's loopback (Service names are rewritten).
        meta = pod["metadata"]
        directory.mkdir(parents=True, exist_ok=True)
        sandbox = ProcessSandbox(
            meta["name"], meta.get("namespace") or "default", directory, ip=next(self._addresses)
        )
        declared = {
            int(port["containerPort"])
            for container in [*(pod["spec"].get("initContainers") or []), *pod["spec"].get("containers", [])]
            for port in container.get("ports") or []
        }
        for number in sorted(declared):
            sandbox.forwarders.append(
                await asyncio.start_server(_forward(sandbox, number), sandbox.ip, number)
            )
        return sandbox

    async def start(
        self, sandbox: Any, config: ContainerConfig, services: Mapping[ServiceKey, Address]
    ) -> ProcessContainer:
        marker = sandbox.markers.setdefault(
            config.name, f"{sandbox.namespace}/{sandbox.name}/{config.name}/{uuid.uuid4().hex[:8]}"
        )
        argv, env, cwd = self.plan(sandbox, config, services)
        env[CONTAINER_MARKER] = marker
        (sandbox.directory / f"{config.name}.command.json").write_text(
            json.dumps({"argv": argv, "cwd": cwd, "env": env}, indent=2)
        )
        try:
            with config.log.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            raise StartError(str(error), argv) from error
        return ProcessContainer(process, argv, env, cwd, marker)

    async def exec(self, handle: Any, command: list[str], timeout: float) -> int:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=handle.env,
            cwd=handle.cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return exit_code(await asyncio.wait_for(process.wait(), timeout))
        except asyncio.TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            raise

    def endpoint(self, sandbox: Any, port: int) -> Address:
        return Address(LOOPBACK, sandbox.ports.get(port, port))

    def proxy_address(self, service: ServiceKey) -> Address:
        return Address(LOOPBACK, 0)

    def release_proxy(self, service: ServiceKey) -> None:
        """Nothing to do: Service addresses are rewritten into each container's command line at its start."""

    async def remove_sandbox(self, sandbox: Any) -> None:
        """Close the pod address's forwarders; its processes ended with their containers, its files stay."""
        for server in sandbox.forwarders:
            server.close()

    # ------------------------------------------------------------ the local command line

    def plan(
        self, sandbox: ProcessSandbox, config: ContainerConfig, services: Mapping[ServiceKey, Address]
    ) -> tuple[list[str], dict[str, str], str]:
        """The local argv, environment and working directory of a container (rewrites 1-5)."""
        mounts = {path: str(local) for path, local in config.mounts.items()}
        mounts[config.termination_message_path] = str(config.termination_log)
        env = dict(config.env)
        if TERMINATION_LOG_VARIABLE not in env:
            env[TERMINATION_LOG_VARIABLE] = config.termination_message_path
        command = config.command or image_entrypoint(config.image, self.entrypoints) or []
        if not command:
            raise HarnessError(
                f"container {config.name} has no command and image {config.image!r} is not in "
                "IMAGE_ENTRYPOINTS; the harness does not know what it would run"
            )
        rewrite_paths = path_rewriter(mounts)
        rewrite_services = service_rewriter(
            {key: address.port for key, address in services.items()}, sandbox.namespace
        )

        def rewrite(text: str) -> str:
            return rewrite_services(rewrite_paths(text))

        argv = [rewrite(a) for a in [*command, *config.args]]
        env = {k: rewrite(v) for k, v in env.items()}
        declared = {int(p["containerPort"]) for p in config.ports}
        argv, env = remap_ports(argv, env, sandbox.ports, self.allocate_port)
        for number in declared - set(sandbox.ports):
            # A declared port no argument carries: the process binds it as is.
            sandbox.ports.setdefault(number, number)
        argv[0] = self._executable(argv[0])
        workdir = rewrite(config.working_dir) or str(sandbox.directory / "workdir")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return argv, {**self._image_env(sandbox), **env}, workdir

    def allocate_port(self) -> int:
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            if port not in self._allocated:
                self._allocated.add(port)
                return port
        raise HarnessError("no free local port")

    def _executable(self, name: str) -> str:
        if os.sep in name and os.access(name, os.X_OK):
            return name
        found = shutil.which(os.path.basename(name), path=self._path())
        return found or name  # not found: exec fails and the pod reports StartError

    def _path(self) -> str:
        return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])

    def _image_env(self, sandbox: ProcessSandbox) -> dict[str, str]:
        # PYTHONPATH, like PATH, stands in for what the image installs: a test run with
        # PYTHONPATH=<checkout>/operator runs that checkout's code in every pod too.
        code = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        return {
            "PATH": self._path(),
            "LANG": "C.UTF-8",
            "HOSTNAME": sandbox.name,
            "HOME": str(sandbox.directory / "home"),
            **code,
            **self.image_env,
        }


def _forward(sandbox: ProcessSandbox, port: int):
    """A connection to the pod's address and container port, piped to where its process listens."""
    from tests.harness.service_proxy import _pipe

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = sandbox.ports.get(port)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, local or port)
        except OSError:
            writer.close()  # nothing listens yet: refused, as a pod's closed port is
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    return handle
