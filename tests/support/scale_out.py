"""Scenarios of the scale-out children on the emulator (tests/integration/test_scale_out.py plays them; the
RBAC test needs their requests): training as a JobSet where the cluster serves the JobSet CRD, and the
teacher of several replicas behind a Kueue queue as one StatefulSet. The test plays the JobSet, StatefulSet
and Kueue controllers."""

from __future__ import annotations

from distillery.contract.summaries import TrainSummary
from tests.support import jobset_crd
from tests.support.kmock_cluster import DJ, JOBSET, JOBSET_RESOURCE, VERBS, Cluster, spec
from tests.support.scenarios import GEN, absent
from tests.support.waiting import wait_for_async

TEACHER_CHILDREN = (
    ("apps/v1/statefulsets", "teacher"),
    ("v1/services", "teacher"),
    ("networking.k8s.io/v1/networkpolicies", "teacher-ingress"),
)


def serve_jobsets(cluster: Cluster) -> None:
    """The cluster serves the JobSet CRD (before the operator starts: it looks once, when it first trains)."""
    cluster.server.resources[JOBSET] = {**JOBSET_RESOURCE, "verbs": VERBS}


async def through_generation(cluster: Cluster, name: str, training: dict) -> None:
    """A job with this `training` created, its inputs and teacher ready, and its 2 generation shards done."""
    await cluster.create_job(name, spec(training=training))
    await cluster.inputs_ready(name)
    await cluster.wait_phase(name, "TeacherStarting")
    await cluster.teacher_ready(f"{name}-teacher")
    gen = await cluster.wait_child("batch/v1/jobs", f"{name}-generate")
    for index in range(2):
        await cluster.finish_pod(gen, "generate", GEN, index=index)
    await cluster.job_done(f"{name}-generate", succeeded=2)


async def train_as_jobset(cluster: Cluster, name: str) -> dict:
    """Through generation to the training JobSet the operator makes (2 nodes, training.backoffLimit 3)."""
    await through_generation(cluster, name, {"gpus": 0, "nodes": 2, "backoffLimit": 3})
    jobset = await cluster.wait_child(JOBSET, f"{name}-train")
    await cluster.wait_phase(name, "Training")
    return jobset


async def jobset_status(cluster: Cluster, name: str, condition: dict, restarts: int = 0, **jobs: int) -> None:
    """What the JobSet controller writes: Jobs counted per replicated Job, a terminal condition, restarts."""
    counts = {"ready": 0, "active": 0, "suspended": 0, "succeeded": 0, "failed": 0, **jobs}
    await cluster.patch(
        JOBSET,
        name,
        {
            "status": {
                "replicatedJobsStatus": [{"name": "node", **counts}],
                "conditions": [{"status": "True", "lastTransitionTime": "2026-11-28T10:10:00Z", **condition}],
                "restarts": restarts,
            }
        },
        "status",
    )


async def _suspended(cluster: Cluster, name: str, value: bool) -> dict | None:
    body = await cluster.get(JOBSET, name)
    return body if body and body["spec"].get("suspend") is value else None


async def training_runs_as_a_jobset_where_the_crd_is_served(cluster: Cluster) -> dict:
    """Made, suspended and resumed with the job (spec.suspend), completed: the job evaluates next."""
    serve_jobsets(cluster)
    async with cluster.operator():
        jobset = await train_as_jobset(cluster, "js")
        assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 3}
        # Neither the Indexed Job nor its Service: the JobSet makes its own headless Service.
        assert await absent(cluster, "batch/v1/jobs", "js-train")
        assert await absent(cluster, "v1/services", "js-train")
        assert jobset["metadata"]["ownerReferences"][0]["kind"] == "DistillationJob"
        await cluster.patch(DJ, "js", {"spec": {"suspend": True}, "metadata": {"generation": 2}})
        await wait_for_async(lambda: _suspended(cluster, "js-train", True), "the JobSet suspended", 20)
        await cluster.patch(DJ, "js", {"spec": {"suspend": False}, "metadata": {"generation": 3}})
        await wait_for_async(lambda: _suspended(cluster, "js-train", False), "the JobSet resumed", 20)
        # Its pods (from the Jobs the JobSet controller makes) end with their summaries; then it completes.
        (job,) = jobset_crd.child_jobs(jobset)
        for index in range(2):
            await cluster.finish_pod(job, "train", TrainSummary(train_loss=0.25, step=9), index=index)
        await jobset_status(
            cluster, "js-train", {"type": "Completed", "reason": "AllJobsCompleted"}, succeeded=1
        )
        return await cluster.wait_phase("js", "Evaluating")


async def a_failed_jobset_fails_the_job_with_its_message(cluster: Cluster) -> tuple[dict, list[dict]]:
    serve_jobsets(cluster)
    async with cluster.operator():
        await train_as_jobset(cluster, "jf")
        message = "jobset failed due to reaching max number of restarts"
        condition = {"type": "Failed", "reason": "ReachedMaxRestarts", "message": message}
        await jobset_status(cluster, "jf-train", condition, restarts=3, failed=1)
        status = await cluster.wait_phase("jf", "Failed")

        async def warned() -> list[dict]:
            return [e for e in await cluster.list("v1/events") if e.get("type") == "Warning"]

        return status, await wait_for_async(warned, "a Warning Event", 20)


async def a_spec_made_invalid_mid_training_deletes_the_jobset(cluster: Cluster) -> dict:
    serve_jobsets(cluster)
    async with cluster.operator():
        await train_as_jobset(cluster, "jd")
        # kd without topLogprobs: what the CRD's CEL rule refuses; an API server without it lets it through.
        await cluster.patch(DJ, "jd", {"spec": {"training": {"method": "kd"}}, "metadata": {"generation": 2}})
        status = await cluster.wait_phase("jd", "Failed")
        await wait_for_async(lambda: absent(cluster, JOBSET, "jd-train"), "the running JobSet deleted", 20)
        return status


async def a_queued_teacher_of_several_replicas_is_one_statefulset(cluster: Cluster) -> dict:
    """Made as a StatefulSet, read as the teacher when Kueue admits the group, released after generation."""
    async with cluster.operator():
        teacher = {"model": "models/teacher", "gpus": 0, "replicas": 3}
        await cluster.create_job("g", spec(queueName="gpu-queue", teacher=teacher))
        await cluster.inputs_ready("g")
        made = await cluster.wait_child("apps/v1/statefulsets", "g-teacher")
        assert await absent(cluster, "apps/v1/deployments", "g-teacher")
        assert made["spec"]["replicas"] == 3
        assert made["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        # Kueue admits the group; the StatefulSet controller reports its replicas ready.
        ready = {"status": {"readyReplicas": 3, "replicas": 3}}
        await cluster.patch("apps/v1/statefulsets", "g-teacher", ready, "status")
        gen = await cluster.wait_child("batch/v1/jobs", "g-generate")
        status = await cluster.wait_phase("g", "Generating")
        await cluster.patch("batch/v1/jobs", "g-generate", {"spec": {"suspend": False}})
        for index in range(2):
            await cluster.finish_pod(gen, "generate", GEN, index=index)
        await cluster.job_done("g-generate", succeeded=2)
        # Released right after generation: the StatefulSet with its Service and NetworkPolicy.
        for resource, suffix in TEACHER_CHILDREN:
            await wait_for_async(
                lambda r=resource, s=suffix: absent(cluster, r, f"g-{s}"),
                f"{resource} g-{suffix} released",
                20,
            )
        return status
