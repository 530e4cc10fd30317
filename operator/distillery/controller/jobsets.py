"""A JobSet (jobset.x-k8s.io/v1alpha2) read as the batch/v1 Job it stands for, so that one reader
(`observe.job_state`) judges the training stage whichever launcher ran it.

JobSet's terminal conditions are `Completed` and `Failed` (reasons such as `ReachedMaxRestarts`,
`FailedJobs`, with JobSet's own message); its status counts Jobs per replicated Job, not pods, so the
pods are those counts times each Job's parallelism; every restart of the JobSet recreated all its pods.
"""

from __future__ import annotations

from typing import Any

# JobSet's condition type -> the Job's that means the same.
CONDITIONS = {"Completed": "Complete", "Failed": "Failed", "Suspended": "Suspended"}


def _true(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind and c.get("status") == "True"), None)


def jobset_status(jobset: dict[str, Any]) -> dict[str, Any]:
    """A Job-shaped body (metadata, spec.suspend, status) of what `jobset` says."""
    spec = jobset.get("spec") or {}
    status = jobset.get("status") or {}
    pods_per_job = {
        rj.get("name"): int(((rj.get("template") or {}).get("spec") or {}).get("parallelism") or 1)
        for rj in spec.get("replicatedJobs") or ()
        if isinstance(rj, dict)
    }

    def pods(field: str) -> int:
        return sum(
            int(rj.get(field) or 0) * pods_per_job.get(rj.get("name"), 1)
            for rj in status.get("replicatedJobsStatus") or ()
            if isinstance(rj, dict)
        )

    conditions = [c for c in status.get("conditions") or () if isinstance(c, dict)]
    complete = _true(conditions, "Completed")
    return {
        "metadata": jobset.get("metadata") or {},
        "spec": {"suspend": bool(spec.get("suspend"))},
        "status": {
            "conditions": [
                {**c, "type": CONDITIONS[c["type"]]} for c in conditions if c.get("type") in CONDITIONS
            ],
            "succeeded": pods("succeeded"),
            "active": pods("active"),
            # Each restart recreated every pod: as many failures as a Job that lost them all.
            "failed": int(status.get("restarts") or 0),
            "completionTime": (complete or {}).get("lastTransitionTime"),
        },
    }
