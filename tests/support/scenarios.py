"""The integration scenarios the RBAC test replays when it runs alone (tests/integration/test_rbac.py),
each also a test of its own (tests/integration/test_<module>.py: `test_<scenario>`), and the helpers
they share with their modules' other tests.

A scenario takes the tier's `cluster` (the in-process operator against kmock,
tests/support/kmock_cluster.py); the HA scenario (tests/support/ha_scenario.py) takes a directory.
The requests each one makes are recorded under its test's name, `recorded_as(scenario)`.
"""

from __future__ import annotations

from collections.abc import Callable

from distillery.contract.summaries import EvaluateSummary, GenerateSummary, TrainSummary
from distillery.controller import metrics
from tests.support.kmock_cluster import DJ, Cluster, spec
from tests.support.waiting import wait_for_async


def recorded_as(scenario: Callable) -> str:
    """The test that plays `scenario`, under whose name its requests are recorded."""
    return "test_" + scenario.__name__


# The stages' typed summaries, as their pods leave them in the termination message.
GEN = GenerateSummary(records=5, output_tokens=50, prompt_tokens=20, rejected={"length": 1})


EVAL_OK = EvaluateSummary.model_validate(
    {
        "evaluation": {
            "metric": "accuracy",
            "teacher": {"score": 0.8},
            "baseline": {"score": 0.3},
            "student": {"score": 0.6},
            "retention": 0.75,
            "gatePassed": True,
            "gateReason": "0.75 >= 0.5",
        },
        "report": "/data/jobs/walk/reports/evaluation.json",
    }
)


async def generate(cluster: Cluster, name: str, shards: int = 2) -> dict:
    """Teacher ready -> the generation Job appears; its shards finish."""
    await cluster.wait_phase(name, "TeacherStarting")
    await cluster.teacher_ready(f"{name}-teacher")
    gen = await cluster.wait_child("batch/v1/jobs", f"{name}-generate")
    for index in range(shards):
        await cluster.finish_pod(gen, "generate", GEN, index=index)
    await cluster.job_done(f"{name}-generate", succeeded=shards)
    return gen


def observed_durations(stage: str) -> float:
    (family,) = [m for m in metrics.STAGE_DURATION.collect()]
    return sum(
        s.value for s in family.samples if s.name.endswith("_count") and s.labels.get("stage") == stage
    )


async def event_reasons(cluster: Cluster, wanted: set[str]) -> bool:
    return wanted <= {e.get("reason") for e in await cluster.list("v1/events")}


async def absent(cluster: Cluster, resource: str, name: str) -> bool:
    return await cluster.get(resource, name) is None


async def suspended(cluster: Cluster, name: str, value: bool) -> dict | None:
    job = await cluster.get("batch/v1/jobs", name)
    return job if job and job["spec"].get("suspend") is value else None


async def a_job_walks_through_every_phase_to_succeeded(cluster: Cluster):
    durations_before = observed_durations("generate")
    async with cluster.operator():
        await cluster.create_job("walk", spec())
        await cluster.inputs_ready("walk")
        await cluster.wait_phase("walk", "TeacherStarting")
        for resource, child in [
            ("apps/v1/deployments", "walk-teacher"),
            ("v1/services", "walk-teacher"),
            ("networking.k8s.io/v1/networkpolicies", "walk-teacher-ingress"),
            ("v1/persistentvolumeclaims", "walk-data"),
        ]:
            await cluster.wait_child(resource, child)
        assert await cluster.get("batch/v1/jobs", "walk-generate") is None, (
            "no shards before the teacher is ready"
        )

        await generate(cluster, "walk")
        status = await cluster.wait_phase("walk", "Training")
        assert status["progress"]["records"] == 10 and status["progress"]["shardsDone"] == 2
        await wait_for_async(
            lambda: absent(cluster, "apps/v1/deployments", "walk-teacher"), "the teacher to be removed", 20
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
        await wait_for_async(
            lambda: event_reasons(
                cluster, {"TeacherStarting", "Generating", "Training", "Evaluating", "Succeeded"}
            ),
            "an event for each phase",
            20,
        )

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
    assert observed_durations("generate") > durations_before
    assert metrics.JOB_PHASE.labels("ml", "walk", "Succeeded")._value.get() == 1


async def suspend_and_resume(cluster: Cluster):
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
            lambda: absent(cluster, "apps/v1/deployments", "pause-teacher"), "the teacher to be removed", 20
        )
        gen = await wait_for_async(
            lambda: suspended(cluster, "pause-generate", True), "the shards to be suspended", 20
        )

        await cluster.patch(DJ, "pause", {"spec": {"suspend": False}, "metadata": {"generation": 3}})
        await cluster.wait_phase("pause", "TeacherStarting")
        await cluster.wait_child("apps/v1/deployments", "pause-teacher")
        assert (await cluster.get("batch/v1/jobs", "pause-generate"))["spec"]["suspend"] is True, (
            "shards wait for the teacher"
        )
        await cluster.teacher_ready("pause-teacher")
        await wait_for_async(lambda: suspended(cluster, "pause-generate", False), "the shards to resume", 20)
        await cluster.wait_phase("pause", "Generating")
    patches = [
        r
        for r in cluster.operator_requests()
        if r.method.value.upper() == "PATCH" and r.resource.plural == "jobs"
    ]
    assert patches and all(r.headers["Content-Type"] == "application/merge-patch+json" for r in patches)
    assert gen["metadata"]["uid"] == (await cluster.get("batch/v1/jobs", "pause-generate"))["metadata"]["uid"]


