"""Evaluation of one job: student vs baseline vs teacher on held-out data, the report and the gate.

The compared models, all measured the same way (`evaluation.measure`: the same prompts, client,
concurrency, rounds and vLLM settings):

- student   the distilled model on the job's storage, served by a local vLLM;
- baseline  the student's base model (`student.model`) before distillation, served the same way
            and prompted with the chat template the student was trained with;
- teacher   `teacher.model` served the same way (the operator scaled the generation teacher
            away); asked live at --teacher-url or at `teacher.endpoint` when given. Scoring it
            from the answers it gave during generation (`teacher_from_records`) is kept for a
            teacher the evaluation cannot serve; the report then says its figures are not comparable.

The report goes to `Layout.evaluation_report` (JSON), with Markdown and a PNG of score versus
latency beside it. A failed quality gate exits 1 with the reason; every artifact is kept.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distillery import atomic, fingerprints
from distillery.api import CostStatus, DistillationJob, EvaluationStatus, ModelScore
from distillery.contract.report import MODEL_ORDER, EvaluationReport, ModelEntry, TrainingReport
from distillery.contract.summaries import EvaluateSummary, FailureReason
from distillery.evaluation import benchmarks, export, measure, metrics, scoring
from distillery.evaluation import report as reports
from distillery.evaluation.answers import (
    EvaluationFailed,
    ModelRun,
    Server,
    max_tokens,
    run_from_records,
    serve_local,
    teacher_records,
    validation_prompts,
)
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout, generated_fingerprint, resolve_model

# ------------------------------------------------------------------ the report


def model_entry(
    job: DistillationJob,
    run: ModelRun,
    prompts: list[Any],
    teacher: list[str | None] | None,
    model: str | None,
) -> dict[str, Any]:
    """One model's row of the report: task metrics, serving metrics, size."""
    data, evaluation = job.spec.data, job.spec.evaluation
    predictions = [a.text for a in run.answers]
    references = [p.reference for p in prompts]
    entry: dict[str, Any] = {"model": model, "source": run.source}
    entry.update(
        scoring.task_scores(data.task_type, evaluation.metrics, predictions, references, teacher, data.labels)
    )
    entry.update(measure.serving_figures(run))  # every model's latency and throughput: one function
    entry["outputTokens"] = sum(a.output_tokens for a in run.answers)
    entry["peakMemoryBytes"] = run.peak_memory_bytes
    local = Path(model) if model and Path(model).is_dir() else None
    entry["parameters"] = reports.safetensors_parameters(local) if local else None
    entry["sizeBytes"] = reports.directory_bytes(local) if local else None
    entry["answered"] = sum(a.error is None for a in run.answers)
    entry["errors"] = len(run.answers) - entry["answered"]
    if run.benchmarks is not None:
        entry["benchmarks"] = run.benchmarks
    return entry


def build_report(
    job: DistillationJob,
    layout: Layout,
    prompts: list[Any],
    runs: dict[str, ModelRun],
    models: dict[str, str | None],
) -> dict[str, Any]:
    """The whole report from what each model answered (pure but for hashing the files named in lineage)."""
    spec = job.spec
    metric = scoring.task_metric(spec.data.task_type)
    teacher_texts = None
    if "teacher" in runs:
        teacher_texts = [a.text if a.error is None else None for a in runs["teacher"].answers]
    entries = {}
    for name in MODEL_ORDER:
        if name in runs:
            entries[name] = model_entry(
                job, runs[name], prompts, None if name == "teacher" else teacher_texts, models.get(name)
            )
    score = lambda name: (entries.get(name) or {}).get("score")  # noqa: E731
    retention = scoring.retention(score("student"), score("teacher"))
    student = entries.get("student") or {}
    parsed = {name: ModelEntry.model_validate(entry) for name, entry in entries.items()}
    gate = scoring.apply_gate(
        spec.evaluation.gate,
        metric,
        score("student"),
        retention,
        student.get("latencyP95Ms"),
        benchmarks.gate_scores(parsed),
    )
    notes = [note for run in runs.values() for note in run.notes]
    return {
        "fingerprints": None,
        "job": job.metadata.name or "job",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "taskType": spec.data.task_type.value,
        "metric": metric,
        "samples": len(prompts),
        "withReference": sum(p.reference is not None for p in prompts),
        "maxTokens": max_tokens(job),
        "concurrency": spec.evaluation.concurrency,
        "measurement": measure.measurement(job, runs, len(prompts)),
        "models": entries,
        "retention": retention,
        "improvement": scoring.improvement(score("student"), score("baseline")),
        "gate": {"passed": gate.passed, "reason": gate.reason, "checks": gate.checks},
        "notes": notes,
        "dataCleaning": data_cleaning(job, layout),
        "lineage": reports.lineage(job, layout),
        "benchmarks": benchmarks.report_section(job, entries),
    }


