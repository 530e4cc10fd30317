"""What the operator sees of a job's children, reduced to what the phase machine needs.

Pure functions from the raw API objects (dicts) to small frozen records. The pods'
termination messages are the stages' typed summaries (`contract.summaries`), parsed with
the same models the stages write them with; a message that is not a summary (a log tail
left by `FallbackToLogsOnError` when a stage crashed before writing one) is kept as the
error text, never an error of the operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from distillery.contract import stages
from distillery.contract.stages import Stage
from distillery.contract.summaries import StageSummary, parse_summary
from distillery.controller.jobsets import jobset_status
from distillery.manifests.common import KUEUE_QUEUE_LABEL, STAGE_LABEL

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# The scheduling gate Kueue's webhook puts on each pod it manages (plain pods, Deployments, ...) and
# removes when the pod's Workload is admitted (https://kueue.sigs.k8s.io/docs/tasks/run/plain_pods/).
KUEUE_ADMISSION_GATE = "kueue.x-k8s.io/admission"


@dataclass(frozen=True)
class JobState:
    """A batch/v1 Job of one stage."""

    exists: bool = False
    complete: bool = False
    failed: bool = False
    reason: str = ""  # the Job's Failed condition reason: BackoffLimitExceeded, DeadlineExceeded, ...
    message: str = ""
    suspended: bool = False
    succeeded: int = 0
    active: int = 0
    failed_indexes: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    # Summaries of the stage's successful containers, newest last; for an Indexed Job the
    # latest one per index.
    summaries: tuple[StageSummary, ...] = ()
    # The newest failed pod's summary (its `failure` says why), or None when it left none.
    failed_summary: StageSummary | None = None
    # What a failed pod left when it wrote no summary: its log tail or the container's reason.
    pod_error: str = ""
    # Why a pod of it is not running yet, when Kubernetes says (`pods_waiting`), shown while it runs.
    waiting: str = ""
    # The Kueue LocalQueue its `kueue.x-k8s.io/queue-name` label names ("" without one).
    queue: str = ""
    # Pods the Job counts as failed (each replaced, up to its backoffLimit) plus its pods' container restarts.
    restarts: int = 0

    @property
    def held_by_kueue(self) -> bool:
        """Suspended with a queue label and not ended: Kueue has not admitted it (or took it back)."""
        return self.exists and self.suspended and bool(self.queue) and not (self.complete or self.failed)

    @property
    def summaries_missing(self) -> bool:
        """Complete, but not every succeeded pod's summary is here yet: the Job and its pods are watched
        apart, so the Job's Complete can reach the operator before its last pod's terminated status."""
        return self.complete and len(self.summaries) < self.succeeded


# The served teacher's children (keys of manifests.CHILDREN) by kind: all of them go when it is released.
# A StatefulSet serves a gang-admitted teacher (manifests.teacher_is_gang); it is the "teacher" child too.
TEACHER_KINDS = {
    "Deployment": "teacher",
    "StatefulSet": "teacher",
    "Service": "teacher-service",
    "NetworkPolicy": "teacher-policy",
}
TEACHER_CHILDREN = tuple(dict.fromkeys(TEACHER_KINDS.values()))


@dataclass(frozen=True)
class TeacherState:
    exists: bool = False  # its Deployment (or StatefulSet)
    ready: bool = False  # at least one replica serves: generation starts, the others join as they load
    replicas: int = 0  # pods its Deployment (or StatefulSet) asks for
    ready_replicas: int = 0
    # Its Service and NetworkPolicy (keys of TEACHER_CHILDREN) that exist: they can outlive the Deployment.
    others: tuple[str, ...] = ()

    @property
    def children(self) -> tuple[str, ...]:
        """Which of TEACHER_CHILDREN exist."""
        return (("teacher",) if self.exists else ()) + self.others

    waiting_reason: str = ""  # e.g. ImagePullBackOff, CrashLoopBackOff: shown while it starts
    queue: str = ""  # the Kueue LocalQueue its `kueue.x-k8s.io/queue-name` label names
    gated: int = 0  # its pods that still carry Kueue's admission scheduling gate (not admitted yet)
    restarts: int = 0  # container restarts of its pods (restartCount), summed

    @property
    def held_by_kueue(self) -> bool:
        """Not ready and a pod of it waits for Kueue's admission (its scheduling gate is still there)."""
        return self.exists and not self.ready and self.gated > 0


