"""The operator on the emulator with the scale-out children (tests/support/scale_out.py): training as a
JobSet where the cluster serves the JobSet CRD (`training.launcher: auto`), an Indexed Job where it does
not, and the teacher of several replicas behind a Kueue queue as one StatefulSet."""

from __future__ import annotations

import pytest

from tests.support import scale_out
from tests.support.kmock_cluster import Cluster

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
        await scale_out.through_generation(cluster, "ij", {"gpus": 0, "nodes": 2})
        train = await cluster.wait_child("batch/v1/jobs", "ij-train")
        await cluster.wait_child("v1/services", "ij-train")
    assert train["spec"]["completionMode"] == "Indexed"
    assert not [r for r in cluster.operator_requests() if r.resource.plural == "jobsets"]


async def test_a_queued_teacher_of_several_replicas_is_one_statefulset(cluster: Cluster):
    status = await scale_out.a_queued_teacher_of_several_replicas_is_one_statefulset(cluster)
    assert (status["teacher"]["replicas"], status["teacher"]["readyReplicas"]) == (3, 3)


async def test_a_jobset_asked_for_where_none_is_served_fails_the_job_naming_it(cluster: Cluster):
    async with cluster.operator():
        await scale_out.through_generation(cluster, "nj", {"gpus": 0, "nodes": 2, "launcher": "jobset"})
        status = await cluster.wait_phase("nj", "Failed")
    assert "JobSet nj-train" in status["message"], status["message"]
