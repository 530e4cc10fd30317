"""The reconcile queue: events ask for a job's reconcile; workers run them, one at a time per job.

Requests for a job that is already queued coalesce; a request while its reconcile runs
queues exactly one more run after it (the level-based reconcile sees everything that changed
meanwhile). A request may be delayed (a deadline to check, a retry with backoff). Reconciles
are coroutines: `workers` of them wait on the API server at once. Nothing runs unless
`active()` says so: a standby replica keeps its cache warm and its queue idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class Backoff:
    """What `work` returns to be left alone for a while: events for the key wait until then too."""

    seconds: float


class WorkQueue:
    def __init__(
        self,
        work: Callable[[Key], Awaitable[float | Backoff | None]],
        workers: int = 8,
        active: Callable[[], bool] = lambda: True,
    ):
        """`work(key)` reconciles one job and returns seconds until it wants to run again (a deadline:
        events still run it sooner), a Backoff (nothing runs it sooner), or None."""
        self.work = work
        self.workers = workers
        self.active = active
        self._ready: asyncio.Queue[Key] | None = None
        self._queued: set[Key] = set()  # in _ready, not yet taken
        self._running: set[Key] = set()
        self._again: set[Key] = set()  # asked for while running
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._held: dict[Key, float] = {}  # key -> loop time before which it is not run (a backoff)
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"reconcile-{n}") for n in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in self._timers.values():
            timer.cancel()

    def request(self, key: Key, delay: float = 0.0) -> None:
        """Ask for a reconcile of `key` now or after `delay` seconds (the earlier of two delays wins).

        Safe to call from the event loop only; threads use `request_threadsafe`.
        """
        if self._ready is None:
            return
        held = self._held.get(key)
        if held is not None:
            if held > self._loop.time():
                delay = max(delay, held - self._loop.time())
            else:
                del self._held[key]
        if delay > 0:
            timer = self._timers.get(key)
            due = self._loop.time() + delay
            if timer is not None and timer.when() <= due:
                return
            if timer is not None:
                timer.cancel()
            self._timers[key] = self._loop.call_at(due, self._fire, key)
            return
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def request_threadsafe(self, key: Key, delay: float = 0.0) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request, key, delay)

    def request_all(self, keys: list[Key]) -> None:
        for key in keys:
            self.request(key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.request(key)

    async def _worker(self) -> None:
        assert self._ready is not None
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            if not self.active():
                continue  # a standby replica: the leader reconciles; on takeover every job is requested
            self._running.add(key)
            started = time.monotonic()
            try:
                again = await self.work(key)
            except Exception:  # the work function handles what it expects; this is a bug: log, retry later
                logger.exception("reconcile of %s/%s failed unexpectedly; retrying in 30 s", *key)
                again = 30.0
            finally:
                self._running.discard(key)
            logger.debug("reconciled %s/%s in %.3f s", key[0], key[1], time.monotonic() - started)
            if isinstance(again, Backoff):
                self._held[key] = self._loop.time() + again.seconds
                self._again.discard(key)
                self.request(key, again.seconds)
                continue
            if key in self._again:
                self._again.discard(key)
                self.request(key)
            if again is not None:
                self.request(key, again)

    def depth(self) -> dict[str, Any]:
        return {"queued": len(self._queued), "running": len(self._running), "delayed": len(self._timers)}
