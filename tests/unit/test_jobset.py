"""Training as a JobSet (`training.launcher`): which launcher a job gets, the JobSet the builder makes (the
rendezvous host by JobSet's documented pod host names, names its webhook accepts, upstream's CRD schema),
and the operator reading the JobSet's status as the Job it stands for."""

from __future__ import annotations

import copy

import pytest

from distillery.contract.commands import RENDEZVOUS_ENDPOINT_ENV
from distillery.contract.stages import Stage
from distillery.contract.summaries import TrainSummary, termination_message
from distillery.controller.cache import CHILD_KINDS
from distillery.controller.observe import from_children
from distillery.manifests import CHILDREN, BuildConfig, build, names, training_launcher
from tests.support import jobset_crd
from tests.support.manifest_cases import multinode_job
from tests.support.pods import container_of, literal_env
from tests.unit import apiserver

pytestmark = pytest.mark.unit
INSTALLED = BuildConfig(jobset_installed=True)


def _job(launcher: str = "auto", nodes: int = 2, name: str | None = None):
    job = multinode_job()
    training = job.spec.training.model_copy(update={"launcher": launcher, "nodes": nodes})
    meta = job.metadata.model_copy(update={"name": name}) if name else job.metadata
    return job.model_copy(
        update={"spec": job.spec.model_copy(update={"training": training}), "metadata": meta}
    )


@pytest.mark.parametrize(
    ("launcher", "installed", "expected"),
    [("auto", True, "jobset"), ("auto", False, "job"), ("job", True, "job"), ("jobset", False, "jobset")],
)
def test_the_launcher_follows_the_spec_and_auto_the_cluster(launcher: str, installed: bool, expected: str):
    job, config = _job(launcher), BuildConfig(jobset_installed=installed)
    assert training_launcher(job, config) == expected
    assert build("train", job, config)["kind"] == {"job": "Job", "jobset": "JobSet"}[expected]
    # The Indexed Job needs the operator's headless Service; a JobSet makes its own.
    assert (build("train-service", job, config) is None) == (expected == "jobset")


def test_torchrun_meets_at_pod_0_by_the_host_name_jobset_gives_it():
    """JobSet (network.enableDNSHostnames) names each pod's host `<jobSet>-<replicatedJob>-<jobIndex>-<podIndex>`
    under the subdomain `spec.network.subdomain`, which defaults to the JobSet's name (its concepts page)."""
    jobset = build("train", _job(), INSTALLED)
    spec = jobset["spec"]
    assert spec["network"]["enableDNSHostnames"] is True and "subdomain" not in spec["network"]
    assert spec["network"]["publishNotReadyAddresses"] is True  # torchrun meets before any pod is ready
    (replicated,) = spec["replicatedJobs"]
    subdomain = jobset["metadata"]["name"]
    pod_zero = f"{jobset['metadata']['name']}-{replicated['name']}-0-0"
    env = literal_env(container_of({"spec": replicated["template"]["spec"]}))
    assert env[RENDEZVOUS_ENDPOINT_ENV].rsplit(":", 1)[0] == f"{pod_zero}.{subdomain}"
    # No subdomain of the operator's (JobSet sets it) and no queue label below the JobSet (Kueue reads it there).
    assert "subdomain" not in replicated["template"]["spec"]["template"]["spec"]
    assert replicated["replicas"] * replicated["template"]["spec"]["parallelism"] == 2


def test_restarts_map_to_the_jobset_failure_policy():
    job = _job()
    jobset = build("train", job, INSTALLED)
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": job.spec.training.backoff_limit}
    # A failed pod fails its Job at once, so the JobSet restarts every node from the last checkpoint.
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["backoffLimit"] == 0


def test_a_long_job_name_gives_pod_names_jobset_accepts_at_the_most_nodes():
    job = _job(nodes=64, name="a" * 253)
    jobset = build("train", job, INSTALLED)
    assert jobset["metadata"]["name"] == names(job).train_set
    for name in jobset_crd.longest_pod_names(jobset):
        assert apiserver.is_dns1035_label(name), name
    for child in jobset_crd.child_jobs(jobset):
        assert apiserver.object_errors(child) == []


