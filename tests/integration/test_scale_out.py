"""The operator on the emulator with the scale-out children (tests/support/scale_out.py): training as a
JobSet where the cluster serves the JobSet CRD (`training.launcher: auto`), an Indexed Job where it does
not, and the teacher of several replicas behind a Kueue queue as one StatefulSet."""

from __future__ import annotations

import pytest

from tests.support import scale_out
from tests.support.kmock_cluster import Cluster, spec
from tests.support.scenarios import GEN

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_training_runs_as_a_jobset_where_the_crd_is_served(cluster: Cluster):
    status = await scale_out.training_runs_as_a_jobset_where_the_crd_is_served(cluster)
    trained = next(c for c in status["conditions"] if c["type"] == "StudentTrained")
    assert trained["status"] == "True"
    assert status["progress"]["trainLoss"] == 0.25
    patches = [
        r for r in cluster.operator_requests() if r.resource.plural == "jobsets" and r.method.value == "PATCH"
    ]
    assert [r.data["spec"]["suspend"] for r in patches] == [True, False]


async def test_a_failed_jobset_fails_the_job_with_its_message(cluster: Cluster):
    status, warnings = await scale_out.a_failed_jobset_fails_the_job_with_its_message(cluster)
    message = "jobset failed due to reaching max number of restarts"
    assert message in status["message"], status["message"]
    assert any(message in e["message"] for e in warnings)


async def test_a_spec_made_invalid_mid_training_deletes_the_jobset(cluster: Cluster):
    status = await scale_out.a_spec_made_invalid_mid_training_deletes_the_jobset(cluster)
    assert "spec.generation.topLogprobs" in status["message"]


async def test_without_the_crd_auto_trains_as_an_indexed_job(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("ij", spec(training={"gpus": 0, "nodes": 2}))
        await cluster.inputs_ready("ij")
        await cluster.wait_phase("ij", "TeacherStarting")
        await cluster.teacher_ready("ij-teacher")
        gen = await cluster.wait_child("batch/v1/jobs", "ij-generate")
        for index in range(2):
            await cluster.finish_pod(gen, "generate", GEN, index=index)
        await cluster.job_done("ij-generate", succeeded=2)
        train = await cluster.wait_child("batch/v1/jobs", "ij-train")
        await cluster.wait_child("v1/services", "ij-train")
    assert train["spec"]["completionMode"] == "Indexed"
    assert not [r for r in cluster.operator_requests() if r.resource.plural == "jobsets"]


async def test_a_queued_teacher_of_several_replicas_is_one_statefulset(cluster: Cluster):
    status = await scale_out.a_queued_teacher_of_several_replicas_is_one_statefulset(cluster)
    assert (status["teacher"]["replicas"], status["teacher"]["readyReplicas"]) == (3, 3)


async def test_a_jobset_asked_for_where_none_is_served_fails_the_job_naming_it(cluster: Cluster):
    async with cluster.operator():
        await cluster.create_job("nj", spec(training={"gpus": 0, "nodes": 2, "launcher": "jobset"}))
        await cluster.inputs_ready("nj")
        await cluster.wait_phase("nj", "TeacherStarting")
        await cluster.teacher_ready("nj-teacher")
        gen = await cluster.wait_child("batch/v1/jobs", "nj-generate")
        for index in range(2):
            await cluster.finish_pod(gen, "generate", GEN, index=index)
        await cluster.job_done("nj-generate", succeeded=2)
        status = await cluster.wait_phase("nj", "Failed")
    assert "JobSet nj-train" in status["message"], status["message"]
