"""The phase machine: (spec, status, observed children, now) -> the next step. Pure.

It reconciles by level, not by edge: from what exists it works out which stage the job
is in, so an operator restart (or a missed event) lands in the same place. Stages are
walked in order; a stage whose condition is True (or whose Job is Complete) is done.

    Pending -> TeacherStarting -> Generating -> Training -> Evaluating -> Succeeded
         any of them -> Failed (a stage failed, a bad spec, the teacher never loaded, the gate)
         any non-final -> Suspended (spec.suspend) -> back to where the children say it was

`Step` says what the handlers must do (create if absent, delete, (un)suspend Jobs) and
what the status becomes; `next_status` merges it into the status (conditions keep their
lastTransitionTime unless their status changes) and `events` lists the transitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from distillery.api import ConditionType, DistillationJobSpec, DistillationJobStatus, Phase
from distillery.controller.observe import (
    JobState,
    Observed,
    evaluation_result,
    generation_totals,
    training_result,
)
from distillery.storage import Layout

C = ConditionType

# Reasons (one CamelCase word each) a user and a program can match on.
INVALID_SPEC = "InvalidSpec"
STAGE_ORDER = ("generate", "train", "evaluate")
STAGE_CONDITION = {"generate": C.data_generated, "train": C.student_trained, "evaluate": C.evaluated}
STAGE_PHASE = {"generate": Phase.generating, "train": Phase.training, "evaluate": Phase.evaluating}
TEACHER_CHILDREN = ("teacher", "teacher-service", "teacher-policy")


@dataclass(frozen=True)
class Cond:
    type: ConditionType
    status: str  # "True" / "False" / "Unknown"
    reason: str
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
    progress: dict[str, Any] = field(default_factory=dict)  # Progress fields (snake_case) to set
    evaluation: dict[str, Any] | None = None
    artifacts: dict[str, Any] | None = None
    finished_stages: tuple[str, ...] = ()  # stages that completed in this step (for durations)
    delete_self: bool = False  # ttlSecondsAfterFinished has passed
    requeue_after: float | None = None


def _now_text(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition(status: DistillationJobStatus, kind: ConditionType):
    return next((c for c in status.conditions if c.type == kind), None)


def _is_true(status: DistillationJobStatus, kind: ConditionType) -> bool:
    c = _condition(status, kind)
    return c is not None and c.status == "True"


def _teacher_present(observed: Observed) -> tuple[str, ...]:
    return ("teacher",) if observed.teacher.exists else ()


def _failure(
    step_conditions: list[Cond], kind: ConditionType, stage: str, job: JobState, observed: Observed
) -> Step:
    reason = job.reason or "JobFailed"
    detail = job.message or f"the {stage} Job failed"
    if job.failed_indexes:
        detail += f" (failed shards: {job.failed_indexes})"
    if job.pod_error:
        detail += f"; last error: {job.pod_error}"
    message = f"{stage} failed: {detail}"
    return Step(
        Phase.failed,
        message,
        (*step_conditions, Cond(kind, "False", reason, detail)),
        delete=_teacher_present(observed),
    )


def decide(
    spec: DistillationJobSpec | None,
    problems: list[str],
    status: DistillationJobStatus,
    observed: Observed,
    now: datetime,
    job_name: str = "",
) -> Step:
    """The next step for one DistillationJob. `problems` are the spec's validation messages."""
    phase = status.phase
    if phase is not None and phase.is_terminal:
        return _finished(spec, status, observed, now)
    if problems or spec is None:
        return Step(Phase.failed, "invalid spec: " + "; ".join(problems), delete=_teacher_present(observed))
    if spec.suspend:
        running = tuple(s for s in STAGE_ORDER if _job(observed, s).exists and not _job(observed, s).suspended
                        and not _job(observed, s).complete and not _job(observed, s).failed)  # fmt: skip
        teacher_down = ()
        if spec.teacher.endpoint is None and _is_true(status, C.teacher_ready):
            teacher_down = (
                Cond(C.teacher_ready, "False", "Suspended", "the teacher is removed while suspended"),
            )
        return Step(
            Phase.suspended,
            "suspended (spec.suspend is true): pods are stopped, progress on storage is kept",
            teacher_down,
            delete=_teacher_present(observed),
            suspend=running,
        )

    if observed.claim_missing:
        claim = spec.storage.pvc.claim_name if spec.storage.pvc else ""
        return Step(
            Phase.pending, f"waiting for PersistentVolumeClaim {claim!r} (storage.pvc.claimName) to exist"
        )

    # Paths as the pods see them; PurePosixPath never touches the operator's filesystem.
    layout = Layout(root=PurePosixPath(spec.storage.mount_path), job_name=job_name)  # type: ignore[arg-type]
    ensure: list[str] = ["pvc"] if spec.storage.pvc is not None and spec.storage.pvc.size is not None else []
    conditions: list[Cond] = []
    progress: dict[str, Any] = {}
    finished: list[str] = []
    artifacts: dict[str, Any] = {}

    # -------------------------------------------------------------- 1. teacher + generation
    gen = observed.generate
    served = spec.teacher.endpoint is None
    shards = spec.generation.shards
    if not _is_true(status, C.data_generated):
        progress.update(
            shards_total=shards, shards_done=min(gen.succeeded, shards), **generation_totals(gen.summaries)
        )
        if gen.failed:
            return _with(_failure(conditions, C.data_generated, "generate", gen, observed), progress)
        if not gen.complete:
            if served:
                ensure += TEACHER_CHILDREN
            teacher_ready = not served or observed.teacher.ready
            if served:
                ready_msg = f"vLLM serves {spec.teacher.model} as {spec.teacher.served_model_name!r}"
                conditions.append(Cond(C.teacher_ready, "True", "Ready", ready_msg) if teacher_ready else
                                  Cond(C.teacher_ready, "False", "Starting", f"vLLM is loading {spec.teacher.model}"))  # fmt: skip
            else:
                conditions.append(
                    Cond(C.teacher_ready, "True", "ExternalEndpoint", f"using {spec.teacher.endpoint.url}")
                )
            if not teacher_ready:
                started = _parse_time(_started_at(status, C.teacher_ready, "Starting")) or now
                waited = (now - started).total_seconds()
                limit = spec.teacher.startup_timeout_seconds
                if waited > limit:
                    detail = f"the teacher was not ready after {limit} s (teacher.startupTimeoutSeconds)"
                    if observed.teacher.waiting_reason:
                        detail += f"; its container is {observed.teacher.waiting_reason}"
                    return Step(
                        Phase.failed,
                        detail,
                        (Cond(C.teacher_ready, "False", "StartupTimeout", detail),),
                        delete=_teacher_present(observed),
                    )
                waiting = f" ({observed.teacher.waiting_reason})" if observed.teacher.waiting_reason else ""
                # A suspended generation Job (after a resume) waits for the teacher too. The message
                # names when the wait began, not the seconds so far, so status stays unchanged
                # (no write, no watch event) on every tick while a big model loads.
                return Step(
                    Phase.teacher_starting,
                    f"waiting for the teacher to load {spec.teacher.model}{waiting} since {_now_text(started)} "
                    f"(teacher.startupTimeoutSeconds: {limit})",
                    tuple(conditions),
                    ensure=tuple(ensure),
                    progress={**progress, "summary": "teacher loading"},
                )
            done = min(gen.succeeded, shards)
            return Step(
                Phase.generating,
                f"generating: {done}/{shards} shards done",
                (*conditions, Cond(C.data_generated, "False", "Generating", f"{done}/{shards} shards done")),
                ensure=(*ensure, "generate"),
                resume=_resume(spec, gen, "generate"),
                progress={**progress, "summary": f"generate {done}/{shards} shards"},
            )
        totals = generation_totals(gen.summaries)
        conditions.append(
            Cond(
                C.data_generated,
                "True",
                "Completed",
                f"{totals['records']} records, {totals['tokens']} tokens from {shards} shards "
                f"({totals['rejected']} responses rejected)",
            )
        )
        if served:
            conditions.append(
                Cond(C.teacher_ready, "False", "ScaledDown", "generation is done; the teacher is removed")
            )
        finished.append("generate")
        progress["shards_done"] = shards
    artifacts["data"] = str(layout.work / "generated")
    teacher_gone = _teacher_present(observed)

    # -------------------------------------------------------------- 2. training
    train = observed.train
    if not _is_true(status, C.student_trained):
        result = training_result(train.summaries)
        progress.update(
            {k: result[k] for k in ("train_loss", "validation_loss", "step", "epoch") if k in result}
        )
        if train.failed:
            return _with(
                _failure(conditions, C.student_trained, "train", train, observed), progress, finished
            )
        if not train.complete:
            return Step(
                Phase.training,
                "training the student",
                (*conditions, Cond(C.student_trained, "False", "Training", f"training {spec.student.model}")),
                ensure=(*ensure, "train"),
                delete=teacher_gone,
                resume=_resume(spec, train, "train"),
                progress={**progress, "summary": "train running"},
                artifacts=artifacts,
                finished_stages=tuple(finished),
            )
        loss = result.get("train_loss")
        conditions.append(
            Cond(
                C.student_trained,
                "True",
                "Completed",
                "student trained" + (f", final loss {loss:.4g}" if loss is not None else ""),
            )
        )
        finished.append("train")
    artifacts["student"] = str(layout.student)

    # -------------------------------------------------------------- 3. evaluation and the gate
    ev = observed.evaluate
    result = evaluation_result(ev.summaries)
    evaluation = _evaluation_status(result)
    if result.get("report"):
        artifacts["report"] = result["report"]
    else:
        artifacts["report"] = str(layout.evaluation_report)
    gate_known = "gate_passed" in result
    if ev.failed and not gate_known:
        return _with(_failure(conditions, C.evaluated, "evaluate", ev, observed), progress, finished)
    if not ev.complete and not (ev.failed and gate_known):
        return Step(
            Phase.evaluating,
            "evaluating student vs baseline vs teacher",
            (*conditions, Cond(C.evaluated, "False", "Evaluating", "scoring on held-out data")),
            ensure=(*ensure, "evaluate"),
            delete=teacher_gone,
            resume=_resume(spec, ev, "evaluate"),
            progress={**progress, "summary": "evaluate running"},
            artifacts=artifacts,
            finished_stages=tuple(finished),
        )
    finished.append("evaluate")
    conditions.append(Cond(C.evaluated, "True", "Completed", _scores_line(result)))
    gate = spec.evaluation.gate
    gate_set = any(v is not None for v in (gate.min_retention, gate.min_score, gate.max_latency_ms))
    passed = result.get("gate_passed", True if not gate_set else None)
    reason_text = result.get("gate_reason") or ""
    common = {
        "delete": teacher_gone,
        "evaluation": evaluation,
        "artifacts": artifacts,
        "finished_stages": tuple(finished),
    }
    if passed is None:
        text = "the evaluator reported no gate result, but evaluation.gate is set"
        return Step(Phase.failed, text, (*conditions, Cond(C.quality_gate_passed, "False", "NoGateResult", text)),
                    progress={**progress, "summary": "gate unknown"}, **common)  # fmt: skip
    if not passed:
        text = f"quality gate failed: {reason_text or 'the student did not meet evaluation.gate'}"
        return Step(
            Phase.failed,
            text + " (artifacts are kept)",
            (*conditions, Cond(C.quality_gate_passed, "False", "GateFailed", reason_text or text)),
            progress={**progress, "summary": "gate failed"},
            **common,
        )
    gate_reason = "GatePassed" if gate_set else "NoGate"
    gate_message = reason_text or (
        "every gate threshold is met" if gate_set else "evaluation.gate sets no threshold"
    )
    retention = result.get("retention")
    summary = "done" + (f", retention {retention:.2f}" if retention is not None else "")
    return Step(
        Phase.succeeded,
        f"succeeded: the student is at {artifacts['student']}"
        + (f" (retention {retention:.3f})" if retention is not None else ""),
        (*conditions, Cond(C.quality_gate_passed, "True", gate_reason, gate_message)),
        progress={**progress, "summary": summary},
        **common,
    )


