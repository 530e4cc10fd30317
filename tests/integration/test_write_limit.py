"""The operator's API client keeps its writes to the rate limit, against a real HTTP server.

An aiohttp server on the loopback stands in for the API server and notes when each request arrives;
the operator's own `Api` sends to it with a token bucket of 20 writes/s and a burst of 2.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp.web
import pytest
import pytest_asyncio
from kubernetes import client

from distillery.controller import metrics
from distillery.controller.apiclient import Api
from distillery.controller.ratelimit import TokenBucket

pytestmark = pytest.mark.integration

QPS, BURST = 20, 2


@pytest_asyncio.fixture
async def server():
    arrivals: list[tuple[str, float]] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        arrivals.append((request.method, time.monotonic()))
        return aiohttp.web.json_response({}, status=201 if request.method == "POST" else 200)

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", arrivals
    await runner.cleanup()


def _api(url: str) -> Api:
    return Api(limiter=TokenBucket(QPS, BURST), configuration=client.Configuration(host=url))


def _wait_total() -> float:
    return metrics.REGISTRY.get_sample_value("distillery_operator_api_write_wait_seconds_total") or 0.0


@pytest.mark.asyncio
async def test_writes_past_the_burst_reach_the_server_one_every_one_over_qps(server):
    url, arrivals = server
    api = _api(url)
    before = _wait_total()
    try:
        await asyncio.gather(
            *(api.request("POST", f"/api/v1/namespaces/ml/events?n={n}", {}) for n in range(8))
        )
    finally:
        await api.close()
    times = sorted(t for method, t in arrivals if method == "POST")
    assert len(times) == 8
    # The burst at once, the six after it 1/20 s apart: 8 writes span at least (8 - 2) / 20 s.
    assert times[-1] - times[0] >= (8 - BURST) / QPS - 0.01
    assert _wait_total() - before == pytest.approx(sum(n / QPS for n in range(1, 7)), abs=0.02)


@pytest.mark.asyncio
async def test_reads_and_lease_writes_do_not_wait_for_the_limit(server):
    url, arrivals = server
    api = _api(url)
    try:
        for _ in range(BURST):  # spend the burst
            await api.request("POST", "/api/v1/namespaces/ml/events", {})
        started = time.monotonic()
        await asyncio.gather(
            *(api.request("GET", "/api/v1/namespaces/ml/persistentvolumeclaims/data") for _ in range(10)),
            *(
                api.request(
                    "PATCH", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/d", {}, limited=False
                )
                for _ in range(10)
            ),
        )
        elapsed = time.monotonic() - started
    finally:
        await api.close()
    assert len(arrivals) == BURST + 20
    assert elapsed < 10 / QPS  # twenty requests with no token left: none of them waited for one