def teacher_run_from_records(job: DistillationJob, layout: Layout, prompts: list[Any]) -> ModelRun:
    """The teacher's answers from generation's records (not comparable: other load, other settings)."""
    records = teacher_records(layout, job.spec.generation.shards)
    if not records:
        raise EvaluationFailed(
            f"no teacher answers under {layout.generated('validation')} and no teacher to serve or ask; "
            "run generation with data.validation set, or give the teacher's URL"
        )
    return run_from_records(prompts, records)


def data_cleaning(job: DistillationJob, layout: Layout) -> dict[str, int]:
    """What was kept out of the teacher data: decontaminated prompts, rejected answers, cross-shard duplicates."""
    from distillery.contract.shards import stored_summary
    from distillery.contract.summaries import generation_totals

    shards = [stored_summary(job, layout, k) for k in range(job.spec.generation.shards)]
    totals = generation_totals(s for s in shards if s is not None)
    training = TrainingReport.read(layout.training_report)
    duplicates = training.duplicates if training is not None else 0
    return {"decontaminated": totals.decontaminated, "rejected": totals.rejected, "duplicates": duplicates}


# ------------------------------------------------------------------ fingerprints and re-judging


def stage_fingerprints(job: DistillationJob, layout: Layout) -> dict[str, str | None]:
    """Generation's and training's fingerprints as they left them on storage, and this stage's own."""
    from distillery.datasource import identity

    shards = job.spec.generation.shards
    try:
        generate = generated_fingerprint(layout, "validation", shards) or generated_fingerprint(
            layout, "train", shards
        )
    except ValueError as error:
        raise EvaluationFailed(str(error), FailureReason.stale_data) from None
    training = TrainingReport.read(layout.training_report)
    train = training.fingerprint if training is not None else None  # None: a student trained elsewhere
    data = job.spec.data
    assert data.validation is not None  # validation_prompts refused a job without it
    validation = identity(
        data.validation, root=layout.root, store=job.spec.storage.object_store, field="data.validation"
    )
    own = fingerprints.evaluation(job, {"validation": validation}, train or "untrained")
    return {"generate": generate, "train": train, "evaluate": own}


def stored_report(layout: Layout, fingerprint: str) -> dict[str, Any] | None:
    """The report on storage when it scored exactly this student on this data with these settings."""
    try:
        report = json.loads(layout.evaluation_report.read_text())
        stored = EvaluationReport.model_validate(report)
    except (OSError, ValueError):
        return None
    return report if stored.fingerprints and stored.fingerprints.evaluate == fingerprint else None


def rejudge(job: DistillationJob, report: dict[str, Any]) -> dict[str, Any]:
    """The stored scores judged by the current gate: nothing is served or scored again (pure)."""
    stored = EvaluationReport.of(report)
    student = stored.student
    gate = scoring.apply_gate(
        job.spec.evaluation.gate,
        stored.metric,
        student.score,
        stored.retention,
        student.latency_p95_ms,
        benchmarks.gate_scores(stored.models),
    )
    judged = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        **report,
        "gate": {"passed": gate.passed, "reason": gate.reason, "checks": gate.checks},
        "rejudged": {"at": judged, "previousGate": stored.gate.reason},
    }


