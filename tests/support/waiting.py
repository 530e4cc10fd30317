"""One way to wait: poll a condition until it is truthy, within a deadline, naming what was awaited."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

INTERVAL = 0.1  # seconds between polls; a deadline bounds them


class _Wait:
    """The bookkeeping shared by the sync and async forms: the deadline, the last value or error, the failure."""

    def __init__(
        self,
        what: str,
        timeout: float,
        details: Callable[[], str] | None,
        process: subprocess.Popen | None,
        ignore: tuple[type[BaseException], ...],
    ):
        self.what, self.timeout, self.details = what, timeout, details
        self.process, self.ignore = process, ignore
        self.deadline = time.monotonic() + timeout
        self.last: Any = None

    def check_process(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the process exited ({self.process.returncode}) before {self.what}{self._details()}"
            )

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def timed_out(self) -> AssertionError:
        return AssertionError(
            f"timed out after {self.timeout:g} s waiting for {self.what} (last: {self.last!r}){self._details()}"
        )

    def _details(self) -> str:
        return f"\n{self.details()}" if self.details is not None else ""


def wait_for(
    condition: Callable[[], Any],
    what: str,
    timeout: float,
    *,
    details: Callable[[], str] | None = None,
    interval: float = INTERVAL,
    process: subprocess.Popen | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `condition` until it returns something truthy and return that value.

    Fails with an AssertionError naming `what`, the timeout, the last value (or error) and
    `details()` when `timeout` seconds pass, or at once when `process` has exited. Exceptions
    of the types in `ignore` count as "not yet" (the last one is reported).
    """
    wait = _Wait(what, timeout, details, process, ignore)
    while wait.running():
        wait.check_process()
        try:
            value = condition()
        except ignore as error:
            wait.last = error
        else:
            if value:
                return value
            wait.last = value
        time.sleep(interval)
    raise wait.timed_out()


async def wait_for_async(
    condition: Callable[[], Any | Awaitable[Any]],
    what: str,
    timeout: float,
    *,
    details: Callable[[], str] | None = None,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """`wait_for` inside an event loop: `condition` may be sync or async; the loop keeps running between polls."""
    wait = _Wait(what, timeout, details, None, ignore)
    while wait.running():
        try:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
        except ignore as error:
            wait.last = error
        else:
            if value:
                return value
            wait.last = value
        await asyncio.sleep(interval)
    raise wait.timed_out()
