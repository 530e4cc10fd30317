"""Honest status on every failure: refused children, an unavailable API, a spec that changes or turns
invalid under a running job. Whatever ends a job frees its GPUs at once: the teacher and any running
stage Job are deleted in the same reconcile that writes Failed."""

from __future__ import annotations

import pytest

from distillery.controller.apiclient import REQUEST_RETRIES
from tests.support.kmock_cluster import DJ, Cluster, spec
from tests.support.scenarios import (
    a_spec_made_invalid_by_a_patch_stops_the_teacher_and_the_running_shards,
    all_stopped,
    generating,
)
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_a_spec_made_invalid_by_a_patch_stops_the_teacher_and_the_running_shards(cluster: Cluster):
    await a_spec_made_invalid_by_a_patch_stops_the_teacher_and_the_running_shards(cluster)


async def test_a_spec_changed_after_the_start_fails_naming_the_sections(cluster: Cluster):
    async with cluster.operator():
        await generating(cluster, "edited")
        status = await cluster.job_status("edited")
        assert status["specHashes"]["teacher"] and status["specHashes"]["generation"]
        await cluster.patch(
            DJ,
            "edited",
            {
                "spec": {"teacher": {"model": "models/bigger"}, "generation": {"shards": 4}},
                "metadata": {"generation": 2},
            },
        )
        status = await cluster.wait_phase("edited", "Failed")
        await all_stopped(cluster, "edited")
    assert "spec changed after the job started (spec.teacher, spec.generation)" in status["message"]
    assert "delete it and create it again" in status["message"]
    assert status["observedGeneration"] == 2


async def test_a_child_the_api_server_refuses_fails_the_job_with_its_message(cluster: Cluster):
    quota = 'deployments.apps "quota-teacher" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=1'
    cluster.refuse("POST", "deployments", 403, "Forbidden", quota)
    async with cluster.operator():
        await cluster.create_job("quota", spec())
        await cluster.inputs_ready("quota")
        status = await cluster.wait_phase("quota", "Failed")
        events = await wait_for_async(lambda: _warnings(cluster, "quota"), "a Warning Event", 20)
    teacher = next(c for c in status["conditions"] if c["type"] == "TeacherReady")
    assert (teacher["status"], teacher["reason"]) == ("False", "ChildRefused")
    assert "Deployment quota-teacher: 403 Forbidden: " + quota in teacher["message"]
    assert quota in status["message"]
    assert any(quota in e["message"] for e in events)
    assert await cluster.get("batch/v1/jobs", "quota-generate") is None


async def test_an_unavailable_api_is_retried_while_the_status_says_so(cluster: Cluster):
    # Longer than one request's own retries (REQUEST_RETRIES): the reconcile fails and backs off.
    times = REQUEST_RETRIES + 2
    cluster.refuse(
        "POST", "deployments", 503, "ServiceUnavailable", "etcdserver: request timed out", times=times
    )
    async with cluster.operator():
        await cluster.create_job("busy", spec())
        await cluster.inputs_ready("busy")
        retrying = await wait_for_async(
            lambda: _message_has(cluster, "busy", "retrying: Kubernetes API error 503"),
            "the retry in status",
            20,
        )
        assert retrying["phase"] == "Pending", "a job never sits without a phase"
        assert "etcdserver: request timed out" in retrying["message"]
        await cluster.wait_phase("busy", "TeacherStarting", timeout=30)  # after one backoff (1-2 s)
    assert await cluster.get("apps/v1/deployments", "busy-teacher") is not None


async def _warnings(cluster: Cluster, name: str) -> list[dict]:
    return [
        e
        for e in await cluster.list("v1/events")
        if e.get("type") == "Warning" and e["involvedObject"]["name"] == name
    ]


async def _message_has(cluster: Cluster, name: str, text: str) -> dict | None:
    status = await cluster.job_status(name)
    return status if text in (status.get("message") or "") else None
