"""The operator on the in-memory API server: full runs, failures, suspend, restart, deletion."""

from __future__ import annotations

import pytest

from distillery.contract.summaries import (
    EvaluateSummary,
    Failure,
    FailureReason,
    GenerateSummary,
    TrainSummary,
)
from distillery.controller import handlers, metrics
from tests.integration.conftest import DJ, Cluster, spec
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

# The stages' typed summaries, as their pods leave them in the termination message.
GEN = GenerateSummary(records=5, output_tokens=50, prompt_tokens=20, rejected={"length": 1})
EVAL_OK = EvaluateSummary.model_validate(
    {"evaluation": {"metric": "accuracy", "teacher": {"score": 0.8}, "baseline": {"score": 0.3},
                    "student": {"score": 0.6}, "retention": 0.75, "gatePassed": True, "gateReason": "0.75 >= 0.5"},
     "report": "/data/jobs/walk/reports/evaluation.json"})  # fmt: skip


async def _generate(cluster: Cluster, name: str, shards: int = 2) -> dict:
    """Teacher ready -> the generation Job appears; its shards finish."""
    await cluster.wait_phase(name, "TeacherStarting")
    await cluster.teacher_ready(f"{name}-teacher")
    gen = await cluster.wait_child("batch/v1/jobs", f"{name}-generate")
    for index in range(shards):
        await cluster.finish_pod(gen, "generate", GEN, index=index)
    await cluster.job_done(f"{name}-generate", succeeded=shards)
    return gen


async def test_a_job_walks_through_every_phase_to_succeeded(cluster: Cluster):
    durations_before = _observed_durations("generate")
    async with cluster.operator():
        await cluster.create_job("walk", spec())
        await cluster.inputs_ready("walk")
        await cluster.wait_phase("walk", "TeacherStarting")
        for resource, child in [("apps/v1/deployments", "walk-teacher"), ("v1/services", "walk-teacher"),
                                ("networking.k8s.io/v1/networkpolicies", "walk-teacher-ingress"),
                                ("v1/persistentvolumeclaims", "walk-data")]:  # fmt: skip
            await cluster.wait_child(resource, child)
        assert await cluster.get("batch/v1/jobs", "walk-generate") is None, (
            "no shards before the teacher is ready"
        )

        await _generate(cluster, "walk")
        status = await cluster.wait_phase("walk", "Training")
        assert status["progress"]["records"] == 10 and status["progress"]["shardsDone"] == 2
        await wait_for_async(
            lambda: _absent(cluster, "apps/v1/deployments", "walk-teacher"), "the teacher to be removed", 20
        )

        train = await cluster.wait_child("batch/v1/jobs", "walk-train")
        await cluster.finish_pod(train, "train", TrainSummary(train_loss=0.42, step=7, epoch=1.0))
        await cluster.job_done("walk-train")
        await cluster.wait_phase("walk", "Evaluating")

        ev = await cluster.wait_child("batch/v1/jobs", "walk-evaluate")
        await cluster.finish_pod(ev, "evaluate", EVAL_OK)
        await cluster.job_done("walk-evaluate")
        status = await cluster.wait_phase("walk", "Succeeded")
        # Events are posted in the background; wait for the last transition's.
        await wait_for_async(lambda: _event_reasons(cluster, {
            "TeacherStarting", "Generating", "Training", "Evaluating", "Succeeded"}), "an event for each phase", 20)  # fmt: skip

    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "InputsReady": ("True", "Completed"),
        "TeacherReady": ("False", "ScaledDown"),
        "DataGenerated": ("True", "Completed"),
        "StudentTrained": ("True", "Completed"),
        "Evaluated": ("True", "Completed"),
        "QualityGatePassed": ("True", "GatePassed"),
    }
    assert status["evaluation"]["retention"] == 0.75 and status["evaluation"]["student"]["score"] == 0.6
    assert status["artifacts"]["report"] == "/data/jobs/walk/reports/evaluation.json"
    assert status["progress"]["trainLoss"] == 0.42
    assert status["observedGeneration"] == 1 and status["startTime"] and status["completionTime"]
    assert metrics.JOB_RETENTION.labels("ml", "walk")._value.get() == 0.75
    assert _observed_durations("generate") > durations_before
    assert metrics.JOB_PHASE.labels("ml", "walk", "Succeeded")._value.get() == 1


def _observed_durations(stage: str) -> float:
    (family,) = [m for m in metrics.STAGE_DURATION.collect()]
    return sum(
        s.value for s in family.samples if s.name.endswith("_count") and s.labels.get("stage") == stage
    )


async def _event_reasons(cluster: Cluster, wanted: set[str]) -> bool:
    return wanted <= {e.get("reason") for e in await cluster.list("v1/events")}


