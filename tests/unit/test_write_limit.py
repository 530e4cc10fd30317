"""The client-side limit on the operator's API writes: the token bucket's arithmetic, and the chart's
values reaching the bucket the operator's API client takes from.

The bucket runs on a clock the test moves (its arithmetic is a pure function of the times it is asked
at); the chart is rendered by the real helm, and what its Deployment sets is read by the operator's own
settings reader.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from distillery.controller.ratelimit import TokenBucket
from distillery.controller.settings import OperatorSettings, SettingsError, from_environment
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def test_a_burst_goes_at_once_then_one_write_every_one_over_qps():
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)
    waits = [bucket.reserve() for _ in range(6)]
    # Three at once, then each later write is promised the next token: 0.1 s apart, in arrival order.
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_a_quiet_spell_refills_the_bucket_up_to_the_burst_only():
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.now += 0.15  # 1.5 tokens back
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(0.05)  # half a token left, the next is 0.05 s away
    clock.now += 3600  # an hour idle saves `burst` tokens, not 36,000
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_a_sustained_rate_is_held_to_qps_whatever_the_burst():
    clock = Clock()
    bucket = TokenBucket(qps=50, burst=20, clock=clock)
    # 500 writes asked for at 200/s: the last may go at (500 - 20) / 50 s after the first, not sooner.
    last = 0.0
    for n in range(500):
        clock.now = 100.0 + n / 200
        last = clock.now + bucket.reserve()
    assert last - 100.0 == pytest.approx((500 - 20) / 50)


def test_no_limit_never_waits():
    bucket = TokenBucket(qps=0, burst=1, clock=Clock())
    assert not bucket.limited
    assert {bucket.reserve() for _ in range(10_000)} == {0.0}


def test_a_limit_without_a_burst_is_refused():
    with pytest.raises(ValueError, match="burst of at least 1"):
        TokenBucket(qps=5, burst=0)


@pytest.mark.asyncio
async def test_acquire_waits_on_the_event_loop_for_its_token():
    bucket = TokenBucket(qps=40, burst=2)
    started = time.monotonic()
    waited = await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    elapsed = time.monotonic() - started
    assert sorted(waited) == pytest.approx([0, 0, 0.025, 0.05, 0.075, 0.1], abs=0.01)
    assert elapsed >= 0.1 - 0.005  # the four beyond the burst left 1/40 s apart, however many waited


# ---------------------------------------------------------------- from the chart to the operator's client


def test_the_charts_write_limit_reaches_the_operators_api_client(tmp_path):
    from distillery.controller.handlers import Runtime
    from tests.support.chart import find, render

    def settings_of(*values: str, files: tuple[str, ...] = ()) -> OperatorSettings:
        (container,) = find(render(*values, files=files), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ]
        return from_environment({e["name"]: e["value"] for e in container["env"] if "value" in e})

    default = settings_of()
    assert (default.api_qps, default.api_burst) == (
        OperatorSettings().api_qps,
        OperatorSettings().api_burst,
    )
    values = tmp_path / "values.yaml"  # a fraction of a write a second: `--set` would give helm a string
    values.write_text("operator:\n  apiWriteQPS: 7.5\n  apiWriteBurst: 9\n")
    chosen = settings_of(files=(str(values),))
    limiter = Runtime(chosen).api.limiter
    assert (limiter.qps, limiter.burst) == (7.5, 9)
    assert Runtime(settings_of("operator.apiWriteQPS=0")).api.limiter is None


@pytest.mark.parametrize(
    ("variable", "value", "chart"),
    [
        ("DISTILLERY_API_QPS", "-1", "operator.apiWriteQPS"),
        ("DISTILLERY_API_BURST", "0", "operator.apiWriteBurst"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_chart_value(variable: str, value: str, chart: str):
    with pytest.raises(SettingsError) as refused:
        from_environment({variable: value})
    (problem,) = refused.value.problems
    assert problem.startswith(f"{variable} (chart value {chart}): expected"), problem
