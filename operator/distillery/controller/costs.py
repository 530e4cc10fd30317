"""The job's cost as the operator sees it: from the stage pods' summaries and the teacher's ready span. Pure.

A stage's cost comes from its pods' summaries (each pod reports the GPUs it held, for how long,
and its CPU time; failed attempts that left a summary count too). Once a stage's Job or pods
are gone, the cost last written to status stands. The served teacher holds its GPUs from the
moment it is ready (TeacherReady turning True) until it is removed: while it serves, each
reconcile writes the span so far; the reconcile that removes it writes the last one.
"""

from __future__ import annotations

from datetime import datetime

from distillery.api import CostStatus, DistillationJobSpec, DistillationJobStatus, Reason, StageCost
from distillery.api.status import ConditionType
from distillery.contract import cost, stages
from distillery.contract.stages import Stage
from distillery.contract.summaries import EvaluateSummary, GenerateSummary, TrainSummary
from distillery.controller.observe import JobState, Observed
from distillery.controller.steps import condition, parse_time


def _span(job: JobState, now: datetime) -> float | None:
    start = parse_time(job.start_time)
    if start is None:
        return None
    end = parse_time(job.completion_time) or now
    return max(0.0, (end - start).total_seconds())


def stage_costs(status: DistillationJobStatus, observed: Observed, now: datetime) -> dict[str, StageCost]:
    """Each stage's cost: from its pods while they are there, else what status last said."""
    out = dict(status.cost.stages) if status.cost else {}
    for stage in stages.names():
        job = observed.job(stage)
        reports = [*job.summaries, *([job.failed_summary] if job.failed_summary else [])]
        if job.exists and reports:
            out[stage] = cost.stage_cost(reports, _span(job, now))
    return out


def teacher_cost(spec: DistillationJobSpec, status: DistillationJobStatus, now: datetime) -> StageCost | None:
    """The served teacher's GPUs, every replica's, from ready until now (or until the job ended); None once it
    is gone."""
    ready = condition(status, ConditionType.teacher_ready)
    if (
        spec.teacher.model is None
        or ready is None
        or ready.status != "True"
        or ready.reason != Reason.ready.value
    ):
        return None
    since = parse_time(ready.last_transition_time)
    until = (
        parse_time(status.completion_time) if status.phase is not None and status.phase.is_terminal else now
    )
    if since is None or until is None:
        return None
    return cost.teacher_cost(spec.teacher.gpus, since, max(since, until), spec.teacher.replicas)


def observed_cost(
    spec: DistillationJobSpec, status: DistillationJobStatus, observed: Observed, now: datetime
) -> CostStatus | None:
    """status.cost for this reconcile (None while nothing has run)."""
    stages = stage_costs(status, observed, now)
    teacher = teacher_cost(spec, status, now)
    if teacher is not None:
        stages = {"teacher": teacher, **{k: v for k, v in stages.items() if k != "teacher"}}
    if not stages:
        return None
    old = status.cost or CostStatus()
    generated = [s for s in observed.job(Stage.generate).summaries if isinstance(s, GenerateSummary)]
    trained = next(
        (s for s in reversed(observed.job(Stage.train).summaries) if isinstance(s, TrainSummary)), None
    )
    evaluated = next(
        (s for s in reversed(observed.job(Stage.evaluate).summaries) if isinstance(s, EvaluateSummary)), None
    )
    retention = status.evaluation.retention if status.evaluation else None
    if evaluated is not None and evaluated.evaluation is not None:
        retention = evaluated.evaluation.retention
    total = cost.job_cost(stages, generated, trained, evaluated, retention)
    # Counts of stages whose pods are gone stand as status last had them.
    return total.model_copy(
        update={
            "teacher_prompt_tokens": total.teacher_prompt_tokens or old.teacher_prompt_tokens,
            "teacher_output_tokens": total.teacher_output_tokens or old.teacher_output_tokens,
            "training_tokens": total.training_tokens or old.training_tokens,
            "evaluation_requests": total.evaluation_requests or old.evaluation_requests,
            "retention_per_gpu_hour": total.retention_per_gpu_hour or old.retention_per_gpu_hour,
        }
    )
