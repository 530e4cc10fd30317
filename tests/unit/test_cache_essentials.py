"""The cache keeps only what the operator reads of each object (`cache.essentials`): a job's children,
built by the real builders and given the status a cluster writes, read the same from the cut bodies as
from the whole ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from distillery.api import DistillationJob
from distillery.contract.summaries import CheckSummary, termination_message
from distillery.controller.cache import Cache
from distillery.controller.observe import INDEX_ANNOTATION, from_children
from distillery.controller.progress import running_pods
from distillery.manifests import CHILDREN, BuildConfig, build

pytestmark = pytest.mark.unit

SPEC = {
    "teacher": {"model": "models/teacher", "gpus": 1},
    "student": {"model": "models/student"},
    "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
    "generation": {"shards": 2},
    "storage": {"pvc": {"size": "1Gi"}},
    "queueName": "gpu-queue",
}


def pod_of(job: dict[str, Any], name: str, status: dict[str, Any], index: int | None = None) -> dict:
    template = job["spec"]["template"]
    annotations = {INDEX_ANNOTATION: str(index)} if index is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": dict(template["metadata"]["labels"]),
            "annotations": annotations,
            "creationTimestamp": f"2026-12-07T12:00:0{len(name) % 10}Z",
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {
            **copy.deepcopy(template["spec"]),
            "schedulingGates": [{"name": "kueue.x-k8s.io/admission"}],
        },
        "status": status,
    }


def whole_children() -> dict[str, list[dict[str, Any]]]:
    """A job generating: its check done, two shards (one failed, one running), the teacher half ready and
    a second teacher pod still gated."""
    job = DistillationJob.model_validate(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "j", "namespace": "ml"},
            "spec": SPEC,
        }
    )
    job.metadata.uid = "u-1"
    out: dict[str, list[dict[str, Any]]] = {}
    for child in ("pvc", "teacher", "teacher-service", "teacher-policy", "check", "generate"):
        body = build(child, job, BuildConfig())
        body["metadata"].update(namespace="ml", uid=f"uid-{child}", resourceVersion="7")
        body["metadata"]["managedFields"] = [{"manager": "distillery-operator", "fieldsV1": {"f:spec": {}}}]
        out.setdefault(CHILDREN[child][1], []).append(body)
    check, generate = out["Job"]
    check["status"] = {
        "succeeded": 1,
        "startTime": "2026-12-07T12:00:00Z",
        "completionTime": "2026-12-07T12:00:09Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    generate["spec"]["suspend"] = False
    generate["status"] = {"active": 1, "succeeded": 1, "failed": 1, "startTime": "2026-12-07T12:01:00Z"}
    done = {"exitCode": 0, "reason": "Completed", "message": termination_message(CheckSummary())}
    out["Pod"] = [
        pod_of(
            check,
            "j-check-a",
            {"phase": "Succeeded", "containerStatuses": [{"name": "check", "state": {"terminated": done}}]},
        ),
        pod_of(
            generate,
            "j-generate-0-b",
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "generate",
                        "restartCount": 2,
                        "state": {"terminated": {"exitCode": 1, "message": "boom"}},
                    }
                ],
            },
            0,
        ),
        pod_of(
            generate,
            "j-generate-1-c",
            {
                "phase": "Running",
                "podIP": "10.0.0.9",
                "containerStatuses": [{"name": "generate", "restartCount": 1, "state": {"running": {}}}],
            },
            1,
        ),
    ]
    out["Deployment"][0]["status"] = {"replicas": 2, "readyReplicas": 1}
    out["Pod"].append(pod_of(out["Deployment"][0], "j-teacher-d", {"phase": "Pending"}))  # gated by Kueue
    return out


def test_the_cut_bodies_read_as_the_whole_ones():
    whole = whole_children()
    cache = Cache()
    cache.put_job(
        {"metadata": {"namespace": "ml", "name": "j", "uid": "u-1", "managedFields": [{}]}, "spec": SPEC}
    )
    for kind, bodies in whole.items():
        for body in bodies:
            cache.put_child(kind, copy.deepcopy(body))
    cut = cache.children(("ml", "j"))
    assert from_children(cut) == from_children(whole)
    assert running_pods(cut, "generate") == running_pods(whole, "generate") == ["10.0.0.9"]
    # What was dropped: the pod templates and containers, the API server's bookkeeping.
    size = lambda bodies: len(repr(bodies))  # noqa: E731
    assert size(cut) < size(whole) / 3, (size(cut), size(whole))
    assert all("managedFields" not in b["metadata"] for bodies in cut.values() for b in bodies)
    assert (
        "managedFields" not in cache.job(("ml", "j"))["metadata"] and cache.job(("ml", "j"))["spec"] == SPEC
    )


def test_a_training_jobset_cut_reads_as_the_whole_one():
    """A JobSet keeps only its replicated Jobs' names and parallelism (what controller.jobsets reads)."""
    spec = {**SPEC, "training": {"nodes": 3, "launcher": "jobset"}}
    job = DistillationJob.model_validate(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "j"},
            "spec": spec,
        }
    )
    job.metadata.namespace, job.metadata.uid = "ml", "u-1"
    jobset = build("train", job, BuildConfig(jobset_installed=True))
    jobset["status"] = {
        "replicatedJobsStatus": [{"name": "node", "succeeded": 1, "active": 0, "ready": 0, "failed": 0}],
        "conditions": [{"type": "Completed", "status": "True", "lastTransitionTime": "2026-12-07T12:00:00Z"}],
    }
    cache = Cache()
    cache.put_job({"metadata": {"namespace": "ml", "name": "j", "uid": "u-1"}, "spec": spec})
    cache.put_child("JobSet", copy.deepcopy(jobset))
    cut = cache.children(("ml", "j"))
    assert from_children(cut) == from_children({"JobSet": [jobset]})
    assert from_children(cut).job("train").succeeded == 3
    assert len(repr(cut)) < len(repr(jobset)) / 3
