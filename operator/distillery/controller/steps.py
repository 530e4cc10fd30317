"""The phase machine's vocabulary: a condition change, a step, the walk over the stages, and small readers
of status and time. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from distillery.api import (
    ConditionType,
    CostStatus,
    DistillationJobSpec,
    DistillationJobStatus,
    EvaluationStatus,
    Phase,
    Progress,
    Reason,
    TeacherStatus,
)
from distillery.contract import stages
from distillery.contract.stages import Stage
from distillery.controller.observe import JobState, Observed
from distillery.storage import Layout


@dataclass(frozen=True)
class Cond:
    type: ConditionType
    status: str  # "True" / "False" / "Unknown"
    reason: str  # a Reason, a stage's FailureReason, or the Kubernetes Job's reason
    message: str = ""


@dataclass(frozen=True)
class Step:
    phase: Phase
    message: str
    conditions: tuple[Cond, ...] = ()
    ensure: tuple[str, ...] = ()  # children to create if absent (keys of manifests.CHILDREN)
    delete: tuple[str, ...] = ()  # children to delete if present
    suspend: tuple[str, ...] = ()  # stage Jobs to set spec.suspend=true on
    resume: tuple[str, ...] = ()  # stage Jobs to set spec.suspend=false on
    progress: Progress = field(default_factory=Progress)  # the fields it sets (`with_progress`) go to status
    evaluation: EvaluationStatus | None = None
    artifacts: dict[str, Any] | None = None
    finished_stages: tuple[str, ...] = ()  # stages that completed in this step (for durations)
    delete_self: bool = False  # ttlSecondsAfterFinished has passed
    requeue_after: float | None = None
    cost: CostStatus | None = None  # status.cost after this step (controller.costs)
    teacher: TeacherStatus | None = None  # status.teacher after this step; None keeps status's


@dataclass
class Walk:
    """What the stages done so far contribute to the step that the first unfinished stage returns."""

    spec: DistillationJobSpec
    status: DistillationJobStatus
    observed: Observed
    now: datetime
    layout: Layout
    conditions: list[Cond] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    artifacts: dict[str, Any] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    ensure: list[str] = field(default_factory=list)

    def note(self, **fields: Any) -> None:
        """Set Progress fields for the step this walk ends in (a misspelt one fails)."""
        self.progress = with_progress(self.progress, **fields)

    def step(self, phase: Phase, message: str, *conditions: Cond, summary: str, **changes: Any) -> Step:
        """A step carrying everything gathered so far, plus this stage's own conditions and changes."""
        # Children are ensured only by the stage that runs; a verdict creates nothing.
        ensure = (*self.ensure, *changes.pop("ensure")) if "ensure" in changes else ()
        return Step(
            phase,
            message,
            (*self.conditions, *conditions),
            ensure=ensure,
            delete=changes.pop("delete", teacher_present(self.observed)),
            progress=with_summary(self.progress, summary),
            artifacts=self.artifacts or None,
            finished_stages=tuple(self.finished),
            **changes,
        )


def with_progress(progress: Progress, **fields: Any) -> Progress:
    """`progress` with `fields` set, validated: Progress refuses an unknown field, so a misspelt one fails
    here. Only the fields set (`model_fields_set`) reach status; the others keep what status had."""
    return Progress.model_validate({**progress.model_dump(exclude_unset=True), **fields})


# Figures of the running stage only: a step that does not set them clears them, so one stage's percent
# or ETA never shows beside the next one's summary.
PER_STAGE = ("percent", "eta_seconds", "tokens_per_second")


def with_summary(progress: Progress, summary: str) -> Progress:
    """`progress` with the `kubectl get` line set, and the running stage's figures it lacks cleared."""
    unset = {name: None for name in PER_STAGE if name not in progress.model_fields_set}
    return with_progress(progress, **unset, summary=summary)


def since(now: datetime, *starts: str | None) -> float | None:
    """Seconds from the first of `starts` that is a time (a stage Job's startTime, its condition's
    lastTransitionTime) to now; None when none is."""
    start = next((t for t in map(parse_time, starts) if t is not None), None)
    return max(0.0, (now - start).total_seconds()) if start is not None else None


StageStep = Callable[[Walk], "Step | None"]
# Stage -> its function in the phase walk (controller.phases registers one per stage with `walks`).
WALK: dict[Stage, StageStep] = {}


def walks(stage: Stage) -> Callable[[StageStep], StageStep]:
    def register(function: StageStep) -> StageStep:
        WALK[stage] = function
        return function

    return register


def now_text(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def condition(status: DistillationJobStatus, kind: ConditionType):
    return next((c for c in status.conditions if c.type == kind), None)


def is_true(status: DistillationJobStatus, kind: ConditionType) -> bool:
    c = condition(status, kind)
    return c is not None and c.status == "True"


def teacher_present(observed: Observed) -> tuple[str, ...]:
    """The teacher's children that exist: releasing the teacher removes every one (its Deployment, Service
    and NetworkPolicy), not just the pods holding GPUs."""
    return observed.teacher.children


def stop_everything(observed: Observed) -> tuple[str, ...]:
    """A job that ended: its teacher and any stage Job still running go (GPUs freed, no pod left working)."""
    running = tuple(
        stage
        for stage in stages.names()
        if (job := observed.job(stage)).exists and not (job.complete or job.failed)
    )
    return teacher_present(observed) + running


def resume(spec: DistillationJobSpec, job: JobState, stage: Stage) -> tuple[str, ...]:
    # With a Kueue queue, Kueue decides when a suspended Job runs; otherwise we resume it.
    return (stage,) if job.exists and job.suspended and not spec.queue_name else ()


def started_at(status: DistillationJobStatus, kind: ConditionType, reason: Reason) -> str | None:
    c = condition(status, kind)
    return c.last_transition_time if c is not None and c.reason == reason.value else None
