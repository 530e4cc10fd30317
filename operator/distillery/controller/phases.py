"""The phase machine: (spec, status, observed children, now) -> the next step. Pure.

It reconciles by level, not by edge: from what exists it works out which stage the job
is in, so an operator restart (or a missed event) lands in the same place. Stages are
walked in order, one function each; a stage whose condition is True (or whose Job is
Complete) is done and the walk goes on to the next.

    Pending -> TeacherStarting -> Generating -> Training -> Evaluating -> Succeeded
         any of them -> Failed (a stage failed, a bad spec, the teacher never loaded, the gate)
         any non-final -> Suspended (spec.suspend) -> back to where the children say it was

`Step` says what the handlers must do (create if absent, delete, (un)suspend Jobs) and
what the status becomes (`controller.steps`); `controller.status` merges it into the
status and lists the Events.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import PurePosixPath

from distillery.api import (
    ConditionType,
    DistillationJobSpec,
    DistillationJobStatus,
    Phase,
    Progress,
    Reason,
    TrainingMethod,
)
from distillery.contract import stages
from distillery.contract.stages import Stage
from distillery.contract.summaries import CheckSummary, EvaluateSummary, TrainSummary, generation_totals
from distillery.controller import policy, readout
from distillery.controller.costs import observed_cost
from distillery.controller.gate import gate, scores_line
from distillery.controller.holds import (
    TEACHER_CHILDREN,
    failure,
    queued,
    teacher_conditions,
    teacher_starting,
    teacher_status,
    waiting,
)
from distillery.controller.observe import JobState, Observed, settled
from distillery.controller.readout import count_text
from distillery.controller.steps import (
    WALK,
    Cond,
    Step,
    Walk,
    is_true,
    parse_time,
    resume,
    since,
    started_at,
    stop_everything,
    teacher_present,
    walks,
    with_progress,
)
from distillery.storage import Layout

C = ConditionType
# What a training pod's summary adds to status.progress.
TRAIN_PROGRESS = frozenset({"train_loss", "validation_loss", "step", "epoch", "duplicates", "on_policy_loss"})


def decide(
    spec: DistillationJobSpec | None,
    problems: list[str],
    status: DistillationJobStatus,
    observed: Observed,
    now: datetime,
    job_name: str = "",
) -> Step:
    """The next step for one DistillationJob, with what it has cost so far. `problems` are the spec's
    validation messages."""
    observed, settling = settled(observed, now)
    step = next_step(spec, problems, status, observed, now, job_name)
    if settling is not None:
        step = dataclasses.replace(step, requeue_after=min(step.requeue_after or settling, settling))
    step = dataclasses.replace(step, teacher=teacher_status(status, observed.teacher))
    if spec is None:
        return step
    return dataclasses.replace(step, cost=observed_cost(spec, status, observed, now) or status.cost)


def next_step(
    spec: DistillationJobSpec | None,
    problems: list[str],
    status: DistillationJobStatus,
    observed: Observed,
    now: datetime,
    job_name: str = "",
) -> Step:
    if status.phase is not None and status.phase.is_terminal:
        return finished(spec, status, observed, now)
    if problems or spec is None:
        return Step(Phase.failed, "invalid spec: " + "; ".join(problems), delete=stop_everything(observed))
    changed = policy.changed_sections(spec, status)
    if changed:
        return policy.spec_changed(changed, observed)
    admission = observed.admission
    if admission is not None and (admission.denied or admission.missing_secrets):
        return policy.not_admitted(admission, observed)
    if spec.suspend:
        return suspended(spec, status, observed)
    if observed.claim_missing:
        claim = spec.storage.pvc.claim_name if spec.storage.pvc else ""
        return Step(
            Phase.pending, f"waiting for PersistentVolumeClaim {claim!r} (storage.pvc.claimName) to exist"
        )
    # Paths as the pods see them; PurePosixPath never touches the operator's filesystem.
    layout = Layout(root=PurePosixPath(spec.storage.mount_path), job_name=job_name)  # type: ignore[arg-type]
    walk = Walk(spec, status, observed, now, layout)
    if admission is not None:
        walk.conditions.append(Cond(C.admitted, "True", Reason.allowed, admission.policy))
    if spec.storage.pvc is not None and spec.storage.pvc.size is not None:
        walk.ensure.append("pvc")
    # Each stage in the table's order: a finished one adds to the walk and returns None; the first
    # unfinished one (or the last, evaluation, always) returns the step.
    for entry in stages.STAGES:
        step = WALK[entry.stage](walk)
        if step is not None:
            return step
    raise AssertionError("the last stage always returns a step")  # pragma: no cover


def suspended(spec: DistillationJobSpec, status: DistillationJobStatus, observed: Observed) -> Step:
    running = tuple(
        stage
        for stage in stages.names()
        if (job := observed.job(stage)).exists and not (job.suspended or job.complete or job.failed)
    )
    teacher_down = ()
    if spec.teacher.endpoint is None and is_true(status, C.teacher_ready):
        teacher_down = (
            Cond(C.teacher_ready, "False", Reason.suspended, "the teacher is removed while suspended"),
        )
    return Step(
        Phase.suspended,
        "suspended (spec.suspend is true): pods are stopped, progress on storage is kept",
        teacher_down,
        delete=teacher_present(observed),
        suspend=running,
    )


# ------------------------------------------------------------------ 0. the inputs, before the teacher


@walks(Stage.check)
def check(walk: Walk) -> Step | None:
    """`distillery check` as a small Job: the inputs exist and are readable before a GPU is taken."""
    job = walk.observed.job(Stage.check)
    # A job that was generating before the check existed (an operator upgrade) goes on without it.
    started = walk.observed.job(Stage.generate).exists or is_true(walk.status, C.data_generated)
    if is_true(walk.status, C.inputs_ready) or started:
        return None
    if job.failed:
        return failure(walk, Stage.check, job)
    if job.held_by_kueue:
        return queued(walk, Phase.pending, Stage.check, job)
    if not job.complete:
        return walk.step(
            Phase.pending,
            "checking that the inputs exist and are readable" + waiting(job),
            Cond(C.inputs_ready, "False", Reason.checking, "opening data.train and data.validation"),
            summary="checking inputs",
            ensure=(Stage.check,),
            resume=resume(walk.spec, job, Stage.check),
        )
    result = next((s for s in reversed(job.summaries) if isinstance(s, CheckSummary)), None)
    found = ", ".join(f"{i.location} ({i.format})" for i in result.inputs.values()) if result else ""
    walk.conditions.append(
        Cond(C.inputs_ready, "True", Reason.completed, f"readable: {found or 'all inputs'}")
    )
    walk.finished.append(Stage.check)
    return None


# ------------------------------------------------------------------ 1. teacher + generation


@walks(Stage.generate)
def generation(walk: Walk) -> Step | None:
    spec, gen = walk.spec, walk.observed.job(Stage.generate)
    shards = spec.generation.shards
    served = spec.teacher.endpoint is None
    if not is_true(walk.status, C.data_generated):
        totals = generation_totals(gen.summaries)
        done = min(gen.succeeded, shards)
        walk.note(
            shards_total=shards,
            shards_done=done,
            records=totals.records,
            tokens=totals.output_tokens,
            rejected=totals.rejected,
            decontaminated=totals.decontaminated,
        )
        if gen.failed:
            return failure(walk, Stage.generate, gen)
        if not gen.complete:
            ready, is_ready = teacher_conditions(walk)
            if served:
                walk.ensure += TEACHER_CHILDREN
            if not is_ready:
                return teacher_starting(walk, ready)
            if gen.held_by_kueue:
                return queued(walk, Phase.generating, Stage.generate, gen, ready, delete=())
            elapsed = since(
                walk.now, gen.start_time, started_at(walk.status, C.data_generated, Reason.generating)
            )
            live = walk.observed.live_of(Stage.generate)
            figures = readout.generation(shards, totals.shards, totals.prompts, live, elapsed)
            figures["records"] = totals.records + int(live.get("records", 0))
            return walk.step(
                Phase.generating,
                f"generating: {done}/{shards} shards done" + waiting(gen),
                ready,
                Cond(C.data_generated, "False", Reason.generating, f"{done}/{shards} shards done"),
                summary=running(walk, Phase.generating, figures),
                ensure=(Stage.generate,),
                delete=(),
                resume=resume(spec, gen, Stage.generate),
            )
        walk.conditions.append(
            Cond(
                C.data_generated,
                "True",
                Reason.completed,
                f"{count_text(totals.prompts)} prompts, {count_text(totals.records)} records, "
                f"{count_text(totals.output_tokens)} tokens from {shards} shard{'s' if shards > 1 else ''} "
                f"({totals.rejected} responses rejected)",
            )
        )
        if served and not stages.facts(Stage.train).needs_teacher(spec):
            walk.conditions.append(
                Cond(
                    C.teacher_ready, "False", Reason.scaled_down, "generation is done; the teacher is removed"
                )
            )
        walk.finished.append(Stage.generate)
        walk.note(shards_done=shards)
    walk.artifacts["data"] = str(walk.layout.work / "generated")
    return None


# ------------------------------------------------------------------ 2. training


@walks(Stage.train)
def training(walk: Walk) -> Step | None:
    train = walk.observed.job(Stage.train)
    # onPolicy: the teacher grades the student's samples, so a served teacher stays (or comes back after a
    # suspension) until training is done, and training waits for it to be ready.
    keep_teacher = stages.facts(Stage.train).needs_teacher(walk.spec) and walk.spec.teacher.endpoint is None
    if not is_true(walk.status, C.student_trained):
        result = next((s for s in reversed(train.summaries) if isinstance(s, TrainSummary)), None)
        if result is not None:
            walk.note(**{k: v for k, v in result.model_dump(include=TRAIN_PROGRESS).items() if v is not None})
        if train.failed:
            return failure(walk, Stage.train, train)
        if not train.complete:
            live = walk.observed.live_of(Stage.train)
            if walk.spec.training.method is not TrainingMethod.on_policy:
                live.pop("on_policy_loss", None)  # the pod's gauge reads 0 when nothing sets it
            walk.note(**live)
            elapsed = since(
                walk.now, train.start_time, started_at(walk.status, C.student_trained, Reason.training)
            )
            figures = readout.training(walk.progress, walk.spec.training.epochs, elapsed)
            teacher: tuple[Cond, ...] = ()
            if keep_teacher:
                walk.ensure += TEACHER_CHILDREN
                ready, is_ready = teacher_conditions(walk)
                if not is_ready:
                    return teacher_starting(walk, ready)
                teacher = (ready,)
            if train.held_by_kueue:
                return queued(
                    walk,
                    Phase.training,
                    Stage.train,
                    train,
                    *teacher,
                    **({"delete": ()} if keep_teacher else {}),
                )
            return walk.step(
                Phase.training,
                "training the student" + waiting(train),
                *teacher,
                Cond(C.student_trained, "False", Reason.training, f"training {walk.spec.student.model}"),
                summary=running(walk, Phase.training, figures),
                # Several nodes: the headless Service that names the pods (pod 0's is the rendezvous).
                ensure=(*(("train-service",) if walk.spec.training.nodes > 1 else ()), Stage.train),
                resume=resume(walk.spec, train, Stage.train),
                **({"delete": ()} if keep_teacher else {}),
            )
        loss = result.train_loss if result is not None else None
        message = "student trained" + (f", final loss {loss:.4g}" if loss is not None else "")
        walk.conditions.append(Cond(C.student_trained, "True", Reason.completed, message))
        if keep_teacher:
            walk.conditions.append(
                Cond(C.teacher_ready, "False", Reason.scaled_down, "training is done; the teacher is removed")
            )
        walk.finished.append(Stage.train)
    walk.artifacts["student"] = str(walk.layout.student)
    return None


def running(walk: Walk, phase: Phase, figures: dict) -> str:
    """Note a running stage's figures, and return its `kubectl get` line, when they moved as a person sees
    them (`readout.moved`); otherwise keep status's figures and line, so a scrape that moved a count by a few
    writes nothing."""
    summary = figures.pop("summary")
    new = with_progress(walk.progress, **figures)
    old = walk.status.progress
    if walk.status.phase is phase and old is not None and old.summary and not readout.moved(old, new):
        names = {*figures, *readout.MOVES, *walk.observed.live} & set(Progress.model_fields)
        walk.progress = with_progress(walk.progress, **{name: getattr(old, name) for name in names})
        return old.summary
    walk.progress = new
    return summary


# ------------------------------------------------------------------ 3. evaluation and the gate


def evaluation_result(job: JobState) -> EvaluateSummary | None:
    """The evaluator's verdict: its summary, also from a pod that exited non-zero for a failed gate."""
    candidates = (*reversed(job.summaries), job.failed_summary)  # a succeeded pod's verdict first
    return next((s for s in candidates if isinstance(s, EvaluateSummary) and s.evaluation is not None), None)


