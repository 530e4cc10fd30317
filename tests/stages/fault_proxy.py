"""A fault-injecting HTTP proxy for tests: stdlib asyncio streams, one request per connection.

Chat-completion requests are answered by a fault from `schedule` (by request number) or
forwarded to the upstream server; everything else (GET /models, /health) is forwarded.
Faults: "500" (an HTTP 500 error), "429" (rate limited, with Retry-After), "drop"
(the connection is closed without an answer), "timeout" (the request is read and never
answered). Runs its own event loop in a thread, so the code under test can own the main one.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

FAULT_BODIES = {
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 40\r\n"
    b'Connection: close\r\n\r\n{"error": {"message": "injected fault"}}',
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Type: application/json\r\n"
    b'Content-Length: 40\r\nConnection: close\r\n\r\n{"error": {"message": "injected fault"}}',
}


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, schedule: Callable[[int], str | None]):
        self.upstream = (upstream_host, upstream_port)
        self.schedule = schedule
        self.faults: Counter = Counter()
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        length = 0
        lines = head.decode("latin-1").split("\r\n")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        fault = None
        if lines[0].startswith("POST") and "/chat/completions" in lines[0]:
            self.requests += 1
            fault = self.schedule(self.requests)
        if fault:
            self.faults[fault] += 1
        try:
            if fault in FAULT_BODIES:
                writer.write(FAULT_BODIES[fault])
                await writer.drain()
            elif fault == "timeout":
                await reader.read()  # until the client gives up and closes
            elif fault is None:
                await self._forward(head, body, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _forward(self, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        # One request per upstream connection: ask the server to close, then relay until EOF.
        lines = [
            line
            for line in head.decode("latin-1").split("\r\n")
            if line and not line.lower().startswith("connection:")
        ]
        request = ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(request)
        await up_writer.drain()
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()
