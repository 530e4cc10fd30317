"""The training stage as a JobSet (jobset.x-k8s.io/v1alpha2), with `training.launcher: jobset` (or `auto`
where the cluster serves the JobSet CRD).

One replicated Job of `training.nodes` pods runs the same torchrun command line as the Indexed Job; the
JobSet makes the headless Service that is the pods' subdomain (`network.enableDNSHostnames`), so the
operator makes none. A failed pod fails its Job, and the JobSet then recreates every pod (`failurePolicy`,
up to `training.backoffLimit` times), each resuming from the last checkpoint, as users of JobSet expect.
With a Kueue queue the JobSet carries the queue label and starts suspended: Kueue's JobSet integration
admits all its pods as one Workload (https://kueue.sigs.k8s.io/docs/tasks/run/jobsets/).
"""

from __future__ import annotations

from typing import Any

from distillery.api import DistillationJob
from distillery.contract.commands import RENDEZVOUS_PORT
from distillery.contract.stages import Stage
from distillery.manifests import common
from distillery.manifests.jobs import training_job

API_VERSION = "jobset.x-k8s.io/v1alpha2"
KIND = "JobSet"
# The one replicated Job's name: part of every pod's host name (`<jobset>-node-<job>-<pod>`).
REPLICATED_JOB = "node"


def jobset_rendezvous_endpoint(job: DistillationJob) -> str:
    """Pod 0 of Job 0's name in DNS and the rendezvous port: JobSet names each pod's host
    `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>` under the subdomain `<jobset>` (its headless Service)."""
    name = common.names(job).train_set
    return f"{name}-{REPLICATED_JOB}-0-0.{name}:{RENDEZVOUS_PORT}"


def build_training_jobset(job: DistillationJob, config: common.BuildConfig) -> dict[str, Any]:
    training = job.spec.training
    name = common.names(job).train_set
    endpoint = jobset_rendezvous_endpoint(job) if training.nodes > 1 else None
    inner = training_job(job, config, name=name, endpoint=endpoint)
    spec = inner["spec"]
    # Kueue suspends and admits the JobSet as a whole; its Jobs follow the JobSet's `suspend`.
    spec.pop("suspend")
    # A failed pod fails its Job at once: the JobSet then restarts every node together (its failurePolicy),
    # since one lost rank breaks its peers' collectives anyway. An evicted or preempted pod is still only
    # replaced (the Job's podFailurePolicy ignores DisruptionTarget), as with the Indexed Job.
    spec["backoffLimit"] = 0
    queue = job.spec.queue_name
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        # The queue label goes on the JobSet only: Kueue's JobSet integration reads it there.
        "metadata": common.metadata(
            job, name, Stage.train, {common.KUEUE_QUEUE_LABEL: queue} if queue else {}
        ),
        "spec": {
            "suspend": bool(queue),
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "failurePolicy": {"maxRestarts": training.backoff_limit},
            "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": spec}}],
        },
    }
