"""Exponential backoff with jitter, the one rule every retry in Distillery follows (the teacher client's
requests, the operator's API requests and its reconciles). Pure."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def delay(
    attempt: int,
    base: float,
    cap: float,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry `attempt` (0-based): base x 2^attempt, capped, with "equal jitter" (half
    fixed, half random) so that many clients retrying at once spread out but still back off. A server's
    Retry-After is honoured (never waited less), up to the cap."""
    ceiling = min(cap, base * 2 ** min(attempt, 62))
    wait = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        wait = max(wait, min(retry_after, cap))
    return wait


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header's seconds: a number, or an HTTP date (RFC 9110); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
