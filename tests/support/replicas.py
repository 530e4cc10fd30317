"""Teacher replicas on one machine, as a headless Service's pods look to a client: vLLM servers on the same
port at different loopback addresses (127.0.0.2, 127.0.0.3, ...), a name that resolves to all of them, and
each server's own count of the requests it answered (vLLM's `vllm:request_success_total` on /metrics)."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from distillery.serving.client import TeacherConnection
from distillery.serving.vllm import VllmServer, free_port, local_vllm_server

SERVED_NAME = "teacher"
# Stands for the job's headless Service: the client resolves it with `resolve` below, never with DNS.
SERVICE_HOST = "tiny-teacher.replicas.test"


def addresses(count: int) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(count)]


@contextlib.contextmanager
def serve_replicas(model: Path, count: int, log_dir: Path, **options) -> Iterator[list[VllmServer]]:
    """`count` vLLM servers of `model`, one per loopback address, all on one port (as pods all listen on the
    teacher's port); started one after the other (2 cores), stopped on exit."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                local_vllm_server(
                    str(model), SERVED_NAME, port=port, host=host, log_path=log_dir / f"{host}.log", **options
                )
            )
            for host in addresses(count)
        ]
        yield servers


def connection(servers: list[VllmServer]) -> TeacherConnection:
    """The served teacher's connection as the generation pods build it, its name resolving to every replica
    (as DNS answers for a headless Service; a replica killed later stays listed, like a stale answer)."""
    port = int(servers[0].base_url.rsplit(":", 1)[1].split("/")[0])
    hosts = [server.base_url.split("//")[1].split(":")[0] for server in servers]
    return TeacherConnection(
        f"http://{SERVICE_HOST}:{port}/v1", SERVED_NAME, spread=True, resolve=lambda host, port: list(hosts)
    )


def requests_served(server: VllmServer) -> int:
    """Chat completions the server finished (every finish reason), from its own /metrics."""
    with urllib.request.urlopen(f"{server.root_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
