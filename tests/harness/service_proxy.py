"""kube-proxy and cluster DNS, for the Services the harness sees: each Service port is a TCP
proxy (where the runtime says, `Runtime.proxy_address`) that forwards each connection to one
of the ready Pods its selector matches, in turn, at the address the runtime gives for the
target port (`Runtime.endpoint`). With no ready endpoint a connection is refused (closed).
How a pod finds the proxy by the Service's name is the runtime's part."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from tests.harness.helpers import labels_match
from tests.harness.runtime import Address, ServiceKey

if TYPE_CHECKING:
    from tests.harness.kubelet import Kubelet


class ServiceProxy:
    """kube-proxy for one Service port: a TCP listener forwarding to a ready endpoint."""

    def __init__(self, kubelet: Kubelet, namespace: str, service: str, port: dict[str, Any]):
        self.kubelet = kubelet
        self.namespace = namespace
        self.service = service
        self.port = port
        self.selector: dict[str, str] = {}
        self.server: asyncio.AbstractServer | None = None
        self.address = Address("", 0)  # where it listens, once started
        self._turn = itertools.count()

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.service, self.namespace, int(self.port["port"]))

    async def start(self) -> None:
        host, port = self.kubelet.runtime.proxy_address(self.key)
        self.server = await asyncio.start_server(self._handle, host, port)
        self.address = Address(host, self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    def endpoints(self) -> list[Address]:
        """Addresses of the ready pods behind this Service port."""
        target = self.port.get("targetPort", self.port["port"])
        out = []
        for pod in self.kubelet.local_pods():
            if (
                pod.namespace != self.namespace
                or not pod.ready
                or pod.sandbox is None
                or not labels_match(self.selector, pod.labels)
            ):
                continue
            number = pod.port_names.get(target) if isinstance(target, str) else int(target)
            if number is not None:
                out.append(self.kubelet.runtime.endpoint(pod.sandbox, number))
        return out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoints = self.endpoints()
        if not endpoints:  # no ready endpoint: the connection is refused
            writer.close()
            return
        host, port = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction of a proxied connection until it ends."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()