def test_upstream_s_jobset_models_take_what_we_build_and_refuse_what_they_should():
    """Kubeflow Trainer's API package generates JobSet v1alpha2 models from upstream's OpenAPI: every
    JobSet we build (1 and 64 nodes, a queue or none) parses with nothing dropped; a typo or a wrong type fails."""
    for job in (_job(), _job(nodes=64, name="a" * 253), _job(nodes=1)):
        for queue in (None, "gpu-team-a"):
            queued = job.model_copy(update={"spec": job.spec.model_copy(update={"queue_name": queue})})
            assert jobset_crd.model_problems(build("train", queued, INSTALLED)) == []
    good = build("train", _job(), INSTALLED)
    unknown = copy.deepcopy(good)
    unknown["spec"]["failurePolicy"]["maxRestart"] = 1
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicatedJobs"][0]["replicas"] = "2"
    assert jobset_crd.model_problems(unknown) == [".spec.failurePolicy.maxRestart: unknown field"]
    assert "replicas" in jobset_crd.model_problems(wrong_type)[0]


def test_the_upstream_crd_refuses_what_it_should():
    """The schema check can fail: an unknown field, a wrong type, a broken CEL rule are each refused."""
    openapi = jobset_crd.schema()
    if openapi is None:
        pytest.skip(f"{jobset_crd.ENV} is not set (docs/scale-out.md: where the JobSet CRD file comes from)")
    good = build("train", _job(), INSTALLED)
    assert jobset_crd.schema_problems(good, openapi) == []
    unknown = copy.deepcopy(good)
    unknown["spec"]["failurePolicy"]["maxRestart"] = 1
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["failurePolicy"]["maxRestarts"] = "three"
    for bad in (unknown, wrong_type):
        assert jobset_crd.schema_problems(bad, openapi), bad["spec"]["failurePolicy"]


def _pod(jobset: dict, index: int, summary: TrainSummary) -> dict:
    template = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    return {
        "metadata": {
            "name": f"p{index}",
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": f"2026-11-28T10:0{index}:00Z",
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "train",
                    "state": {"terminated": {"exitCode": 0, "message": termination_message(summary)}},
                }
            ],
        },
    }


def _with_status(jobset: dict, condition: dict | None, restarts: int = 0, **jobs: int) -> dict:
    out = copy.deepcopy(jobset)
    out["status"] = {
        "replicatedJobsStatus": [
            {"name": "node", "ready": 0, "succeeded": 0, "failed": 0, "active": 0, **jobs}
        ],
        "restarts": restarts,
        "conditions": [{"status": "True", "lastTransitionTime": "2026-11-28T10:10:00Z", **condition}]
        if condition
        else [],
    }
    return out


def test_a_completed_jobset_is_a_complete_stage_with_every_pod_s_summary():
    jobset = build("train", _job(), INSTALLED)
    done = _with_status(jobset, {"type": "Completed", "reason": "AllJobsCompleted"}, succeeded=1)
    pods = [_pod(jobset, i, TrainSummary(train_loss=0.5, step=3)) for i in range(2)]
    train = from_children({"JobSet": [done], "Pod": pods}).job(Stage.train)
    assert train.exists and train.complete and not train.failed
    assert train.succeeded == 2 and len(train.summaries) == 2 and not train.summaries_missing
    # One pod's summary not seen yet: the stage waits for it, as for an Indexed Job.
    assert from_children({"JobSet": [done], "Pod": pods[:1]}).job(Stage.train).summaries_missing


def test_a_failed_jobset_is_a_failed_stage_with_its_reason_and_message():
    jobset = build("train", _job(), INSTALLED)
    message = "jobset failed due to reaching max number of restarts"
    failed = _with_status(
        jobset, {"type": "Failed", "reason": "ReachedMaxRestarts", "message": message}, restarts=2, failed=1
    )
    train = from_children({"JobSet": [failed]}).job(Stage.train)
    assert train.failed and (train.reason, train.message) == ("ReachedMaxRestarts", message)
    assert train.restarts == 2
    running = from_children({"JobSet": [_with_status(jobset, None, active=1)]}).job(Stage.train)
    assert running.exists and not (running.complete or running.failed) and running.active == 2


def test_a_queued_jobset_is_held_by_kueue_until_admitted():
    jobset = build("train", _job(), INSTALLED)
    assert jobset["spec"]["suspend"] is True
    held = from_children({"JobSet": [_with_status(jobset, None)]}).job(Stage.train)
    assert held.held_by_kueue and held.queue == jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    admitted = copy.deepcopy(jobset)
    admitted["spec"]["suspend"] = False
    assert not from_children({"JobSet": [admitted]}).job(Stage.train).held_by_kueue


def test_every_kind_the_builders_make_is_watched_at_the_same_coordinates():
    """The operator's cache learns of a JobSet or StatefulSet it made only if it watches that kind there."""
    for child, (api_version, kind, plural, _, _) in CHILDREN.items():
        group, _, version = api_version.rpartition("/")
        assert CHILD_KINDS[kind] == (group, version, plural), child
