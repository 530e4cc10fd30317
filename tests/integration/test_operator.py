"""The operator on the in-memory API server: full runs, failures, suspend, restart, deletion."""

from __future__ import annotations

import pytest

from distillery.contract.summaries import (
    Failure,
    FailureReason,
    GenerateSummary,
    TrainSummary,
)
from distillery.controller import handlers, metrics
from tests.harness.kueue import QUEUE_LABEL, gate_pod, gated, held_job, ungate_patch
from tests.support.kmock_cluster import Cluster, spec
from tests.support.scenarios import (
    GEN,
    a_finished_job_is_deleted_after_its_ttl,
    a_job_walks_through_every_phase_to_succeeded,
    absent,
    an_operator_restricted_to_one_namespace,
    deletion_releases_the_job_and_children_are_owned,
    generate,
    pending_until_the_named_claim_exists,
    suspend_and_resume,
)
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_a_job_walks_through_every_phase_to_succeeded(cluster: Cluster):
    await a_job_walks_through_every_phase_to_succeeded(cluster)


async def _warned(cluster: Cluster) -> bool:
    return any(
        e.get("type") == "Warning" and e["reason"] == "Failed" for e in await cluster.list("v1/events")
    )


async def test_a_failed_shard_fails_the_job_with_the_reason(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("shard", spec())
        await cluster.inputs_ready("shard")
        await cluster.wait_phase("shard", "TeacherStarting")
        await cluster.teacher_ready("shard-teacher")
        gen = await cluster.wait_child("batch/v1/jobs", "shard-generate")
        await cluster.finish_pod(gen, "generate", GEN, index=0)
        failure = Failure.of(FailureReason.too_few_accepted, "teacher answered 500 to 80% of requests")
        await cluster.finish_pod(
            gen, "generate", GenerateSummary(shard=1, shards=2, failure=failure), 1, index=1
        )
        # The generation Job has backoffLimitPerIndex and maxFailedIndexes: 0, so one failed index is
        # more than the maximum: the Job controller writes MaxFailedIndexesExceeded (kubernetes
        # pkg/controller/job/job_controller.go, syncJob: `failedIndexes.total() > *MaxFailedIndexes`;
        # FailedIndexes only when every index finished and no maxFailedIndexes was passed).
        await cluster.job_failed(
            "shard-generate",
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes",
            failedIndexes="1",
            succeeded=1,
        )
        status = await cluster.wait_phase("shard", "Failed")
        await wait_for_async(
            lambda: absent(cluster, "apps/v1/deployments", "shard-teacher"), "the teacher to be removed", 20
        )
    data = next(c for c in status["conditions"] if c["type"] == "DataGenerated")
    # The stage's own reason, not the Job's MaxFailedIndexesExceeded.
    assert (data["status"], data["reason"]) == ("False", "TooFewAccepted")
    assert "failed shards: 1" in status["message"] and "teacher answered 500" in status["message"]
    assert await cluster.get("batch/v1/jobs", "shard-train") is None


async def test_a_failed_training_job_fails_the_job(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job(
            "oom", spec(teacher={"endpoint": {"url": "http://llm:8000/v1", "model": "m"}})
        )
        await cluster.inputs_ready("oom")
        gen = await cluster.wait_child("batch/v1/jobs", "oom-generate")
        assert await cluster.get("apps/v1/deployments", "oom-teacher") is None, (
            "an endpoint teacher is not served"
        )
        await cluster.finish_pod(gen, "generate", GEN)
        await cluster.job_done("oom-generate", succeeded=2)
        train = await cluster.wait_child("batch/v1/jobs", "oom-train")
        await cluster.finish_pod(
            train, "train", "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory", 1
        )
        await cluster.job_failed(
            "oom-train", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )
        status = await cluster.wait_phase("oom", "Failed")
        await wait_for_async(lambda: _warned(cluster), "a Warning event", 20)
    trained = next(c for c in status["conditions"] if c["type"] == "StudentTrained")
    assert (trained["status"], trained["reason"]) == ("False", "BackoffLimitExceeded")
    assert "CUDA out of memory" in status["message"]


async def test_why_a_pod_has_not_started_is_in_the_status_while_its_stage_waits(cluster: Cluster):
    """The teacher's image cannot be pulled, a training pod finds no node with its GPUs: the status
    message says so in the kubelet's and the scheduler's words, and stops saying so once they start."""
    no_gpu = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ]
    }
    pull = {
        "containerStatuses": [
            {
                "name": "vllm",
                "ready": False,
                "restartCount": 0,
                "image": "vllm/vllm-openai:v9",
                "imageID": "",
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "vllm/vllm-openai:v9"',
                    }
                },
            }
        ]
    }
    async with cluster.operator():
        await cluster.create_job("slow", spec(training={"gpus": 2}))
        await cluster.inputs_ready("slow")
        teacher = await cluster.wait_child("apps/v1/deployments", "slow-teacher")
        await cluster.waiting_pod(teacher, "slow-teacher-abc", pull)
        status = await wait_for_async(
            lambda: _message_has(
                cluster, "slow", 'ImagePullBackOff: Back-off pulling image "vllm/vllm-openai:v9"'
            ),
            "the pull back-off in the status",
            20,
        )
        assert status["phase"] == "TeacherStarting"
        await cluster.delete("v1/pods", "slow-teacher-abc")
        await generate(cluster, "slow")
        train = await cluster.wait_child("batch/v1/jobs", "slow-train")
        await cluster.waiting_pod(train, "slow-train-xyz", no_gpu)
        expected = (
            "(a pod is waiting: Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
        )
        status = await wait_for_async(
            lambda: _message_has(cluster, "slow", expected), "the scheduler's reason", 20
        )
        assert status["phase"] == "Training" and status["message"] == "training the student " + expected
        await cluster.patch(
            "v1/pods",
            "slow-train-xyz",
            {"status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]}},
            "status",
        )
        status = await wait_for_async(lambda: _message_has(cluster, "slow", ""), "the message without it", 20)
        assert status["message"] == "training the student", status["message"]


async def _condition_is(cluster: Cluster, name: str, kind: str, reason: str) -> dict | None:
    status = await cluster.job_status(name)
    found = [c for c in status.get("conditions") or [] if c["type"] == kind and c["reason"] == reason]
    return status if found else None


def _cond(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


async def test_with_a_queue_kueue_admits_every_gpu_pod_and_the_status_says_what_waits(cluster: Cluster):
    """The test plays Kueue's documented contract (tests/harness/kueue.py): labelled stage Jobs stay
    suspended until Kueue admits them; the teacher Deployment's pods carry Kueue's admission scheduling
    gate until then. The job says Queued, naming what waits and the queue, and the operator never admits
    anything itself."""
    async with cluster.operator():
        await cluster.create_job("q", spec(queueName="gpu-queue"))
        check = await cluster.wait_child("batch/v1/jobs", "q-check")
        assert held_job(check) and check["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
        status = await wait_for_async(
            lambda: _condition_is(cluster, "q", "InputsReady", "Queued"), "queued check", 20
        )
        assert status["phase"] == "Pending"
        assert status["message"] == "waiting for Kueue to admit the check Job (queue gpu-queue)"
        assert _cond(status, "InputsReady")["message"] == status["message"]
        assert status["progress"]["summary"] == "check queued"
        assert (await cluster.get("batch/v1/jobs", "q-check"))["spec"]["suspend"] is True  # not resumed by us

        # Kueue admits the check Job; it runs and finds the inputs.
        await cluster.patch("batch/v1/jobs", "q-check", {"spec": {"suspend": False}})
        await wait_for_async(
            lambda: _condition_is(cluster, "q", "InputsReady", "Checking"), "the check running", 20
        )
        await cluster.inputs_ready("q")

        # The teacher Deployment names the queue (Kueue's Deployment integration); its pod is gated.
        teacher = await cluster.wait_child("apps/v1/deployments", "q-teacher")
        assert teacher["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
        template = teacher["spec"]["template"]
        assert template["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
        pod = gate_pod(
            {
                "metadata": {"name": "q-teacher-abc", "labels": dict(template["metadata"]["labels"])},
                "spec": template["spec"],
            }
        )
        assert gated(pod)
        await cluster.create(
            "v1/pods",
            {
                **pod,
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "SchedulingGated",
                            "message": "Scheduling is blocked due to non-empty scheduling gates",
                        }
                    ],
                },
            },
        )
        status = await wait_for_async(
            lambda: _condition_is(cluster, "q", "TeacherReady", "Queued"), "queued teacher", 20
        )
        assert status["phase"] == "TeacherStarting"
        assert status["message"] == "waiting for Kueue to admit the teacher (queue gpu-queue)"
        assert await cluster.get("batch/v1/jobs", "q-generate") is None

        # Kueue admits the teacher's pod (removes its gate): it loads, then serves.
        await cluster.patch("v1/pods", "q-teacher-abc", ungate_patch(pod))
        status = await wait_for_async(
            lambda: _condition_is(cluster, "q", "TeacherReady", "Starting"), "loading", 20
        )
        assert status["message"].startswith("waiting for the teacher to load models/teacher")
        await cluster.teacher_ready("q-teacher")

        # The generate Job waits for Kueue in turn; once admitted, it runs.
        gen = await cluster.wait_child("batch/v1/jobs", "q-generate")
        assert held_job(gen)
        status = await wait_for_async(
            lambda: _condition_is(cluster, "q", "DataGenerated", "Queued"), "queued gen", 20
        )
        assert status["phase"] == "Generating"
        assert status["message"] == "waiting for Kueue to admit the generate Job (queue gpu-queue)"
        assert _cond(status, "TeacherReady")["reason"] == "Ready"
        await cluster.patch("batch/v1/jobs", "q-generate", {"spec": {"suspend": False}})
        status = await wait_for_async(
            lambda: _condition_is(cluster, "q", "DataGenerated", "Generating"), "gen", 20
        )
        assert status["message"] == "generating: 0/2 shards done"
    # Queued is progress, not trouble: no Warning Event says it.
    assert not [e for e in await cluster.list("v1/events") if e.get("type") == "Warning"]


async def _message_has(cluster: Cluster, name: str, text: str) -> dict | None:
    status = await cluster.job_status(name)
    message = status.get("message") or ""
    return status if (text in message if text else "waiting" not in message) else None


async def test_suspend_and_resume(cluster: Cluster):
    await suspend_and_resume(cluster)


async def test_an_operator_restart_creates_no_duplicates_and_keeps_progress(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("again", spec())
        await cluster.inputs_ready("again")
        await generate(cluster, "again")
        await cluster.wait_child("batch/v1/jobs", "again-train")
        before = await cluster.wait_phase("again", "Training")
    async with cluster.operator():
        train = await cluster.wait_child("batch/v1/jobs", "again-train")
        await cluster.finish_pod(train, "train", TrainSummary(train_loss=0.5))
        await cluster.job_done("again-train")
        after = await cluster.wait_phase("again", "Evaluating")
    creates = [
        r
        for r in cluster.operator_requests()
        if r.method.value.upper() == "POST"
        and r.resource is not None
        and r.resource.plural not in ("events", "pods", "distillationjobs")
    ]
    names = [(r.resource.plural, r.data["metadata"]["name"]) for r in creates]
    assert len(names) == len(set(names)), f"a child was created twice: {names}"
    assert ("jobs", "again-evaluate") in names
    assert after["progress"]["records"] == before["progress"]["records"] == 10
    assert after["startTime"] == before["startTime"]
    data = next(c for c in after["conditions"] if c["type"] == "DataGenerated")
    assert (
        data["lastTransitionTime"]
        == next(c for c in before["conditions"] if c["type"] == "DataGenerated")["lastTransitionTime"]
    )


async def test_deletion_releases_the_job_and_children_are_owned(cluster: Cluster):
    await deletion_releases_the_job_and_children_are_owned(cluster)


async def test_a_claim_with_reclaim_policy_delete_goes_with_the_job(cluster: Cluster):
    async with cluster.operator():
        created = await cluster.create_job(
            "temp", spec(storage={"pvc": {"size": "1Gi", "reclaimPolicy": "Delete"}})
        )
        claim = await cluster.wait_child("v1/persistentvolumeclaims", "temp-data")
    (owner,) = claim["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]


async def test_an_invalid_spec_fails_once_naming_the_field(cluster: Cluster):
    bad = spec(training={"method": "kd"}, storage={"path": "local/dir"})
    async with cluster.operator():
        await cluster.create_job("bad", bad)
        status = await cluster.wait_phase("bad", "Failed")
        # Reconcile it several more times (as resyncs would): none may write anything.
        start = _reconciles()
        for _ in range(4):
            count = _reconciles()
            handlers.runtime.queue.request_threadsafe(("ml", "bad"))
            await wait_for_async(lambda n=count + 1: _reconciles() >= n, "one more reconcile", 20)
        assert _reconciles() >= start + 4
    assert "spec.generation.topLogprobs" in status["message"]
    writes = [
        r
        for r in cluster.operator_requests()
        if r.method.value.upper() in ("POST", "PATCH")
        and r.resource is not None
        and r.resource.plural not in ("distillationjobs", "events")
    ]
    assert writes == [], "an invalid job must not create children"
    status_patches = [r for r in cluster.operator_requests() if r.subresource == "status" and r.name == "bad"]
    assert len(status_patches) == 1, "Failed is written once, not on every tick"


def _reconciles() -> float:
    return metrics.RECONCILES.labels("ok")._value.get()


async def test_a_finished_job_is_deleted_after_its_ttl(cluster: Cluster):
    await a_finished_job_is_deleted_after_its_ttl(cluster)


async def test_an_operator_restricted_to_one_namespace(cluster: Cluster):
    await an_operator_restricted_to_one_namespace(cluster)


async def test_pending_until_the_named_claim_exists(cluster: Cluster):
    await pending_until_the_named_claim_exists(cluster)


async def test_on_policy_keeps_the_teacher_through_training_and_removes_it_after(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("gkd", spec(training={"gpus": 0, "method": "onPolicy"}))
        await cluster.inputs_ready("gkd")
        await generate(cluster, "gkd")
        train = await cluster.wait_child("batch/v1/jobs", "gkd-train")
        status = await cluster.wait_phase("gkd", "Training")
        assert await cluster.get("apps/v1/deployments", "gkd-teacher") is not None, "the teacher is kept"
        teacher = next(c for c in status["conditions"] if c["type"] == "TeacherReady")
        assert (teacher["status"], teacher["reason"]) == ("True", "Ready")
        args = train["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--teacher-url") + 1] == "http://gkd-teacher:8000/v1"
        policy = await cluster.get("networking.k8s.io/v1/networkpolicies", "gkd-teacher-ingress")
        admitted = policy["spec"]["ingress"][0]["from"]
        assert {rule["podSelector"]["matchLabels"]["distillery.dev/stage"] for rule in admitted} == {
            "generate",
            "train",
        }

        await cluster.finish_pod(train, "train", TrainSummary(train_loss=0.3, on_policy_loss=0.3, step=7))
        await cluster.job_done("gkd-train")
        status = await cluster.wait_phase("gkd", "Evaluating")
        await wait_for_async(
            lambda: absent(cluster, "apps/v1/deployments", "gkd-teacher"), "the teacher to be removed", 20
        )
    teacher = next(c for c in status["conditions"] if c["type"] == "TeacherReady")
    assert (teacher["status"], teacher["reason"]) == ("False", "ScaledDown")
    assert "training is done" in teacher["message"]
    assert status["progress"]["onPolicyLoss"] == 0.3


async def test_the_settings_the_operator_is_given_reach_the_children_it_creates(
    cluster: Cluster, monkeypatch
):
    """The worker image comes from the settings `distillery operator` built, never from the environment
    the operator process happens to have (here something else)."""
    from distillery.controller.settings import OperatorSettings

    monkeypatch.setenv("DISTILLERY_WORKER_IMAGE", "env.example/not-this-one:1")
    handlers.use_settings(OperatorSettings(worker_image="settings.example/worker:7", progress_seconds=1))
    async with cluster.operator():
        await cluster.create_job("configured", spec())
        check = await cluster.wait_child("batch/v1/jobs", "configured-check")
    (container,) = check["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "settings.example/worker:7"
