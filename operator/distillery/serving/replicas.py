"""Spreading a client's requests over every ready replica of a served teacher: round robin per request.

The teacher's Service is headless (`manifests.teacher`), so its DNS name resolves to the pod IP of
each ready replica. A ClusterIP Service would balance per *connection* (kube-proxy), and a client that
keeps its connections alive (every pooled HTTP client) would stick to the replicas its first connections
landed on. So the client balances itself, as gRPC clients do with a headless Service (`dns:///` and
`round_robin`) and as the vLLM production stack's router does by default (round robin over the
endpoints): each request goes to the next replica in turn, over that replica's own kept-alive
connections. Round robin gives each ready replica the same number of requests; no replica needs the
Kubernetes API (stages never call it), only DNS.

A replica that dies mid-run: a request to it fails to connect (or its connection drops), the caller
marks it down (`failed`) and retries the request on the next replica; it gets no new requests for
DOWN_SECONDS, and the name is resolved again so that DNS, once the endpoints controller has removed the
pod, no longer lists it. A replacement pod joins at the next resolution.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

# How often the name is resolved again: CoreDNS's `kubernetes` plugin answers with a 5 s TTL by default,
# so a replica that turned ready (or was removed) is seen about as soon as DNS says so.
REFRESH_SECONDS = 5.0
# How long a replica whose connection failed gets no new requests: the teacher's readiness probe takes
# 3 x 10 s to declare a wedged pod unready (then DNS drops it); a pod that came back is tried again after.
DOWN_SECONDS = 30.0

# host, port -> the addresses the name resolves to (pod IPs, for a headless Service).
Resolver = Callable[[str, int], list[str]]


def dns_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in a stable order (each replica once)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted(dict.fromkeys(str(info[4][0]) for info in infos))


def _host_text(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


class Replicas:
    """The replicas behind one base URL's host name; `pick` gives the base URL of the next one in turn.

    Not thread-safe; one per client (the async client uses it from one event loop)."""

    def __init__(
        self,
        base_url: str,
        resolve: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.hostname is None:
            raise ValueError(f"{base_url!r}: expected a URL with a host name, e.g. http://teacher:8000/v1")
        self._parts = parts
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._resolve = resolve or dns_addresses
        self._clock = clock
        self.addresses: list[str] = []
        self._turn = 0
        self._resolved_at = -math.inf
        self._down: dict[str, float] = {}  # address -> when it may get requests again

    # ---- resolution

    @property
    def due(self) -> bool:
        return self._clock() - self._resolved_at >= REFRESH_SECONDS

    def refresh(self) -> None:
        """Resolve the name again; a failed lookup keeps the replicas known so far (DNS may blip)."""
        try:
            found = self._resolve(self.host, self.port)
        except OSError:
            found = []
        self._resolved(found)

    async def refresh_async(self) -> None:
        """`refresh` off the event loop: a slow DNS answer must not stall the requests in flight."""
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                None, self._resolve, self.host, self.port
            )
        except OSError:
            found = []
        self._resolved(found)

    def _resolved(self, found: list[str]) -> None:
        self._resolved_at = self._clock()
        if found:
            self.addresses = list(found)
            self._down = {a: t for a, t in self._down.items() if a in found}

    # ---- choosing

    def pick(self) -> str:
        """The base URL of the next replica in turn, skipping those marked down (all of them down: try all
        anyway rather than stall). Before any resolution has succeeded, the URL as given."""
        if not self.addresses:
            return self.base_url
        now = self._clock()
        up = [a for a in self.addresses if self._down.get(a, 0.0) <= now] or self.addresses
        address = up[self._turn % len(up)]
        self._turn += 1
        return self.url_of(address)

    def url_of(self, address: str) -> str:
        netloc = f"{_host_text(address)}:{self.port}"
        return urlunsplit((self._parts.scheme, netloc, self._parts.path, "", ""))

    def failed(self, url: str) -> None:
        """A connection to the replica at `url` failed: no new requests to it for a while, and look again."""
        host = urlsplit(url).hostname
        if host is None or host == self.host:
            self._resolved_at = -math.inf
            return
        self._down[host] = self._clock() + DOWN_SECONDS
        self._resolved_at = -math.inf