def _job(observed: Observed, stage: str) -> JobState:
    return getattr(observed, stage)


def _resume(spec: DistillationJobSpec, job: JobState, stage: str) -> tuple[str, ...]:
    # With a Kueue queue, Kueue decides when a suspended Job runs; otherwise we resume it.
    return (stage,) if job.exists and job.suspended and not spec.queue_name else ()


def _started_at(status: DistillationJobStatus, kind: ConditionType, reason: str) -> str | None:
    c = _condition(status, kind)
    return c.last_transition_time if c is not None and c.reason == reason else None


def _with(step: Step, progress: dict[str, Any], finished: list[str] | tuple[str, ...] = ()) -> Step:
    return Step(
        **{**step.__dict__, "progress": {**progress, "summary": "failed"}, "finished_stages": tuple(finished)}
    )


def _scores_line(result: dict[str, Any]) -> str:
    scores = result.get("scores") or {}
    parts = [
        f"{model} {value['score']:.3f}" for model, value in scores.items() if value.get("score") is not None
    ]
    metric = result.get("metric") or "score"
    return f"{metric}: " + ", ".join(parts) if parts else "evaluation finished"


def _evaluation_status(result: dict[str, Any]) -> dict[str, Any] | None:
    if not result:
        return None
    out: dict[str, Any] = {"metric": result.get("metric")}
    for model in ("teacher", "baseline", "student"):
        if model in (result.get("scores") or {}):
            out[model] = result["scores"][model]
    out["retention"] = result.get("retention")
    out["gatePassed"] = result.get("gate_passed")
    out["gateReason"] = result.get("gate_reason")
    return {k: v for k, v in out.items() if v is not None}


