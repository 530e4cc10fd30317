"""The client-side limit on the operator's writes to the API server: a token bucket (QPS, burst).

A thousand jobs created at once make the operator write ~14 times per job (children, status, Events)
as fast as the API server answers; on a shared control plane that burst competes with every other
client. client-go limits each client the same way (`rest.Config.QPS` / `Burst`, a token bucket from
golang.org/x/time/rate): `burst` writes may go at once, then one every `1 / qps` seconds, and a quiet
spell refills the bucket at `qps` tokens a second up to `burst`. Reads are not limited (the operator
reads from its watch-fed cache; its few GETs are a claim or a Secret's labels before a job starts),
and neither are the leader election's Lease writes, which must never queue behind a burst (a Lease
renewed late is a leader lost).

The arithmetic (`reserve`) is pure, given the clock: waiting writers take tokens in order, each told
how long to wait, so they leave spaced `1 / qps` apart however many arrive at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class TokenBucket:
    """`qps` tokens a second, at most `burst` saved; `qps` <= 0: no limit."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps > 0 and burst < 1:
            raise ValueError(f"a rate limit of {qps} writes/s needs a burst of at least 1 (got {burst})")
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)  # may go below 0: the writes already promised a later token
        self._at = clock()

    @property
    def limited(self) -> bool:
        return self.qps > 0

    def reserve(self) -> float:
        """Take one token; the seconds to wait before writing (0: now)."""
        if not self.limited:
            return 0.0
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def acquire(self) -> float:
        """Wait for a token; the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait
