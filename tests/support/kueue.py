"""Kueue's admission contract, applied to manifests by its documented rules (no Kueue runs here): the
Workloads it makes, beside its webhooks, which the harness plays (tests/harness/kueue.py).

What Workloads Kueue makes for the objects it manages, and whether anything of them runs before it admits:

- batch/v1 Job (https://kueue.sigs.k8s.io/docs/tasks/run/jobs/): the Job with the `kueue.x-k8s.io/queue-name`
  label gets one Workload "with a matching name"; its one pod set counts the Job's `parallelism`; Kueue keeps
  the Job suspended until the Workload is admitted. Fewer pods are admitted only when the Job asks for
  partial admission (`kueue.x-k8s.io/job-min-parallelism`) or is elastic (`kueue.x-k8s.io/elastic-job`).
- JobSet (https://kueue.sigs.k8s.io/docs/tasks/run/jobsets/): the queue label on the JobSet; one Workload,
  whose resources count each replicated Job's `replicas` x `parallelism`.
- StatefulSet (https://kueue.sigs.k8s.io/docs/tasks/run/statefulset/): "represented as a single independent
  workload" on the plain pod group: Kueue's webhook gives the pod template the group's name and its total
  count, `spec.replicas` (pkg/controller/jobs/statefulset/statefulset_webhook.go), and each pod waits behind
  Kueue's scheduling gate until the group is admitted.
- Deployment (https://kueue.sigs.k8s.io/docs/tasks/run/deployment/): "every Pod from a Deployment is
  represented as a single independent Plain Pod": a Workload of one pod per replica.
- An object without the queue label is not Kueue's (`manageJobsWithoutQueueName` is false by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.harness.kueue import queue_of

PARTIAL_ADMISSION = ("kueue.x-k8s.io/job-min-parallelism", "kueue.x-k8s.io/elastic-job")


@dataclass(frozen=True)
class Workload:
    owner: str  # "<Kind>/<name>" of the object it stands for
    queue: str
    pod_sets: tuple[tuple[str, int], ...]  # (name, pods)
    partial: bool = False  # Kueue may admit fewer pods than asked for

    @property
    def pods(self) -> int:
        return sum(count for _, count in self.pod_sets)


def workloads(manifest: dict[str, Any]) -> list[Workload]:
    """The Workloads Kueue would create for one object (none when it is not Kueue's)."""
    queue = queue_of(manifest)
    if not queue:
        return []
    kind, spec = manifest["kind"], manifest["spec"]
    owner = f"{kind}/{manifest['metadata']['name']}"
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if kind == "Job":
        partial = any(key in annotations for key in PARTIAL_ADMISSION)
        return [Workload(owner, queue, (("main", int(spec.get("parallelism", 1))),), partial)]
    if kind == "JobSet":
        sets = tuple(
            (rj["name"], int(rj.get("replicas", 1)) * int(rj["template"]["spec"].get("parallelism", 1)))
            for rj in spec["replicatedJobs"]
        )
        return [Workload(owner, queue, sets)]
    if kind == "StatefulSet":
        return [Workload(owner, queue, (("main", int(spec.get("replicas", 1))),))]
    if kind == "Deployment":
        return [Workload(f"{owner}#{i}", queue, (("main", 1),)) for i in range(int(spec.get("replicas", 1)))]
    raise ValueError(f"{owner}: Kueue has no documented integration for this kind here")


def held_until_admitted(manifest: dict[str, Any]) -> bool:
    """Nothing of the object runs before its Workload is admitted: a Job or JobSet created suspended
    (`spec.suspend`; Kueue's webhook would also set it), pods of a StatefulSet or Deployment behind Kueue's
    scheduling gate (its pod webhook adds the gate to every pod it manages)."""
    if not queue_of(manifest):
        return False
    if manifest["kind"] in ("Job", "JobSet"):
        return manifest["spec"].get("suspend") is True
    return manifest["kind"] in ("StatefulSet", "Deployment")
