"""Faults of an API server, for kmock's emulator (`kmock_cluster.Emulator` mixes this in): what a real one
does under load or in a rollout, applied to the operator's real requests.

- `faults` (filled by `Cluster.refuse`): answer the next N requests of a method and resource with an
  error status (a quota's 403, an overloaded server's 429 with Retry-After or 503), a 200 whose body
  is not JSON (a proxy's error page), or answer only after `delay` seconds (a hung server: the
  request is then served, so a client that gave up may find its create done).
- `end_watches(code=...)`: end every open watch stream, as the API server does at its timeout or in
  a restart; with a code each first gets an ERROR event (410: its resourceVersion is too old).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web


def watch_error(code: int) -> dict[str, Any]:
    """The ERROR event an API server sends down a watch (410: its resourceVersion is too old)."""
    reason = {410: "Expired", 500: "InternalError"}.get(code, "Unknown")
    return {
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": "too old resource version" if code == 410 else "etcd watch channel closed",
        },
    }


class ApiFaults:
    faults: list[dict[str, Any]]
    watch_ends: int = 0  # watch streams ended by `end_watches`

    def _watch_stop(self, plural: str) -> asyncio.Event:
        stops = self.__dict__.setdefault("_watch_stops", {})
        if plural not in stops:
            stops[plural] = asyncio.Event()
        return stops[plural]

    def end_watches(self, code: int | None = None, plural: str | None = None) -> None:
        """End the watch streams open now (of one resource, or all; those opened later run on), after an
        ERROR event with `code`."""
        self._error = code
        stops = self.__dict__.setdefault("_watch_stops", {})
        for name in [name for name in stops if plural in (None, name)]:
            stops.pop(name).set()

    async def _faulted(self, request: Any) -> aiohttp.web.StreamResponse | None:
        """The answer a fault gives `request` instead of serving it; None to serve it (perhaps late)."""
        fault = self._fault(request)
        if fault is None:
            return None
        fault.setdefault("served", []).append(time.monotonic())
        if fault.get("delay"):
            await asyncio.sleep(fault["delay"])
            return None
        if fault["code"] == 200:
            return aiohttp.web.Response(text="<html>upstream error</html>", content_type="text/html")
        status = {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": fault["code"],
            "reason": fault["reason"],
            "message": fault["message"],
        }
        return aiohttp.web.json_response(status, status=fault["code"], headers=fault.get("headers"))

    def _fault(self, request: Any) -> dict[str, Any] | None:
        method = str(getattr(request.method, "value", request.method)).upper()
        for fault in getattr(self, "faults", []):
            if (
                fault["times"]
                and fault["method"] == method
                and request.resource is not None
                and (request.resource.plural == fault["plural"])
            ):
                fault["times"] -= 1
                return fault
        return None

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """kmock's watch, with two changes: it can be ended (`end_watches`), and it joins the event bus
        before it takes the snapshot it replays (kmock joins after replaying it, so a change made
        meanwhile reaches no watch: a race a real API server, resuming from a resourceVersion, has not)."""
        stop = self._watch_stop(request.resource.plural)
        yield b""  # the headers go out now, as kmock's own watch sends them
        bus = self._buses[request.resource]  # type: ignore[attr-defined]
        async with self._lock:  # type: ignore[attr-defined]
            marker = await bus.mark()
            objects = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
            events = [{"type": "ADDED", "object": o.raw} for o in objects if not o.deleted]
        source = bus.stream(since=marker).__aiter__()
        stopping = asyncio.ensure_future(stop.wait())
        following: asyncio.Future | None = None
        try:
            for event in events:
                yield event
            while True:
                following = asyncio.ensure_future(source.__anext__())
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    self.watch_ends += 1
                    if getattr(self, "_error", None) is not None:
                        yield watch_error(self._error)
                    return
                event = following.result()
                meta = (event.get("object") or {}).get("metadata") or {}
                if self._KubernetesEmulator__check(  # type: ignore[attr-defined]
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    yield event
        finally:
            # Ended, or the client went away: leave no task behind.
            for task in (following, stopping):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await task
            await bus.unmark(marker)
