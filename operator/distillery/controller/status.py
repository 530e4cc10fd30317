"""The status after a step, and the Events a status change deserves. Pure.

`next_status` merges a `phases.Step` into the status: conditions keep their
lastTransitionTime unless their status or reason changes; `events` lists the
transitions (a Warning for a failure, Normal for progress, and a Normal StageStarted / StageCompleted
at each stage's boundaries, with its figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from distillery.api import (
    Artifacts,
    Condition,
    ConditionType,
    DistillationJobStatus,
    Phase,
    Progress,
    Reason,
    is_progress_reason,
)
from distillery.contract import stages
from distillery.controller import readout
from distillery.controller.observe import JobState
from distillery.controller.steps import Cond, Step, now_text, parse_time


def next_status(
    status: DistillationJobStatus, step: Step, now: datetime, generation: int | None
) -> DistillationJobStatus:
    """The status after `step`: a new object; `status` is not changed."""
    stamp = now_text(now)
    conditions = {c.type: c.model_copy() for c in status.conditions}
    for change in step.conditions:
        old = conditions.get(change.type)
        moved = old is None or old.status != change.status or old.reason != change.reason
        conditions[change.type] = _make_condition(
            change, stamp if moved else (old.last_transition_time or stamp)
        )
    order = list(ConditionType)
    # Only the fields the step set replace status's; a step that set none keeps status.progress.
    progress = (status.progress.model_dump() if status.progress else {}) | step.progress.model_dump(
        exclude_unset=True
    )
    new = status.model_copy(
        update={
            "phase": step.phase,
            "message": step.message,
            "conditions": [conditions[t] for t in order if t in conditions],
            "observed_generation": generation,
            "start_time": status.start_time or stamp,
            "progress": Progress.model_validate(progress) if progress else status.progress,
        }
    )
    if step.phase.is_terminal and not status.completion_time:
        new.completion_time = stamp
    if step.evaluation is not None:
        new.evaluation = step.evaluation
    if step.cost is not None:
        new.cost = step.cost
    if step.teacher is not None:
        new.teacher = step.teacher
    if step.artifacts is not None:
        new.artifacts = Artifacts.model_validate(step.artifacts)
    return new


def _make_condition(change: Cond, stamp: str) -> Condition:
    return Condition(
        type=change.type,
        status=change.status,
        reason=str(getattr(change.reason, "value", change.reason)),
        message=change.message,
        last_transition_time=stamp,
    )


@dataclass(frozen=True)
class Event:
    type: str  # Normal / Warning
    reason: str
    message: str


def events(old: DistillationJobStatus, new: DistillationJobStatus) -> list[Event]:
    """Kubernetes Events for what changed: the phase (Normal, Warning for Failed), and each condition
    that turned to trouble (Warning, with the cause). Progress that does not change the phase (a
    condition turning True on the way) makes no Event: the next phase's Event says it."""
    out: list[Event] = []
    before = {c.type: c for c in old.conditions}
    for c in new.conditions:
        prior = before.get(c.type)
        moved = prior is None or (prior.status, prior.reason) != (c.status, c.reason)
        if moved and c.status == "False" and not is_progress_reason(c.reason):
            out.append(Event("Warning", f"{c.type.value}{c.reason}", c.message or c.reason))
        if moved:
            out += _stage_boundary(c, prior, new)
    if new.phase != old.phase and new.phase is not None:
        kind = "Warning" if new.phase is Phase.failed else "Normal"
        out.append(Event(kind, new.phase.value, new.message or new.phase.value))
    return out


# A stage's condition while it runs: False with one of these reasons.
_RUNNING = frozenset(
    {Reason.checking.value, Reason.generating.value, Reason.training.value, Reason.evaluating.value}
)


def _stage_boundary(c: Condition, prior: Condition | None, new: DistillationJobStatus) -> list[Event]:
    """A Normal Event when a stage starts (its condition turns to running) and when it ends (True), with its
    figures and how long it took (`kubectl describe dj` lists them)."""
    stage = next((f.stage for f in stages.STAGES if f.condition == c.type), None)
    if stage is None:
        return []
    if c.status == "True" and (prior is None or prior.status != "True"):
        spent = new.cost.stages.get(stage) if new.cost else None
        took = f" in {readout.duration_text(spent.wall_seconds)}" if spent and spent.wall_seconds else ""
        return [Event("Normal", "StageCompleted", f"{stage} done{took}: {c.message}")]
    if c.status == "False" and c.reason in _RUNNING:
        return [Event("Normal", "StageStarted", f"{stage} started: {c.message}")]
    return []


def status_document(status: DistillationJobStatus) -> dict[str, Any]:
    """The status as the API stores it (camelCase, no empty fields)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def stage_duration(job: JobState) -> float | None:
    start, end = parse_time(job.start_time), parse_time(job.completion_time)
    return (end - start).total_seconds() if start and end else None
