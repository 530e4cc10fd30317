"""The operator's own faults against kmock's API server: requests that time out or meet 429/5xx are
retried with jitter (a 429's Retry-After honoured), other 4xx are not; a reconcile that raises is
retried with backoff and counted; a watch that ends, or ends with 410 Gone, is resumed (kopf does
that: from the last resourceVersion, or by listing again) and no event is missed. Nothing is
created twice, even when a create that timed out on our side was done on the server's. What a user sees of
it: a Warning Event per fault class at most once a minute, and status.faults."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from distillery.controller import apiclient, faults, handlers, reconcile
from distillery.controller.metrics import REGISTRY
from tests.support.kmock_cluster import Cluster, spec, verb_of
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def _count(series: str, reason: str) -> float:
    return REGISTRY.get_sample_value(series, {"reason": reason}) or 0.0


def _requests(cluster: Cluster, verb: str, plural: str) -> list:
    return [
        r
        for r in cluster.operator_requests()
        if verb_of(r) == verb and r.resource is not None and r.resource.plural == plural
    ]


async def _one(cluster: Cluster, resource: str, name: str) -> dict:
    items = [o for o in await cluster.list(resource) if o["metadata"]["name"] == name]
    assert len(items) == 1, f"{len(items)} {resource} named {name}"
    return items[0]


async def test_a_request_that_meets_5xx_is_retried_within_the_reconcile(cluster: Cluster):
    before = _count("distillery_operator_api_retries_total", "server_error")
    fault = cluster.refuse("POST", "deployments", 503, "ServiceUnavailable", "etcd leader changed", times=2)
    async with cluster.operator():
        await cluster.create_job("blip", spec())
        await cluster.inputs_ready("blip")
        status = await cluster.wait_phase("blip", "TeacherStarting")
    assert "retrying" not in (status.get("message") or ""), "a blip the request's retries absorb is no news"
    assert len(fault["served"]) == 2 and len(_requests(cluster, "create", "deployments")) == 3
    gap = fault["served"][1] - fault["served"][0]
    assert 0.25 <= gap < 1.5, (
        f"the second try came {gap:.2f} s after the first (expected 0.25-0.5 s, jittered)"
    )
    assert _count("distillery_operator_api_retries_total", "server_error") - before == 2
    await _one(cluster, "apps/v1/deployments", "blip-teacher")


async def test_a_429_waits_for_its_retry_after(cluster: Cluster):
    before = _count("distillery_operator_api_retries_total", "throttled")
    fault = cluster.refuse(
        "POST", "deployments", 429, "TooManyRequests", "too many", times=2, headers={"Retry-After": "2"}
    )
    async with cluster.operator():
        await cluster.create_job("throttled", spec())
        await cluster.inputs_ready("throttled")
        await cluster.wait_child("apps/v1/deployments", "throttled-teacher")
    first, second = fault["served"]
    assert second - first >= 2.0, f"retried {second - first:.2f} s after a 429 that asked for 2 s"
    assert len(_requests(cluster, "create", "deployments")) == 3
    assert _count("distillery_operator_api_retries_total", "throttled") - before == 2
    await _one(cluster, "apps/v1/deployments", "throttled-teacher")


async def test_a_4xx_other_than_409_and_429_is_not_retried(cluster: Cluster):
    cluster.refuse("POST", "deployments", 422, "Invalid", "spec.template: Invalid value", times=5)
    async with cluster.operator():
        await cluster.create_job("invalid", spec())
        await cluster.inputs_ready("invalid")
        status = await cluster.wait_phase("invalid", "Failed")
    assert "Invalid value" in status["message"]
    assert len(_requests(cluster, "create", "deployments")) == 1


async def test_a_request_that_times_out_is_retried_and_creates_nothing_twice(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(apiclient, "REQUEST_TIMEOUT_SECONDS", 1.0)
    before = _count("distillery_operator_api_retries_total", "timeout")
    # The server hangs for 3 s and then creates the Deployment: the operator gave up after 1 s and
    # tried again, and its second create is answered 409 (done already), which counts as success.
    fault = cluster.refuse("POST", "deployments", 0, "", "", delay=3.0)
    async with cluster.operator():
        await cluster.create_job("hung", spec())
        await cluster.inputs_ready("hung")
        await cluster.wait_phase("hung", "TeacherStarting", timeout=30)
    assert len(fault["served"]) == 1
    assert _count("distillery_operator_api_retries_total", "timeout") - before >= 1
    assert len(_requests(cluster, "create", "deployments")) >= 2
    await _one(cluster, "apps/v1/deployments", "hung-teacher")


async def test_a_reconcile_that_raises_is_retried_with_backoff_and_counted(cluster: Cluster):
    before = _count("distillery_reconcile_errors_total", "unexpected")
    # A 200 whose body is an HTML page (a misbehaving proxy): the operator cannot decode it, a failure
    # no code path expects.
    fault = cluster.refuse("POST", "jobs", 200, "", "")
    async with cluster.operator():
        await cluster.create_job("proxied", spec())
        await cluster.wait_child("batch/v1/jobs", "proxied-check", timeout=30)
        status = await cluster.job_status("proxied")
    assert len(fault["served"]) == 1
    assert _count("distillery_reconcile_errors_total", "unexpected") - before == 1
    assert status["phase"] == "Pending"
    assert len(_requests(cluster, "create", "jobs")) == 2
    await _one(cluster, "batch/v1/jobs", "proxied-check")


@pytest.mark.parametrize("gone", [False, True], ids=["ended", "410-gone"])
async def test_a_watch_that_ends_is_resumed_and_misses_no_event(cluster: Cluster, gone: bool):
    # (A watch that meets 5xx, 429 or timeouts when it reconnects is retried without end: handlers.configure.)
    async with cluster.operator():
        await cluster.create_job("watched", spec())
        check = await cluster.wait_child("batch/v1/jobs", "watched-check")
        watches = len(_requests(cluster, "watch", "jobs"))
        lists = len(_requests(cluster, "list", "jobs"))
        cluster.server.end_watches(410 if gone else None)
        # What happens while the watches are down reaches the operator through the new ones.
        await cluster.inputs_ready("watched")
        await cluster.wait_child("apps/v1/deployments", "watched-teacher", timeout=30)
    assert check["metadata"]["name"] == "watched-check" and cluster.server.watch_ends >= 2
    rewatched = _requests(cluster, "watch", "jobs")[watches:]
    assert rewatched, "the operator did not watch Jobs again"
    relisted = len(_requests(cluster, "list", "jobs")) - lists
    if gone:
        # 410: the resourceVersion is too old to resume from; kopf lists again, then watches from there.
        assert relisted >= 1
    else:
        # Ended: resumed from the last resourceVersion seen, without listing again.
        assert relisted == 0
        assert rewatched[0].params.get("resourceVersion"), "the watch was not resumed from a resourceVersion"


async def test_a_watch_that_ends_in_an_error_stops_the_operator_and_its_restart_creates_nothing_twice(
    cluster: Cluster,
):
    """kopf resumes a watch after 410 Gone, but any other ERROR event stops the operator as a whole (never
    a replica blind to one kind): the kubelet restarts it, it lists everything afresh and carries on."""
    with pytest.raises(Exception, match=r"Error in the watch-stream.*'code': 500"):  # kopf's WatchingError
        async with cluster.operator():
            await cluster.create_job("blind", spec())
            await cluster.wait_child("batch/v1/jobs", "blind-check")
            # (The same error on the watch of DistillationJobs' definition stops it too.)
            cluster.server.end_watches(500, plural="jobs")
            await wait_for_async(_stopped, "kopf to stop the operator", 20)
    await cluster.inputs_ready("blind")  # meanwhile the check passes, with no operator running
    async with cluster.operator():
        await cluster.wait_child("apps/v1/deployments", "blind-teacher", timeout=30)
        await cluster.wait_phase("blind", "TeacherStarting")
    await _one(cluster, "batch/v1/jobs", "blind-check")
    await _one(cluster, "apps/v1/deployments", "blind-teacher")
    assert len(_requests(cluster, "create", "jobs")) == 1


async def _stopped() -> bool:
    return handlers.runtime is not None and not handlers.runtime.ready


async def test_faults_for_a_while_post_one_event_per_class_per_minute_naming_it(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    """Twelve 503s and then twelve 429s to the teacher's create: several reconciles, each retrying its
    requests. The minute is shrunk to `interval` s so the test sees several: every class gets at most one
    Event per interval, each names its class, status.faults counts every fault, and then stays still."""
    interval = 2.0
    monkeypatch.setattr(faults, "EVENT_INTERVAL_SECONDS", interval)
    monkeypatch.setattr(faults, "WINDOW_SECONDS", interval)
    monkeypatch.setattr(apiclient, "RETRY_BASE_SECONDS", 0.2)
    monkeypatch.setattr(reconcile, "RETRY_BASE_SECONDS", 0.5)
    refused = {
        "server_error": cluster.refuse("POST", "deployments", 503, "ServiceUnavailable", "etcd", times=12),
        "throttled": cluster.refuse("POST", "deployments", 429, "TooManyRequests", "slow down", times=12),
    }
    named = {"server_error": "API server error (5xx)", "throttled": "API server throttled (429)"}
    async with cluster.operator():
        await cluster.create_job("chaos", spec())
        await cluster.inputs_ready("chaos")
        await cluster.wait_child("apps/v1/deployments", "chaos-teacher", timeout=60)

        async def all_reported() -> dict | None:
            found = (await cluster.job_status("chaos")).get("faults") or {}
            counts = {name: (found.get(name) or {}).get("count") for name in refused}
            return found if counts == {"server_error": 12, "throttled": 12} else None

        # Every fault served is one retried request or one failed reconcile: all are counted, the last
        # ones by an Event that waited for its class's interval to pass.
        recorded = await wait_for_async(all_reported, "status.faults to count all 24 faults", 30)
        events = [e for e in await cluster.list("v1/events") if e.get("reason") == faults.RETRYING]
        # Nothing new: a reconcile (a child's change) leaves status.faults and the Events as they are.
        done = _count_ok()
        await cluster.teacher_ready("chaos-teacher")
        await wait_for_async(lambda: _count_ok() > done, "a reconcile after the faults", 10)
        assert ((await cluster.job_status("chaos")).get("faults") or {}) == recorded
    for name, fault in refused.items():
        assert not fault["times"], f"{name}: not every fault was served"
        mine = sorted(
            (e for e in events if e["message"].startswith(named[name] + ": retrying; ")),
            key=lambda e: e["firstTimestamp"],
        )
        assert mine, f"no Event names {name}: {[e['message'] for e in events]}"
        assert all(e["type"] == "Warning" and e["involvedObject"]["name"] == "chaos" for e in mine)
        span = fault["served"][-1] - fault["served"][0]
        assert len(mine) <= span // interval + 2, f"{len(mine)} {name} Events in {span:.1f} s: {mine}"
        posted = [datetime.fromisoformat(e["firstTimestamp"].replace("Z", "+00:00")) for e in mine]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(posted)]
        # (Event times are whole seconds: one interval apart reads as at least interval - 1.)
        assert all(gap >= interval - 1 for gap in gaps), f"{name} Events {gaps} s apart"
        assert recorded[name]["message"] == mine[-1]["message"]
    assert len(events) == sum(1 for e in events if any(e["message"].startswith(n) for n in named.values()))
    after = [e for e in await cluster.list("v1/events") if e.get("reason") == faults.RETRYING]
    assert len(after) == len(events), "an Event was posted with nothing new"


def _count_ok() -> float:
    return REGISTRY.get_sample_value("distillery_reconcile_total", {"result": "ok"}) or 0.0


async def test_a_stage_pod_that_failed_and_was_replaced_is_one_restarted_event(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("flaky", spec())
        await cluster.wait_child("batch/v1/jobs", "flaky-check")
        # The Job controller replaced a failed pod (within backoffLimit): the Job runs on.
        await cluster.patch("batch/v1/jobs", "flaky-check", {"status": {"failed": 1, "active": 1}}, "status")

        async def restarted() -> list:
            events = await cluster.list("v1/events")
            return [e for e in events if e.get("reason") == faults.RESTARTED]

        events = await wait_for_async(restarted, "a Restarted Event", 20)
        status = await cluster.job_status("flaky")
        await cluster.inputs_ready("flaky")  # the check passes on its second pod
        await cluster.wait_phase("flaky", "TeacherStarting")
        after = await restarted()
    assert [(e["type"], e["message"]) for e in events] == [
        ("Warning", "check: a pod failed or restarted and was retried; 1 restart so far")
    ]
    assert status["faults"]["check_restarted"]["count"] == 1
    assert status["phase"] == "Pending", "a replaced pod does not fail the job"
    assert len(after) == 1, "the same restart was reported again"