@walks(Stage.evaluate)
def evaluation(walk: Walk) -> Step:
    ev = walk.observed.job(Stage.evaluate)
    result = evaluation_result(ev)
    walk.artifacts["report"] = (result.report if result else None) or str(walk.layout.evaluation_report)
    if result is not None and result.output:
        walk.artifacts["output"] = result.output
    if ev.failed and result is None:
        return failure(walk, Stage.evaluate, ev)
    if ev.held_by_kueue:
        return queued(walk, Phase.evaluating, Stage.evaluate, ev)
    if not ev.complete and not (ev.failed and result is not None):
        walk.note(**walk.observed.live_of(Stage.evaluate))
        elapsed = since(walk.now, ev.start_time, started_at(walk.status, C.evaluated, Reason.evaluating))
        figures = readout.evaluation(walk.progress, elapsed)
        return walk.step(
            Phase.evaluating,
            "evaluating student vs baseline vs teacher" + waiting(ev),
            Cond(C.evaluated, "False", Reason.evaluating, "scoring on held-out data"),
            summary=running(walk, Phase.evaluating, figures),
            ensure=(Stage.evaluate,),
            resume=resume(walk.spec, ev, Stage.evaluate),
        )
    walk.finished.append(Stage.evaluate)
    walk.conditions.append(Cond(C.evaluated, "True", Reason.completed, scores_line(result)))
    return gate(walk, result.evaluation if result else None)


# ------------------------------------------------------------------ finished jobs


def finished(
    spec: DistillationJobSpec | None, status: DistillationJobStatus, observed: Observed, now: datetime
) -> Step:
    """Succeeded or Failed: nothing runs any more (the teacher and running Jobs go); the TTL counts down."""
    step = Step(status.phase, status.message or "", delete=stop_everything(observed))
    if spec is None or spec.ttl_seconds_after_finished is None:
        return step
    done = parse_time(status.completion_time)
    if done is None:
        return step
    left = spec.ttl_seconds_after_finished - (now - done).total_seconds()
    if left <= 0:
        return Step(status.phase, status.message or "", delete_self=True)
    return Step(status.phase, status.message or "", delete=step.delete, requeue_after=left)