def write_answers(path: Path, prompts: list[Any], runs: dict[str, ModelRun]) -> Path:
    """Every model's answer to every prompt beside the reference, for a person checking the scores."""
    with atomic.replacing(path) as handle:
        for index, prompt in enumerate(prompts):
            row = {
                "id": prompt.id,
                "line": prompt.line,
                "prompt": prompt.messages[-1]["content"],
                "reference": prompt.reference,
            }
            for name, run in runs.items():
                answer = run.answers[index]
                row[name] = answer.text if answer.error is None else None
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def finish(job: DistillationJob, layout: Layout, report: dict[str, Any], say: Callable[[str], None]) -> dict:
    """Write the report, then export to `spec.output` when the verdict allows it; returns the report."""
    report["output"] = export.plan(job, report)
    paths = reports.write_report(report, layout.evaluation_report)
    say("report: " + ", ".join(str(p) for p in paths.values()))
    entry = report["output"]
    planned = EvaluationReport.of(report).output
    if planned is None:
        return report
    if not planned.written:
        say(f"not exported to {planned.uri}: {planned.reason}")
        return report
    try:
        entry.update(export.export(job, layout, report))
    except export.ExportFailed as error:
        report["output"] = {**entry, "written": False, "reason": str(error)}
        reports.write_report(report, layout.evaluation_report)
        raise
    reports.write_report(report, layout.evaluation_report)
    done = EvaluationReport.of(report).output
    assert done is not None
    say(f"exported the student, the report and the model card to {done.uri} ({done.files} files)")
    return report


def evaluate_summary(report: EvaluationReport | dict[str, Any], report_path: str) -> EvaluateSummary:
    """The stage's summary: the `EvaluationStatus` the operator copies into status, and where the report is."""
    report = EvaluationReport.of(report)
    scores = {
        name: ModelScore(
            score=entry.score, latency_p50_ms=entry.latency_p50_ms, latency_p95_ms=entry.latency_p95_ms
        )
        for name, entry in report.models.items()
    }
    status = EvaluationStatus(
        metric=report.metric,
        retention=report.retention,
        gate_passed=report.gate.passed,
        gate_reason=report.gate.reason,
        benchmarks=benchmarks.status_rows(
            dict(report.compared()), report.benchmarks.retention if report.benchmarks else {}
        ),
        **scores,
    )
    output = report.output
    return EvaluateSummary(
        evaluation=status,
        requests=report.live_requests,
        report=report_path,
        fingerprint=report.fingerprints.evaluate if report.fingerprints else None,
        output=output.uri if output and output.written else None,
    )


def live_requests(report: EvaluationReport | dict[str, Any]) -> int:
    """Answers asked of the models served or called for this evaluation (not the teacher scored from records)."""
    return EvaluationReport.of(report).live_requests


def _publish_metrics(report: EvaluationReport | dict[str, Any]) -> None:
    for name, entry in EvaluationReport.of(report).models.items():
        if entry.score is not None:
            metrics.EVAL_SCORE.labels(name).set(entry.score)
        for percentile, value in (("50", entry.latency_p50_ms), ("95", entry.latency_p95_ms)):
            if value is not None:
                metrics.EVAL_LATENCY.labels(name, percentile).set(value / 1000)
        if entry.output_tokens_per_second is not None:
            metrics.EVAL_THROUGHPUT.labels(name).set(entry.output_tokens_per_second)
        for task, result in entry.benchmarks.items():
            for metric, value in result.metrics.items():
                if value.value is not None:
                    metrics.EVAL_BENCHMARK_SCORE.labels(name, task, metric).set(value.value)


# ------------------------------------------------------------------ the stage