def _finished(
    spec: DistillationJobSpec | None, status: DistillationJobStatus, observed: Observed, now: datetime
) -> Step:
    """Succeeded or Failed: nothing runs any more; the teacher stays gone; the TTL counts down."""
    step = Step(status.phase, status.message or "", delete=_teacher_present(observed))
    if spec is None or spec.ttl_seconds_after_finished is None:
        return step
    done = _parse_time(status.completion_time)
    if done is None:
        return step
    left = spec.ttl_seconds_after_finished - (now - done).total_seconds()
    if left <= 0:
        return Step(status.phase, status.message or "", delete_self=True)
    return Step(status.phase, status.message or "", delete=step.delete, requeue_after=left)


# ------------------------------------------------------------------ status


def next_status(
    status: DistillationJobStatus, step: Step, now: datetime, generation: int | None
) -> DistillationJobStatus:
    """The status after `step`: a new object; `status` is not changed."""
    stamp = _now_text(now)
    conditions = {c.type: c.model_copy() for c in status.conditions}
    for change in step.conditions:
        old = conditions.get(change.type)
        moved = old is None or old.status != change.status or old.reason != change.reason
        conditions[change.type] = _make_condition(
            change, stamp if moved else (old.last_transition_time or stamp)
        )
    order = list(ConditionType)
    progress = (status.progress.model_dump() if status.progress else {}) | step.progress
    new = status.model_copy(
        update={
            "phase": step.phase,
            "message": step.message,
            "conditions": [conditions[t] for t in order if t in conditions],
            "observed_generation": generation,
            "start_time": status.start_time or stamp,
            "progress": _model("progress", progress) if progress else status.progress,
        }
    )
    if step.phase.is_terminal and not status.completion_time:
        new.completion_time = stamp
    if step.evaluation is not None:
        new.evaluation = _model("evaluation", step.evaluation)
    if step.artifacts is not None:
        new.artifacts = _model("artifacts", step.artifacts)
    return new


