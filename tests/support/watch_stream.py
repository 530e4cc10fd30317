"""kmock's watch as a real API server serves it, for both emulators built on kmock (the integration tier's,
tests/support/kmock_cluster.py, and the harness's, tests/harness/emulator.py):

- it joins the event bus before it takes the snapshot it replays: kmock joins after replaying it, so a
  change made in between (while the snapshot is sent) reaches no watch, a race a real API server, resuming
  from a resourceVersion, has not;
- it can be ended (`end_watches`), as the API server ends watches at their timeout or in a restart, with
  an ERROR event first when given a code (410: the resourceVersion is too old).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


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


class ResumableWatch:
    """A mixin before kmock.KubernetesEmulator in the bases: its `_serve_watch` replaces kmock's."""

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

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """kmock's watch, joined to the event bus before its snapshot is taken, and ended by `end_watches`."""
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