def evaluate_job(
    job: DistillationJob,
    storage_root: Path,
    *,
    teacher: TeacherConnection | None = None,
    serve: Server = serve_local,
    say: Callable[[str], None] = lambda message: print(f"evaluate: {message}", file=sys.stderr, flush=True),
    cost: Callable[[dict[str, Any]], CostStatus] | None = None,
    teacher_from_records: bool = False,
) -> dict[str, Any]:
    """Score every model in `evaluation.compare`, write the report, apply the gate; returns the report.

    `teacher`: measure the teacher live at this connection; None serves `teacher.model` like the
    others (or asks `teacher.endpoint`), or with `teacher_from_records` scores it from generation's
    records. A `teacher` with a `server_pid` is a server on this machine started with this evaluation's
    vLLM settings (`distillery run` keeps its generation teacher): it is measured as served. `serve(job, layout, name, model)` serves a compared model (a local vLLM by default;
    tests may pass an already running server). `cost(report)`: what the job cost,
    this evaluation included, for the report's cost section.
    """
    root = Path(storage_root)
    layout = Layout.of(job, root)
    spec = job.spec
    compare = spec.evaluation.compare
    prompts = validation_prompts(job, layout)
    prints = stage_fingerprints(job, layout)
    previous = stored_report(layout, prints["evaluate"])
    if previous is not None:
        say(
            "the report on storage scored this student on this data with these settings: re-judging its "
            "scores with the current gate (nothing is served again)"
        )
        report = finish(job, layout, rejudge(job, previous), say)
        _publish_metrics(report)
        return report
    say(f"{len(prompts)} validation prompts, comparing {', '.join(c for c in MODEL_ORDER if c in compare)}")
    models: dict[str, str | None] = {
        "student": str(layout.student),
        "baseline": resolve_model(root, spec.student.model),
        "teacher": resolve_model(root, spec.teacher.model) if spec.teacher.model else None,
    }
    if "student" in compare and not (layout.student / "config.json").exists():
        raise EvaluationFailed(f"no trained student at {layout.student}; run the train stage first")

    metrics.EVAL_MODELS_TOTAL.set(len(compare))
    metrics.EVAL_MODELS_DONE.set(0)
    served = {name: models[name] for name in ("teacher", "baseline", "student") if name in compare}
    live: dict[str, tuple[TeacherConnection, int | None]] = {}
    records: ModelRun | None = None
    if "teacher" in compare:
        if teacher is None and spec.teacher.endpoint is not None:
            from distillery.serving.client import teacher_connection

            teacher = teacher_connection(spec.teacher)
        if teacher is not None:
            kept = teacher.server_pid is not None
            how = "measuring the server kept from generation (the same settings)" if kept else "asking"
            say(f"teacher: {how}: {teacher.model} at {teacher.base_url}")
            live["teacher"] = (teacher, teacher.server_pid)
            models["teacher"] = models["teacher"] or teacher.model
            del served["teacher"]
        elif teacher_from_records or not models["teacher"]:
            records = teacher_run_from_records(job, layout, prompts)
            del served["teacher"]
            say("teacher: scored from its generation records (its figures are not comparable)")
    started = time.monotonic()
    bench = benchmarks.runner(job, root, layout.work, say)
    runs = measure.measure_models(
        job,
        layout,
        serve,
        served,  # type: ignore[arg-type]
        live,
        prompts,
        say,
        benchmark=bench,
        tokenizers={"teacher": models["teacher"]} if models["teacher"] else None,
    )
    if records is not None:
        runs["teacher"] = records
    runs = {name: runs[name] for name in MODEL_ORDER if name in runs}
    metrics.EVAL_MODELS_DONE.set(len(runs))
    say(f"{', '.join(runs)} measured in {time.monotonic() - started:.0f}s (server starts included)")

    report = build_report(job, layout, prompts, runs, models)
    report["fingerprints"] = prints
    write_answers(layout.evaluation_report.with_name("evaluation-answers.jsonl"), prompts, runs)
    if cost is not None:
        report["cost"] = cost(report).model_dump(mode="json", by_alias=True, exclude_none=True)
    report = finish(job, layout, report, say)
    _publish_metrics(report)
    return report