async def deletion_releases_the_job_and_children_are_owned(cluster: Cluster):
    async with cluster.operator():
        created = await cluster.create_job("gone", spec())
        await cluster.inputs_ready("gone")
        await cluster.wait_child("apps/v1/deployments", "gone-teacher")
        body = await cluster.get(DJ, "gone")
        assert not body["metadata"].get("finalizers"), "deleting a job must not wait for the operator"
        await cluster.delete(DJ, "gone")
        await wait_for_async(lambda: absent(cluster, DJ, "gone"), "the job to be gone", 20)
        children = [
            await cluster.get(r, n)
            for r, n in [("apps/v1/deployments", "gone-teacher"), ("v1/services", "gone-teacher")]
        ]
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


async def a_finished_job_is_deleted_after_its_ttl(cluster: Cluster):
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
        await wait_for_async(lambda: absent(cluster, DJ, "ttl"), "the job to be deleted by its TTL", 20)


async def an_operator_restricted_to_one_namespace(cluster: Cluster):
    """`--namespace` mode: the job in its namespace runs as cluster-wide; a job in another is left alone."""
    other = "elsewhere"
    await cluster.create(
        "v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
        namespace=None,
    )
    async with cluster.operator(namespace="ml"):
        # Created first, so the operator has had every chance to act on it by the time "local" generates.
        await cluster.create(
            DJ,
            {
                "apiVersion": "distillery.dev/v1alpha1",
                "kind": "DistillationJob",
                "metadata": {"name": "foreign", "generation": 1},
                "spec": spec(),
            },
            namespace=other,
        )
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


async def pending_until_the_named_claim_exists(cluster: Cluster):
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


async def generating(cluster: Cluster, name: str) -> None:
    """A job whose teacher is up and whose shards are running."""
    await cluster.create_job(name, spec())
    await cluster.inputs_ready(name)
    await cluster.wait_phase(name, "TeacherStarting")
    await cluster.teacher_ready(f"{name}-teacher")
    await cluster.wait_child("batch/v1/jobs", f"{name}-generate")
    await cluster.patch("batch/v1/jobs", f"{name}-generate", {"status": {"active": 2}}, "status")
    await cluster.wait_phase(name, "Generating")


async def all_stopped(cluster: Cluster, name: str) -> None:
    """The whole teacher (Deployment, Service, NetworkPolicy) and the running shards are gone."""
    for resource, child in (
        ("apps/v1/deployments", f"{name}-teacher"),
        ("v1/services", f"{name}-teacher"),
        ("networking.k8s.io/v1/networkpolicies", f"{name}-teacher-ingress"),
    ):
        await wait_for_async(
            lambda r=resource, c=child: absent(cluster, r, c),
            f"the teacher's {resource} {child} to be deleted",
            20,
        )
    await wait_for_async(
        lambda: absent(cluster, "batch/v1/jobs", f"{name}-generate"), "the running shards to be deleted", 20
    )


async def a_spec_made_invalid_by_a_patch_stops_the_teacher_and_the_running_shards(cluster: Cluster):
    async with cluster.operator():
        await generating(cluster, "broken")
        # kd without topLogprobs: what the CRD's CEL rule refuses; an API server without it lets it through.
        await cluster.patch(
            DJ, "broken", {"spec": {"training": {"method": "kd"}}, "metadata": {"generation": 2}}
        )
        status = await cluster.wait_phase("broken", "Failed")
        await all_stopped(cluster, "broken")
    assert "spec.generation.topLogprobs" in status["message"]
