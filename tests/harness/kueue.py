"""Kueue's admission contract, as the harness plays it (Kueue itself cannot run here).

THIS IS A TEST FIXTURE. It reproduces only what Kueue documents that a workload sees, not how Kueue
decides (no quota, flavours or preemption): a test admits by command.

- batch/v1 Jobs (https://kueue.sigs.k8s.io/docs/tasks/run/jobs/): Kueue's webhook suspends a Job
  labelled `kueue.x-k8s.io/queue-name` when it is created; Kueue sets `spec.suspend: false` when the
  Job's Workload is admitted (and true again when it is preempted).
- Pods, and the Deployment integration built on them (https://kueue.sigs.k8s.io/docs/tasks/run/plain_pods/,
  https://kueue.sigs.k8s.io/docs/tasks/run/deployment/): the webhook gives each new pod labelled with a
  queue the label `kueue.x-k8s.io/managed: "true"` and the scheduling gate `kueue.x-k8s.io/admission`;
  Kueue removes the gate when the pod's Workload is admitted. Pods of a Job that Kueue manages are left
  to the Job integration (no gate).

Kubernetes leaves a gated pod Pending, PodScheduled False with reason SchedulingGated, and runs it once
its last gate is removed; the harness's pods do the same (`pod.py`), whoever set the gate.

    with Kubelet(url, root, kueue=True) as kubelet:   # the webhook part, in the harness's "admission"
        kueue = Kueue(RestClient(url, namespace))
        kueue.waiting()                                # ["Job/x-check", "Pod/x-teacher-..."]
        kueue.admit_job("x-check"); kueue.admit_pods(**{"distillery.dev/stage": "teacher"})
"""

from __future__ import annotations

import copy
from typing import Any

from tests.harness.rest import RestClient, api_path

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
MANAGED_LABEL = "kueue.x-k8s.io/managed"


def queue_of(obj: dict[str, Any]) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")


def _owned_by_a_job(pod: dict[str, Any]) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == "Job" and o.get("apiVersion") == "batch/v1" for o in owners)


def gate_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A new pod as Kueue's pod webhook stores it: with a queue label (and not a Kueue-managed Job's pod),
    the managed label and the admission scheduling gate; any other pod unchanged."""
    if not queue_of(pod) or _owned_by_a_job(pod):
        return pod
    out = copy.deepcopy(pod)
    out["metadata"].setdefault("labels", {})[MANAGED_LABEL] = "true"
    gates = out.setdefault("spec", {}).setdefault("schedulingGates", [])
    if not any(g.get("name") == ADMISSION_GATE for g in gates):
        gates.append({"name": ADMISSION_GATE})
    return out


def suspend_job(job: dict[str, Any]) -> dict[str, Any]:
    """A new Job as Kueue's Job webhook stores it: suspended when it names a queue."""
    if not queue_of(job) or (job.get("spec") or {}).get("suspend"):
        return job
    out = copy.deepcopy(job)
    out.setdefault("spec", {})["suspend"] = True
    return out


def gated(pod: dict[str, Any]) -> bool:
    """The pod still waits for Kueue's admission (its gate is there)."""
    return any(g.get("name") == ADMISSION_GATE for g in (pod.get("spec") or {}).get("schedulingGates") or [])


def ungate_patch(pod: dict[str, Any]) -> dict[str, Any]:
    """The merge patch with which Kueue admits a pod: its scheduling gates without Kueue's (Kubernetes
    allows a pod's scheduling gates only to be removed)."""
    rest = [
        g for g in (pod.get("spec") or {}).get("schedulingGates") or [] if g.get("name") != ADMISSION_GATE
    ]
    return {"spec": {"schedulingGates": rest}}


def held_job(job: dict[str, Any]) -> bool:
    """A Job Kueue has not admitted: labelled with a queue and suspended."""
    return bool(queue_of(job)) and bool((job.get("spec") or {}).get("suspend"))


class Kueue:
    """Admission on a test's command, through the API as Kueue's controller does it."""

    def __init__(self, api: RestClient):
        self.api = api

    def waiting(self) -> list[str]:
        """What waits for admission now: `Job/<name>` (suspended with a queue label), `Pod/<name>` (gated)."""
        jobs = [f"Job/{j['metadata']['name']}" for j in self.api.items("batch/v1", "jobs") if held_job(j)]
        pods = [f"Pod/{p['metadata']['name']}" for p in self.api.items("v1", "pods") if gated(p)]
        return jobs + pods

    def admit_job(self, name: str) -> None:
        """Admit a Job's Workload: Kueue unsuspends the Job."""
        job = self.api.get("batch/v1", "jobs", name)
        if job is None or not held_job(job):
            raise AssertionError(
                f"Job {name} is not waiting for Kueue: {job and job.get('spec', {}).get('suspend')}"
            )
        self.api.call(
            "PATCH", api_path("batch/v1", "jobs", self.api.namespace, name), {"spec": {"suspend": False}}
        )

    def admit_pods(self, **labels: str) -> int:
        """Admit the gated pods with these labels (each one's Workload): Kueue removes their gate. How many."""
        admitted = 0
        for pod in self.api.pods(**labels):
            if gated(pod):
                path = api_path("v1", "pods", self.api.namespace, pod["metadata"]["name"])
                self.api.call("PATCH", path, ungate_patch(pod))
                admitted += 1
        return admitted
