"""The harness's API server (tests/harness/emulator.py) drops no change made while a watch replays its
snapshot: kmock's own watch joined the event stream only after the replay, so a pod status written in that
window reached no watch and the operator waited for it forever (tests/support/watch_stream.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import kmock
import pytest

from tests.harness import RestClient, serve_emulator

pytestmark = pytest.mark.unit

NS = "ns1"
# 8 MiB: more than the sockets and the server's write buffer hold, so the replay waits on a slow client.
SNAPSHOT = 128


def _configmap(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"padding": "x" * 64 * 1024},
    }


async def _create_in_window(emulator: Any, resource: Any) -> None:
    """What kmock does on a create (store the object, announce it on the bus), run as soon as the watch
    has taken its snapshot and let go of the store's lock."""
    async with emulator._lock:
        key = (resource, NS, "made-meanwhile")
        emulator._objects[key] = _configmap("made-meanwhile")
        await emulator._buses[resource].put({"type": "ADDED", "object": emulator._objects[key].last.raw})


def test_a_change_made_while_a_watch_replays_its_snapshot_reaches_the_watch():
    with serve_emulator([NS]) as (emulator, url):
        api = RestClient(url, NS)
        for number in range(SNAPSHOT):
            api.create(_configmap(f"old-{number}"))
        snapshot = emulator._KubernetesEmulator__get_objs
        made: list[asyncio.Task] = []

        def get_objs(request: Any, strict: bool) -> list:
            found = snapshot(request, strict)
            if request.action == kmock.action.WATCH and not made:
                made.append(
                    asyncio.get_running_loop().create_task(_create_in_window(emulator, request.resource))
                )
            return found

        emulator._KubernetesEmulator__get_objs = get_objs  # kmock's watch and ours take the snapshot here

        stream = _watch_slowly(url, f"/api/v1/namespaces/{NS}/configmaps?watch=true", made)
        assert made, "the watch took no snapshot"
        assert stream.count(b'"name": "old-') == SNAPSHOT, "the snapshot was not replayed whole"
        assert b'"name": "made-meanwhile"' in stream, (
            "the object created while the watch replayed its snapshot never reached it"
        )


def _watch_slowly(url: str, path: str, made: list[asyncio.Task]) -> bytes:
    """A watch read by a slow client: nothing is read until the change made in the window is done (so the
    server is still sending its snapshot then), then everything until that change arrives or 10 s pass."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # small: the server must wait on us
        client.connect((host, int(port)))
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while not (made and made[0].done()) and time.monotonic() < deadline:
            time.sleep(0.01)  # polls the emulator's thread; bounded by the deadline
        assert made and made[0].done(), "the change in the window was not made"
        client.settimeout(0.5)
        received = bytearray()
        while b"made-meanwhile" not in received and time.monotonic() < deadline:
            try:
                chunk = client.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        return bytes(received)
