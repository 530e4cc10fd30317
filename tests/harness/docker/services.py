"""Services on the container network: a Service's ClusterIP and its DNS names.

A cluster gives each Service a virtual IP (its ClusterIP) that kube-proxy forwards to a ready
pod, and cluster DNS a name `<svc>.<ns>.svc.cluster.local` for it; pods find it by the short
name through their DNS search path (`<ns>.svc.cluster.local svc.cluster.local cluster.local`,
ndots 5). Here each Service is one small container on the network, its "ClusterIP": it holds
the Service's DNS names as network aliases (Docker's embedded DNS answers them, and follows
the Service as it comes and goes) and forwards each Service port to the harness's kube-proxy
(`tests/harness/service_proxy.py`), which listens on the network's gateway and picks a ready
endpoint. Why not aliases on the pods: a Service's name must not follow one pod, and must stop
answering for a pod that is not ready; why not a DNS server: every Service would then need an
address of its own on the host, made with `ip addr` as root.

The forwarder runs as nobody with a read-only root and no capabilities, from any image that
has python3 (the runtime's `utility_image`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Mapping

from tests.harness.dns import CLUSTER_DOMAIN
from tests.harness.docker.engine import Docker
from tests.harness.errors import HarnessError
from tests.harness.runtime import Address, ServiceKey

FORWARDER_READY_SECONDS = 60.0

# Listens on each "PORT:HOST:TARGET" argument and pipes every connection to HOST:TARGET.
FORWARDER = """
import asyncio, sys
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except Exception:
        writer.close()
def forward(host, port):
    async def handle(reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        writer.close()
        upstream_writer.close()
    return handle
async def main():
    for spec in sys.argv[1:]:
        listen, host, port = spec.split(":")
        await asyncio.start_server(forward(host, int(port)), "0.0.0.0", int(listen))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def dns_names(service: str, namespace: str) -> list[str]:
    """The names cluster DNS gives a Service (the short ones come from the pods' search path)."""
    return [f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{service}.{namespace}.svc"]


def dns_search(namespace: str) -> list[str]:
    """A pod's DNS search path, as the kubelet writes it into resolv.conf."""
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]


class ServiceAddresses:
    """One forwarder container per Service, kept in step with the Service ports the kubelet proxies."""

    def __init__(
        self,
        docker: Docker,
        *,
        network: str,
        gateway: str,
        image: Callable[[], str],
        labels: Mapping[str, str],
        prefix: str,
    ):
        self.docker = docker
        self.network = network
        self.gateway = gateway
        self.image = image
        self.labels = dict(labels)
        self.prefix = prefix
        # (namespace, service) -> {service port: port of its kube-proxy on the gateway}
        self.wanted: dict[tuple[str, str], dict[int, int]] = {}
        self.running: dict[tuple[str, str], tuple[str, dict[int, int]]] = {}  # -> (container, ports)
        self.ips: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: set[asyncio.Task] = set()
        self.errors: list[str] = []

    def proxy_address(self, service: ServiceKey) -> Address:
        """Where the kube-proxy of one Service port listens: a free port on the gateway; the forwarder follows."""
        with socket.socket() as sock:
            sock.bind((self.gateway, 0))
            port = sock.getsockname()[1]
        self.wanted.setdefault((service.namespace, service.name), {})[service.port] = port
        self._schedule(service.namespace, service.name)
        return Address(self.gateway, port)

    def release(self, service: ServiceKey) -> None:
        ports = self.wanted.get((service.namespace, service.name), {})
        ports.pop(service.port, None)
        self._schedule(service.namespace, service.name)

    async def settle(self) -> None:
        """Wait until every forwarder matches the Services (before a pod starts that may look them up)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self.errors:
            raise HarnessError("Service forwarders failed: " + "; ".join(self.errors))

    def _schedule(self, namespace: str, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._reconcile(namespace, name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reconcile(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            wanted = dict(self.wanted.get(key) or {})
            current = self.running.get(key)
            if current is not None and current[1] == wanted:
                return
            try:
                if current is not None:
                    await self.docker.run("rm", "--force", current[0])
                    del self.running[key]
                    self.ips.pop(key, None)
                if wanted:
                    container = await self._start(namespace, name, wanted)
                    self.running[key] = (container, wanted)
            except Exception as error:
                self.errors.append(f"Service {namespace}/{name}: {error}")
                raise

    async def _start(self, namespace: str, name: str, ports: dict[int, int]) -> str:
        container = f"{self.prefix}-svc-{namespace}-{name}"[:200]
        args = ["run", "--detach", "--name", container, "--pull", "never", "--network", self.network]
        for alias in dns_names(name, namespace):
            args += ["--network-alias", alias]
        for key, value in {**self.labels, "distillery.test.service": f"{namespace}/{name}"}.items():
            args += ["--label", f"{key}={value}"]
        args += [
            "--user",
            "65534:65534",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "64m",
            "--entrypoint",
            "python3",
        ]
        args += [self.image(), "-c", FORWARDER]
        args += [f"{port}:{self.gateway}:{proxy}" for port, proxy in sorted(ports.items())]
        await self.docker.run(*args)
        ip = (
            await self.docker.run(
                "inspect",
                "--format",
                f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}',
                container,
            )
        ).strip()
        self.ips[(namespace, name)] = ip
        await _listening(ip, min(ports), FORWARDER_READY_SECONDS)
        return container


async def _listening(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"the Service forwarder at {host}:{port} did not listen within {timeout:.0f}s")
        await asyncio.sleep(0.1)