def _make_condition(change: Cond, stamp: str):
    from distillery.api import Condition

    return Condition(
        type=change.type, status=change.status, reason=change.reason, message=change.message,
        last_transition_time=stamp,
    )  # fmt: skip


def _model(name: str, data: dict[str, Any]):
    from distillery.api import Artifacts, EvaluationStatus, Progress

    cls = {"progress": Progress, "evaluation": EvaluationStatus, "artifacts": Artifacts}[name]
    return cls.model_validate(data)


@dataclass(frozen=True)
class Event:
    type: str  # Normal / Warning
    reason: str
    message: str


def events(old: DistillationJobStatus, new: DistillationJobStatus) -> list[Event]:
    """Kubernetes Events for what changed: the phase, and each condition whose status moved."""
    out: list[Event] = []
    before = {c.type: c for c in old.conditions}
    for c in new.conditions:
        prior = before.get(c.type)
        if prior is None or (prior.status, prior.reason) != (c.status, c.reason):
            kind = "Warning" if c.status == "False" and c.reason not in _EXPECTED_FALSE else "Normal"
            out.append(Event(kind, f"{c.type.value}{c.reason}", c.message or c.reason))
    if new.phase != old.phase and new.phase is not None:
        kind = "Warning" if new.phase is Phase.failed else "Normal"
        out.append(Event(kind, new.phase.value, new.message or new.phase.value))
    return out


# False conditions that are progress, not trouble.
_EXPECTED_FALSE = {"Starting", "Generating", "Training", "Evaluating", "ScaledDown", "Suspended"}


def status_document(status: DistillationJobStatus) -> dict[str, Any]:
    """The status as the API stores it (camelCase, no empty fields)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def stage_duration(job: JobState) -> float | None:
    start, end = _parse_time(job.start_time), _parse_time(job.completion_time)
    return (end - start).total_seconds() if start and end else None
