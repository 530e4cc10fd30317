"""The retry rules, pure: backoff with jitter and Retry-After, and how the operator classes its faults
(which are retried, and the label each is counted under)."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest
from kubernetes.client.rest import ApiException

from distillery import backoff
from distillery.controller import metrics
from distillery.controller.apiclient import RETRIED, fault_reason, retry_after_of
from distillery.controller.handlers import EndlessBackoff

pytestmark = pytest.mark.unit


def test_delay_doubles_is_jittered_within_half_and_capped():
    rng = random.Random(7)
    for attempt in range(8):
        ceiling = min(10.0, 0.5 * 2**attempt)
        seen = [backoff.delay(attempt, 0.5, 10.0, rng) for _ in range(40)]
        assert all(ceiling / 2 <= s <= ceiling for s in seen), attempt
        assert len(set(seen)) > 1, "no jitter"
    assert backoff.delay(10_000, 0.5, 10.0, rng) <= 10.0  # no overflow far out


def test_retry_after_is_honoured_up_to_the_cap():
    rng = random.Random(1)
    assert backoff.delay(0, 0.5, 10.0, rng, retry_after=4) == 4
    assert backoff.delay(0, 0.5, 10.0, rng, retry_after=600) == 10.0
    assert backoff.delay(3, 0.5, 10.0, rng, retry_after=0) >= 2.0  # never sooner than the backoff


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    assert backoff.retry_after_seconds("3") == 3.0
    assert backoff.retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert backoff.retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert backoff.retry_after_seconds("soon") is None
    assert backoff.retry_after_seconds(None) is None


def _api_error(status: int, body: str = "", headers: dict | None = None) -> ApiException:
    error = ApiException(status=status, reason="x")
    error.body, error.headers = body, headers
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_api_error(429), "throttled"),
        (_api_error(500), "server_error"),
        (_api_error(503), "server_error"),
        (_api_error(409), "refused"),
        (_api_error(403), "refused"),
        (_api_error(422), "refused"),
        (asyncio.TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError(), "timeout"),
        (aiohttp.ClientConnectionError(), "unreachable"),
        (ConnectionResetError(), "unreachable"),
        (ValueError("Expecting value: line 1 column 1"), "unexpected"),
        (KeyError("metadata"), "unexpected"),
    ],
)
def test_each_fault_has_a_class_the_metrics_know(error, reason):
    assert fault_reason(error) == reason
    assert reason in metrics.FAULT_REASONS


def test_only_transient_faults_are_retried():
    assert set(RETRIED) == {"server_error", "timeout", "unreachable"}
    assert "refused" not in RETRIED and "unexpected" not in RETRIED


def test_retry_after_comes_from_the_header_or_the_status_details():
    assert retry_after_of(_api_error(429, headers={"Retry-After": "5"})) == 5
    body = '{"kind": "Status", "code": 429, "details": {"retryAfterSeconds": 2}}'
    assert retry_after_of(_api_error(429, body=body)) == 2
    assert retry_after_of(_api_error(429, body="not json")) is None
    assert retry_after_of(asyncio.TimeoutError()) is None


def test_kopf_never_runs_out_of_backoffs_and_each_request_starts_from_the_first():
    backoffs = EndlessBackoff()
    first = list(itertools.islice(backoffs, 100))
    assert len(first) == 100 and all(0 < b <= 30.0 for b in first)  # kopf's default ends after 8
    assert first[-1] >= 15.0  # capped at 30 s, jittered down to half
    assert next(iter(backoffs)) <= 2.0  # kopf iterates it afresh for every request
