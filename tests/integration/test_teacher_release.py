"""The served teacher, all of it (its Deployment of N replicas, or the StatefulSet Kueue admits as one gang
behind a queue, its Service, its NetworkPolicy), is released
right after generation (after training for onPolicy) and on every way a job ends; status.teacher counts its
ready replicas meanwhile."""

from __future__ import annotations

import pytest

from tests.support.kmock_cluster import Cluster, spec
from tests.support.scenarios import EVAL_OK, absent, generate
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TWO = {"model": "models/teacher", "gpus": 0, "replicas": 2, "startupTimeoutSeconds": 600}


DEPLOYMENT, STATEFULSET = "apps/v1/deployments", "apps/v1/statefulsets"


def teacher_children(name: str, workload: str = DEPLOYMENT) -> list[tuple[str, str]]:
    return [
        (workload, f"{name}-teacher"),
        ("v1/services", f"{name}-teacher"),
        ("networking.k8s.io/v1/networkpolicies", f"{name}-teacher-ingress"),
    ]


async def released(cluster: Cluster, name: str, workload: str = DEPLOYMENT) -> None:
    for resource, child in teacher_children(name, workload):
        await wait_for_async(
            lambda r=resource, c=child: absent(cluster, r, c), f"{resource} {child} to go", 20
        )


async def serving(cluster: Cluster, name: str, job_spec: dict, workload: str = DEPLOYMENT) -> None:
    """The job's teacher (two replicas) ready, every teacher child there, its shards running."""
    await cluster.create_job(name, job_spec)
    await cluster.inputs_ready(name)
    await cluster.wait_phase(name, "TeacherStarting")
    for resource, child in teacher_children(name, workload):
        await cluster.wait_child(resource, child)
    deployment = await cluster.get(workload, f"{name}-teacher")
    assert deployment["spec"]["replicas"] == 2
    await cluster.patch(
        workload, f"{name}-teacher", {"status": {"replicas": 2, "readyReplicas": 2}}, "status"
    )
    await cluster.wait_child("batch/v1/jobs", f"{name}-generate")
    await cluster.wait_phase(name, "Generating")


@pytest.mark.parametrize(
    ("queue", "workload"),
    [({}, DEPLOYMENT), ({"queueName": "gpu-queue"}, STATEFULSET)],
    ids=["plain", "queued"],
)
async def test_a_failed_shard_releases_the_whole_teacher_at_once(
    cluster: Cluster, queue: dict, workload: str
):
    async with cluster.operator():
        await serving(cluster, "shardfail", spec(teacher=TWO, **queue), workload)
        status = await wait_for_async(
            lambda: _teacher_summary(cluster, "shardfail", "2/2"), "status.teacher 2/2", 20
        )
        assert status["teacher"] == {"replicas": 2, "readyReplicas": 2, "summary": "2/2"}
        await cluster.job_failed("shardfail-generate", "BackoffLimitExceeded", "shard 1 failed")
        await cluster.wait_phase("shardfail", "Failed")
        await released(cluster, "shardfail", workload)
        await wait_for_async(lambda: _teacher_summary(cluster, "shardfail", "0/0"), "status.teacher 0/0", 20)


async def test_generation_done_releases_the_whole_teacher_and_a_failed_training_has_nothing_left(
    cluster: Cluster,
):
    async with cluster.operator():
        await cluster.create_job("gendone", spec(teacher=TWO))
        await cluster.inputs_ready("gendone")
        await generate(cluster, "gendone")
        await cluster.wait_phase("gendone", "Training")
        await released(cluster, "gendone")
        await cluster.job_failed("gendone-train", "BackoffLimitExceeded", "out of memory")
        await cluster.wait_phase("gendone", "Failed")
        for resource, child in teacher_children("gendone"):
            assert await cluster.get(resource, child) is None


async def test_on_policy_keeps_the_whole_teacher_through_training_and_releases_it_after(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("onpol", spec(teacher=TWO, training={"gpus": 0, "method": "onPolicy"}))
        await cluster.inputs_ready("onpol")
        await generate(cluster, "onpol")
        train = await cluster.wait_child("batch/v1/jobs", "onpol-train")
        await cluster.wait_phase("onpol", "Training")
        for resource, child in teacher_children("onpol"):
            assert await cluster.get(resource, child) is not None, f"{child} is kept while the student trains"
        await cluster.job_done("onpol-train")
        await released(cluster, "onpol")
        ev = await cluster.wait_child("batch/v1/jobs", "onpol-evaluate")
        await cluster.finish_pod(ev, "evaluate", EVAL_OK)
        await cluster.job_done("onpol-evaluate")
        status = await cluster.wait_phase("onpol", "Succeeded")
        for resource, child in teacher_children("onpol"):
            assert await cluster.get(resource, child) is None
    assert status["teacher"]["summary"] == "0/0"
    assert train is not None


async def _teacher_summary(cluster: Cluster, name: str, summary: str) -> dict | None:
    status = await cluster.job_status(name)
    return status if (status.get("teacher") or {}).get("summary") == summary else None
