"""What a stage that cannot go on says: waiting for a pod, queued by Kueue, failed; and the teacher while it
loads (or never does). Pure pieces of the phase machine (`controller.phases`), one per outcome."""

from __future__ import annotations

from typing import Any

from distillery.api import (
    ConditionType,
    DistillationJobStatus,
    Phase,
    Reason,
    TeacherStatus,
)
from distillery.contract import stages
from distillery.contract.stages import Stage
from distillery.controller.observe import TEACHER_CHILDREN, JobState, TeacherState
from distillery.controller.steps import (
    Cond,
    Step,
    Walk,
    now_text,
    parse_time,
    started_at,
    stop_everything,
    teacher_present,
    with_progress,
    with_summary,
)

C = ConditionType
__all__ = [
    "TEACHER_CHILDREN",
    "failure",
    "queued",
    "teacher_conditions",
    "teacher_starting",
    "teacher_status",
    "waiting",
]


def waiting(job: JobState) -> str:
    """Why a running stage's pod has not started, for its status message (an image that cannot be
    pulled, no node with the GPUs it asks for, a missing Secret): otherwise it would just look slow."""
    return f" (a pod is waiting: {job.waiting})" if job.waiting else ""


def queued(walk: Walk, phase: Phase, stage: Stage, job: JobState, *conditions: Cond, **changes: Any) -> Step:
    """A stage Job that Kueue holds suspended (not admitted yet, or preempted): the job says it is queued,
    in which queue, rather than looking slow. Kueue, not the operator, resumes it."""
    message = f"waiting for Kueue to admit the {stage} Job (queue {job.queue})"
    kind = stages.facts(stage).condition
    return walk.step(
        phase,
        message,
        *conditions,
        Cond(kind, "False", Reason.queued, message),
        summary=f"{stage} queued",
        ensure=(stage,),
        **changes,
    )


def failure(walk: Walk, stage: Stage, job: JobState) -> Step:
    """A failed stage Job: the stage's own reason and message when it wrote a summary, else the Job's."""
    kind = stages.facts(stage).condition
    stage_failure = job.failed_summary.failure if job.failed_summary is not None else None
    reason = stage_failure.reason.value if stage_failure else (job.reason or Reason.job_failed.value)
    detail = stage_failure.message if stage_failure else (job.message or f"the {stage} Job failed")
    if job.failed_indexes:
        detail += f" (failed shards: {job.failed_indexes})"
    if job.pod_error and not stage_failure:
        detail += f"; last error: {job.pod_error}"
    return Step(
        Phase.failed,
        f"{stage} failed: {detail}",
        (*walk.conditions, Cond(kind, "False", reason, detail)),
        delete=stop_everything(walk.observed),
        progress=with_summary(walk.progress, "failed"),
        finished_stages=tuple(walk.finished),
    )


def teacher_conditions(walk: Walk) -> tuple[Cond, bool]:
    """The TeacherReady condition while generation runs, and whether the teacher is ready."""
    teacher = walk.spec.teacher
    if teacher.endpoint is not None:
        return Cond(C.teacher_ready, "True", Reason.external_endpoint, f"using {teacher.endpoint.url}"), True
    if walk.observed.teacher.ready:
        message = f"vLLM serves {teacher.model} as {teacher.served_model_name!r}"
        return Cond(C.teacher_ready, "True", Reason.ready, message), True
    return Cond(C.teacher_ready, "False", Reason.starting, f"vLLM is loading {teacher.model}"), False


def teacher_starting(walk: Walk, ready: Cond) -> Step:
    """Wait for the teacher to load, or fail once `teacher.startupTimeoutSeconds` has passed."""
    spec, observed = walk.spec, walk.observed
    if observed.teacher.held_by_kueue:
        # Not loading yet: Kueue has not admitted its pods. The startup timeout counts from admission
        # (TeacherReady's reason moves from Queued to Starting then, and so does its transition time).
        message = (
            f"waiting for Kueue to admit the teacher (queue {observed.teacher.queue or spec.queue_name})"
        )
        return Step(
            Phase.teacher_starting,
            message,
            (*walk.conditions, Cond(C.teacher_ready, "False", Reason.queued, message)),
            ensure=tuple(walk.ensure),
            progress=with_progress(walk.progress, summary="teacher queued"),
            finished_stages=tuple(walk.finished),
        )
    started = parse_time(started_at(walk.status, C.teacher_ready, Reason.starting)) or walk.now
    limit = spec.teacher.startup_timeout_seconds
    waiting = observed.teacher.waiting_reason
    if (walk.now - started).total_seconds() > limit:
        detail = f"the teacher was not ready after {limit} s (teacher.startupTimeoutSeconds)"
        if waiting:
            detail += f"; its container is {waiting}"
        return Step(
            Phase.failed,
            detail,
            (Cond(C.teacher_ready, "False", Reason.startup_timeout, detail),),
            delete=teacher_present(observed),
        )
    # The message names when the wait began, not the seconds so far, so status stays unchanged
    # (no write, no watch event) on every tick while a big model loads.
    return Step(
        Phase.teacher_starting,
        f"waiting for the teacher to load {spec.teacher.model}{f' ({waiting})' if waiting else ''} "
        f"since {now_text(started)} (teacher.startupTimeoutSeconds: {limit})",
        (*walk.conditions, ready),
        ensure=tuple(walk.ensure),
        progress=with_summary(walk.progress, "teacher loading"),
        # Come back when the time is up, even if nothing else happens to the job meanwhile.
        requeue_after=max(1.0, limit - (walk.now - started).total_seconds() + 1),
        finished_stages=tuple(walk.finished),
    )


def teacher_status(status: DistillationJobStatus, teacher: TeacherState) -> TeacherStatus | None:
    """status.teacher: the Deployment's ready and asked-for pods while it exists; 0/0 once it is released
    (as a Deployment scaled to zero reads); None (status unchanged) for a job that never had one."""
    if not teacher.exists:
        return TeacherStatus(summary="0/0") if status.teacher is not None else None
    return TeacherStatus(
        replicas=teacher.replicas,
        ready_replicas=teacher.ready_replicas,
        summary=f"{teacher.ready_replicas}/{teacher.replicas}",
    )