async def _warned(cluster: Cluster) -> bool:
    return any(
        e.get("type") == "Warning" and e["reason"] == "Failed" for e in await cluster.list("v1/events")
    )


async def _absent(cluster: Cluster, resource: str, name: str) -> bool:
    return await cluster.get(resource, name) is None


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
        await cluster.job_failed("shard-generate", "MaxFailedIndexesExceeded",
                                 "Job has exceeded the specified maximal number of failed indexes", failedIndexes="1",
                                 succeeded=1)  # fmt: skip
        status = await cluster.wait_phase("shard", "Failed")
        await wait_for_async(
            lambda: _absent(cluster, "apps/v1/deployments", "shard-teacher"), "the teacher to be removed", 20
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
        status = await wait_for_async(lambda: _message_has(
            cluster, "slow", 'ImagePullBackOff: Back-off pulling image "vllm/vllm-openai:v9"'), "the pull back-off in the status", 20)  # fmt: skip
        assert status["phase"] == "TeacherStarting"
        await cluster.delete("v1/pods", "slow-teacher-abc")
        await _generate(cluster, "slow")
        train = await cluster.wait_child("batch/v1/jobs", "slow-train")
        await cluster.waiting_pod(train, "slow-train-xyz", no_gpu)
        expected = (
            "(a pod is waiting: Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
        )
        status = await wait_for_async(
            lambda: _message_has(cluster, "slow", expected), "the scheduler's reason", 20
        )
        assert status["phase"] == "Training" and status["message"] == "training the student " + expected
        await cluster.patch("v1/pods", "slow-train-xyz", {"status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"}]}}, "status")  # fmt: skip
        status = await wait_for_async(lambda: _message_has(cluster, "slow", ""), "the message without it", 20)
        assert status["message"] == "training the student", status["message"]


async def _message_has(cluster: Cluster, name: str, text: str) -> dict | None:
    status = await cluster.job_status(name)
    message = status.get("message") or ""
    return status if (text in message if text else "waiting" not in message) else None


