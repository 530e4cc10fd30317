"""Faults of an API server, for kmock's emulator (`kmock_cluster.Emulator` mixes this in): what a real one
does under load or in a rollout, applied to the operator's real requests.

- `faults` (filled by `Cluster.refuse`): answer the next N requests of a method and resource with an
  error status (a quota's 403, an overloaded server's 429 with Retry-After or 503), a 200 whose body
  is not JSON (a proxy's error page), or answer only after `delay` seconds (a hung server: the
  request is then served, so a client that gave up may find its create done).
- `end_watches(code=...)` (tests/support/watch_stream.py, shared with the harness's emulator): end every
  open watch stream, as the API server does at its timeout or in a restart; with a code each first gets an
  ERROR event (410: its resourceVersion is too old).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp.web

from tests.support.watch_stream import ResumableWatch


class ApiFaults(ResumableWatch):
    faults: list[dict[str, Any]]

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
