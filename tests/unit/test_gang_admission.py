"""Where a queue is set, every stage is admitted as one gang: Kueue's documented admission rules
(tests/support/kueue.py) applied to the manifests the builders make, for teacher replicas 1 and 3, training
nodes 1 and 2, and both launchers. Each stage must be one Workload, of every pod that stage runs at once
(as the spec asks for them), with no partial admission, and nothing of it may run before admission."""

from __future__ import annotations

import json

import pytest
import yaml

from distillery.contract import stages
from distillery.errors import parse_job
from distillery.manifests import BuildConfig, build, names
from tests.support import jobset_crd, kueue
from tests.support.manifest_cases import ROOT

pytestmark = pytest.mark.unit
CONFIG = BuildConfig(worker_image="example.com/worker:1", worker_cuda_image="example.com/worker-cuda:1")


def _job(replicas: int, nodes: int, launcher: str, queue: str | None = "gpu-team-a"):
    document = yaml.safe_load((ROOT / "examples" / "distillation.yaml").read_text())
    document = json.loads(json.dumps(document))
    document["metadata"].update(name="gang", namespace="ml", uid="0b7c4a52-8c1e-4a11-9a5e-3f1d2b6c7a90")
    document["spec"]["teacher"]["replicas"] = replicas
    document["spec"]["training"].update(nodes=nodes, launcher=launcher)
    document["spec"]["queueName"] = queue
    if queue is None:
        del document["spec"]["queueName"]
    return parse_job(document)


def _pods_at_once(job) -> dict[str, int]:
    """Each stage's pods that run at the same time, as the spec asks for them."""
    spec = job.spec
    return {
        "teacher": spec.teacher.replicas,
        "check": 1,
        "generate": spec.generation.parallelism or spec.generation.shards,
        "train": spec.training.nodes,
        "evaluate": 1,
    }


@pytest.mark.parametrize("launcher", ["job", "jobset"])
@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("replicas", [1, 3])
def test_every_stage_is_one_gang_where_a_queue_is_set(replicas: int, nodes: int, launcher: str):
    job = _job(replicas, nodes, launcher)
    assert set(_pods_at_once(job)) == {"teacher", *stages.names()}  # every stage of the table
    for child, pods in _pods_at_once(job).items():
        manifest = build(child, job, CONFIG)
        found = kueue.workloads(manifest)
        assert len(found) == 1, (child, manifest["kind"], found)
        assert found[0].pods == pods and not found[0].partial, (child, found)
        assert found[0].queue == job.spec.queue_name
        assert kueue.held_until_admitted(manifest), child
    # The headless Service has no pods to admit, and a JobSet's Jobs are admitted through it, never alone.
    for child in ("teacher-service", "train-service"):
        service = build(child, job, CONFIG)
        assert service is None or kueue.queue_of(service) == ""
    train = build("train", job, CONFIG)
    assert train["kind"] == ("JobSet" if launcher == "jobset" else "Job")
    if train["kind"] == "JobSet":
        assert all(kueue.workloads(child) == [] for child in jobset_crd.child_jobs(train))
        assert all(kueue.queue_of(rj["template"]) == "" for rj in train["spec"]["replicatedJobs"])


def test_the_rules_tell_a_gang_from_pods_admitted_one_by_one():
    """The test above can fail: a Deployment of 3 replicas is 3 Workloads, the way the teacher was made
    before it became a StatefulSet behind a queue; a Job asking for partial admission is no gang."""
    job = _job(3, 2, "job")
    statefulset = build("teacher", job, CONFIG)
    deployment = {**statefulset, "kind": "Deployment"}
    assert [w.pods for w in kueue.workloads(deployment)] == [1, 1, 1]
    train = build("train", job, CONFIG)
    train["metadata"]["annotations"] = {"kueue.x-k8s.io/job-min-parallelism": "1"}
    assert kueue.workloads(train)[0].partial
    train["spec"]["suspend"] = False
    assert not kueue.held_until_admitted(train)


@pytest.mark.parametrize("launcher", ["job", "jobset"])
def test_without_a_queue_kueue_manages_nothing_and_nothing_waits(launcher: str):
    job = _job(3, 2, launcher, queue=None)
    for child in _pods_at_once(job):
        manifest = build(child, job, CONFIG)
        assert kueue.workloads(manifest) == [] and not kueue.held_until_admitted(manifest)
        assert manifest["spec"].get("suspend") in (None, False)
    # One replica or no queue keeps the Deployment; the StatefulSet is only for the gang.
    assert build("teacher", job, CONFIG)["kind"] == "Deployment"
    assert build("teacher", _job(1, 1, launcher), CONFIG)["kind"] == "Deployment"


def test_the_gang_teacher_is_the_deployment_s_pods_behind_its_headless_service():
    """Same pods, so the Service, NetworkPolicy, status and cost read it the same way; all replicas at once."""
    job = _job(3, 1, "job")
    statefulset = build("teacher", job, CONFIG)
    plain = build("teacher", _job(3, 1, "job", queue=None), CONFIG)
    assert statefulset["spec"]["template"]["spec"] == plain["spec"]["template"]["spec"]
    assert statefulset["spec"]["selector"] == plain["spec"]["selector"]
    assert statefulset["spec"]["replicas"] == plain["spec"]["replicas"] == 3
    service = build("teacher-service", job, CONFIG)
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] == names(job).teacher
    assert service["spec"]["clusterIP"] == "None"  # a StatefulSet's governing Service is headless
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    policy = build("teacher-policy", job, CONFIG)["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= labels.items()