async def test_suspend_and_resume(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("pause", spec())
        await cluster.inputs_ready("pause")
        await cluster.wait_phase("pause", "TeacherStarting")
        await cluster.teacher_ready("pause-teacher")
        await cluster.wait_child("batch/v1/jobs", "pause-generate")
        await cluster.wait_phase("pause", "Generating")

        await cluster.patch(DJ, "pause", {"spec": {"suspend": True}, "metadata": {"generation": 2}})
        status = await cluster.wait_phase("pause", "Suspended")
        assert status["observedGeneration"] == 2
        await wait_for_async(
            lambda: _absent(cluster, "apps/v1/deployments", "pause-teacher"), "the teacher to be removed", 20
        )
        gen = await wait_for_async(
            lambda: _suspended(cluster, "pause-generate", True), "the shards to be suspended", 20
        )

        await cluster.patch(DJ, "pause", {"spec": {"suspend": False}, "metadata": {"generation": 3}})
        await cluster.wait_phase("pause", "TeacherStarting")
        await cluster.wait_child("apps/v1/deployments", "pause-teacher")
        assert (await cluster.get("batch/v1/jobs", "pause-generate"))["spec"]["suspend"] is True, (
            "shards wait for the teacher"
        )
        await cluster.teacher_ready("pause-teacher")
        await wait_for_async(lambda: _suspended(cluster, "pause-generate", False), "the shards to resume", 20)
        await cluster.wait_phase("pause", "Generating")
    patches = [
        r
        for r in cluster.operator_requests()
        if r.method.value.upper() == "PATCH" and r.resource.plural == "jobs"
    ]
    assert patches and all(r.headers["Content-Type"] == "application/merge-patch+json" for r in patches)
    assert gen["metadata"]["uid"] == (await cluster.get("batch/v1/jobs", "pause-generate"))["metadata"]["uid"]


async def test_an_operator_restart_creates_no_duplicates_and_keeps_progress(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("again", spec())
        await cluster.inputs_ready("again")
        await _generate(cluster, "again")
        await cluster.wait_child("batch/v1/jobs", "again-train")
        before = await cluster.wait_phase("again", "Training")
    async with cluster.operator():
        train = await cluster.wait_child("batch/v1/jobs", "again-train")
        await cluster.finish_pod(train, "train", TrainSummary(train_loss=0.5))
        await cluster.job_done("again-train")
        after = await cluster.wait_phase("again", "Evaluating")
    creates = [r for r in cluster.operator_requests() if r.method.value.upper() == "POST" and r.resource is not None
               and r.resource.plural not in ("events", "pods", "distillationjobs")]  # fmt: skip
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
    async with cluster.operator():
        created = await cluster.create_job("gone", spec())
        await cluster.inputs_ready("gone")
        await cluster.wait_child("apps/v1/deployments", "gone-teacher")
        body = await cluster.get(DJ, "gone")
        assert not body["metadata"].get("finalizers"), "deleting a job must not wait for the operator"
        await cluster.delete(DJ, "gone")
        await wait_for_async(lambda: _absent(cluster, DJ, "gone"), "the job to be gone", 20)
        children = [await cluster.get(r, n) for r, n in [("apps/v1/deployments", "gone-teacher"),
                                                         ("v1/services", "gone-teacher")]]  # fmt: skip
        claim = await cluster.get("v1/persistentvolumeclaims", "gone-data")
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == created["metadata"]["uid"] and owner["controller"] is True
    # reclaimPolicy Retain (the default): the claim, with the data, the student and the report, stays.
    assert "ownerReferences" not in claim["metadata"]
    series = [
        s for m in metrics.JOB_PHASE.collect() for s in m.samples if s.labels["distillery_job"] == "gone"
    ]
    assert series == [], "a deleted job's series are forgotten"


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
    writes = [r for r in cluster.operator_requests() if r.method.value.upper() in ("POST", "PATCH")
              and r.resource is not None and r.resource.plural not in ("distillationjobs", "events")]  # fmt: skip
    assert writes == [], "an invalid job must not create children"
    status_patches = [r for r in cluster.operator_requests() if r.subresource == "status" and r.name == "bad"]
    assert len(status_patches) == 1, "Failed is written once, not on every tick"


def _reconciles() -> float:
    return metrics.RECONCILES.labels("ok")._value.get()


async def _suspended(cluster: Cluster, name: str, value: bool) -> dict | None:
    job = await cluster.get("batch/v1/jobs", name)
    return job if job and job["spec"].get("suspend") is value else None


async def test_a_finished_job_is_deleted_after_its_ttl(cluster: Cluster):
    endpoint = {"endpoint": {"url": "http://llm:8000/v1", "model": "m"}}
    async with cluster.operator():
        await cluster.create_job("ttl", spec(teacher=endpoint, ttlSecondsAfterFinished=1))
        await cluster.inputs_ready("ttl")
        await cluster.wait_child("batch/v1/jobs", "ttl-generate")
        await cluster.job_failed(
            "ttl-generate", "DeadlineExceeded", "Job was active longer than specified deadline"
        )
        status = await cluster.wait_phase("ttl", "Failed")
        assert status["completionTime"]
        await wait_for_async(lambda: _absent(cluster, DJ, "ttl"), "the job to be deleted by its TTL", 20)


async def test_an_operator_restricted_to_one_namespace(cluster: Cluster):
    """`--namespace` mode: the job in its namespace runs as cluster-wide; a job in another is left alone."""
    other = "elsewhere"
    await cluster.create("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
                         namespace=None)  # fmt: skip
    async with cluster.operator(namespace="ml"):
        # Created first, so the operator has had every chance to act on it by the time "local" generates.
        await cluster.create(
            DJ,
            {"apiVersion": "distillery.dev/v1alpha1", "kind": "DistillationJob",
             "metadata": {"name": "foreign", "generation": 1}, "spec": spec()},
            namespace=other,
        )  # fmt: skip
        await cluster.create_job("local", spec())
        await cluster.inputs_ready("local")
        await cluster.wait_phase("local", "TeacherStarting")
        await cluster.teacher_ready("local-teacher")
        await cluster.wait_child("batch/v1/jobs", "local-generate")
        await cluster.wait_phase("local", "Generating")
        foreign = await cluster.get(DJ, "foreign", namespace=other)
    assert foreign is not None and not foreign.get("status"), foreign.get("status")
    for resource in ("batch/v1/jobs", "apps/v1/deployments", "v1/persistentvolumeclaims"):
        assert await cluster.list(resource, namespace=other) == [], resource


async def test_pending_until_the_named_claim_exists(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("claim", spec(storage={"pvc": {"claimName": "shared"}}))
        status = await cluster.wait_phase("claim", "Pending")
        assert "shared" in status["message"] and "storage.pvc.claimName" in status["message"]
        assert await cluster.get("apps/v1/deployments", "claim-teacher") is None
        await cluster.create("v1/persistentvolumeclaims", {"metadata": {"name": "shared"}, "spec": {}})
        await cluster.inputs_ready("claim")
        await cluster.wait_phase("claim", "TeacherStarting")
    assert await cluster.get("v1/persistentvolumeclaims", "claim-data") is None, (
        "an existing claim is not created"
    )


async def test_on_policy_keeps_the_teacher_through_training_and_removes_it_after(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("gkd", spec(training={"gpus": 0, "method": "onPolicy"}))
        await cluster.inputs_ready("gkd")
        await _generate(cluster, "gkd")
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
            lambda: _absent(cluster, "apps/v1/deployments", "gkd-teacher"), "the teacher to be removed", 20
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