@dataclass(frozen=True)
class Admission:
    """The operator's guard on the job's spec (controller.guard), checked before anything runs."""

    denied: tuple[str, ...] = ()  # "field: why", one per refusal
    missing_secrets: tuple[str, ...] = ()  # "field: name" of named Secrets not there yet
    policy: str = ""  # the guard in words


NO_JOB = JobState()


@dataclass(frozen=True, init=False)
class Observed:
    teacher: TeacherState
    # Each stage's Job, by stage (contract.stages); a stage without one here has none.
    jobs: Mapping[Stage, JobState]
    # The existing claim named by storage.pvc.claimName does not exist (yet).
    claim_missing: bool
    # The guard's verdict; None when the guard is off or the job already runs.
    admission: Admission | None
    # What the running stage's pods report of their progress (Progress fields; controller.progress).
    live: dict[str, Any]

    def __init__(
        self,
        teacher: TeacherState | None = None,
        jobs: Mapping[Stage, JobState] | None = None,
        claim_missing: bool = False,
        admission: Admission | None = None,
        live: dict[str, Any] | None = None,
        **stage_jobs: JobState,
    ) -> None:
        """Stage Jobs as `jobs`, or one keyword per stage: `Observed(train=JobState(...))`."""
        found = dict(jobs or {})
        for name, job in stage_jobs.items():
            try:
                found[stages.facts(name).stage] = job
            except KeyError:
                raise TypeError(f"Observed() got an unexpected keyword argument {name!r}") from None
        object.__setattr__(self, "teacher", teacher or TeacherState())
        object.__setattr__(self, "jobs", found)
        object.__setattr__(self, "claim_missing", claim_missing)
        object.__setattr__(self, "admission", admission)
        object.__setattr__(self, "live", dict(live or {}))

    def live_of(self, stage: Stage) -> dict[str, Any]:
        """What the running pods of `stage` report; nothing when the figures are another stage's (the
        scraper names the stage it read, and the phase can move on before its next scrape)."""
        if self.live.get("stage", stage) != stage:
            return {}
        return {name: value for name, value in self.live.items() if name != "stage"}

    def job(self, stage: Stage) -> JobState:
        """The stage's Job as observed (an absent one when there is none)."""
        return self.jobs.get(stage, NO_JOB)

    def restarts(self) -> dict[str, int]:
        """Restarts seen so far, by stage (the teacher's included), of the children that exist."""
        out = {"teacher": self.teacher.restarts} if self.teacher.exists else {}
        return out | {str(stage.value): job.restarts for stage, job in self.jobs.items() if job.exists}


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in items if isinstance(c, dict) and c.get("status") == "True"}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
            "terminated"
        )
        if state:
            return state
    return None


def job_state(job: dict[str, Any] | None, pods: list[dict[str, Any]] = ()) -> JobState:
    if job is None:
        return JobState()
    status = job.get("status") or {}
    conditions = _conditions(job)
    failed = conditions.get("Failed")
    summaries: dict[str, StageSummary] = {}
    failed_summary: StageSummary | None = None
    pod_error = ""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    for number, pod in enumerate(ordered):
        state = _terminated(pod)
        if state is None:
            continue
        summary = parse_summary(state.get("message"))
        if state.get("exitCode") == 0 and summary is not None and summary.succeeded:
            annotations = (pod.get("metadata") or {}).get("annotations") or {}
            summaries[annotations.get(INDEX_ANNOTATION, f"pod-{number}")] = summary
        elif state.get("exitCode") not in (None, 0):
            failed_summary, pod_error = summary, ""
            if summary is None or summary.failure is None:
                text = state.get("message") or state.get("reason") or f"exit code {state.get('exitCode')}"
                pod_error = str(text).strip()[-500:]
    return JobState(
        exists=True,
        complete="Complete" in conditions,
        failed=failed is not None,
        reason=(failed or {}).get("reason", ""),
        message=(failed or {}).get("message", ""),
        suspended=bool((job.get("spec") or {}).get("suspend")),
        succeeded=int(status.get("succeeded") or 0),
        active=int(status.get("active") or 0),
        failed_indexes=status.get("failedIndexes") or "",
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        summaries=tuple(summaries[k] for k in sorted(summaries)),
        failed_summary=failed_summary,
        pod_error=pod_error,
        waiting=pods_waiting(pods),
        queue=_queue(job),
        restarts=int(status.get("failed") or 0) + container_restarts(pods),
    )


def container_restarts(pods: Iterable[dict[str, Any]]) -> int:
    """The kubelet's restartCount of every container of `pods`, summed."""
    return sum(
        int(container.get("restartCount") or 0)
        for pod in pods
        for container in (pod.get("status") or {}).get("containerStatuses") or ()
    )


def _queue(obj: dict[str, Any]) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL, "")


def kueue_gated(pod: dict[str, Any]) -> bool:
    """A pod that has not ended and still carries Kueue's admission scheduling gate."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(isinstance(g, dict) and g.get("name") == KUEUE_ADMISSION_GATE for g in gates)


# Waiting reasons that are only the normal way to start, not news.
STARTING = frozenset({"ContainerCreating", "PodInitializing"})
MESSAGE_LIMIT = 200


def pods_waiting(pods: Iterable[dict[str, Any]]) -> str:
    """Why a pod that has not ended is not running, in the kubelet's or the scheduler's words:
    `ImagePullBackOff: Back-off pulling image "..."`, `Unschedulable: 0/3 nodes are available: ...`,
    `CrashLoopBackOff`, `CreateContainerConfigError: secret "x" not found`; "" when none says so."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return _reason(condition.get("reason") or "Unschedulable", condition.get("message"))
        for container in (
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] not in STARTING:
                return _reason(waiting["reason"], waiting.get("message"))
    return ""


def _reason(reason: str, message: str | None) -> str:
    text = f"{reason}: {' '.join(message.split())}" if message else reason
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def teacher_state(
    deployment: dict[str, Any] | None, pods: list[dict[str, Any]] = (), children: tuple[str, ...] = ()
) -> TeacherState:
    """The teacher from its Deployment (or StatefulSet: the same spec.replicas and status.readyReplicas) and
    pods; `children`: which teacher children exist."""
    others = tuple(c for c in children if c != "teacher")
    if deployment is None:
        return TeacherState(others=others)
    ready_replicas = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    ready = ready_replicas >= 1
    return TeacherState(
        exists=True,
        ready=ready,
        replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
        ready_replicas=ready_replicas,
        others=others,
        waiting_reason="" if ready else pods_waiting(pods),
        queue=_queue(deployment),
        gated=sum(1 for pod in pods if kueue_gated(pod)),
        restarts=container_restarts(pods),
    )


def _stage_state(one: Any, pods: list[dict[str, Any]], stage: str) -> JobState:
    """A stage's Job, or the JobSet that runs it (training with `launcher: jobset`)."""
    jobset = one("JobSet", stage)
    return job_state(jobset_status(jobset) if jobset is not None else one("Job", stage), pods)


def _stage(body: dict[str, Any]) -> str:
    return ((body.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL, "")


def from_children(
    children: dict[str, list[dict[str, Any]]],
    claim_missing: bool = False,
    live: dict[str, Any] | None = None,
    admission: Admission | None = None,
) -> Observed:
    """The Observed record of a job from its objects as the cache holds them (kind -> bodies)."""

    def of(kind: str, stage: str) -> list[dict[str, Any]]:
        return [body for body in children.get(kind, ()) if _stage(body) == stage]

    def one(kind: str, stage: str) -> dict[str, Any] | None:
        found = of(kind, stage)
        return found[0] if found else None

    return Observed(
        claim_missing=claim_missing,
        admission=admission,
        teacher=teacher_state(
            one("Deployment", "teacher") or one("StatefulSet", "teacher"),
            of("Pod", "teacher"),
            tuple(child for kind, child in TEACHER_KINDS.items() if of(kind, "teacher")),
        ),
        live=dict(live or {}),
        jobs={f.stage: _stage_state(one, of("Pod", f.stage), f.stage) for f in stages.STAGES},
    )


# How long a Complete Job's pod summaries are waited for before the stage is judged without them
# (its pods may have been removed; then the stage's verdict says what is missing).
SUMMARY_GRACE_SECONDS = 60.0


def settled(observed: Observed, now: datetime) -> tuple[Observed, float | None]:
    """`observed` with each stage Job whose pods' summaries have not all arrived yet seen as still running
    (for up to SUMMARY_GRACE_SECONDS after it completed), and the seconds until that wait ends."""
    changes, waits = {}, []
    for stage in stages.names():
        job = observed.job(stage)
        if not job.summaries_missing or not job.completion_time:
            continue
        completed = datetime.fromisoformat(job.completion_time.replace("Z", "+00:00"))
        left = SUMMARY_GRACE_SECONDS - (now - completed).total_seconds()
        if left > 0:
            changes[stage] = dataclasses.replace(job, complete=False)
            waits.append(left)
    jobs = {**observed.jobs, **changes}
    return dataclasses.replace(observed, jobs=jobs), (min(waits) if waits else None)
