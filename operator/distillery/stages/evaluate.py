"""`distillery evaluate`: student vs baseline vs teacher on held-out data, the report and the gate.

    distillery evaluate --job J --storage DIR [--teacher-url URL --teacher-model NAME] [--metrics-port P]

Every compared model answers the same validation prompts (built by `distillery.tasks`, as
generation built them for the teacher) with greedy decoding, through the same client
(`stages.chat`) at the same concurrency, so latency and throughput are comparable:

- student   the distilled model on the job's storage, served by a local vLLM;
- baseline  the student's base model (`student.model`) before distillation, served the same way
            and prompted with the chat template the student was trained with;
- teacher   measured live when --teacher-url is given; otherwise scored from the answers it
            gave to these prompts during generation (the operator scales the teacher away
            after generation), which the report says.

The report goes to `Layout.evaluation_report` (JSON), with Markdown and a PNG of score versus
latency beside it. A failed quality gate exits 1 with the reason; every artifact is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob, EvaluationStatus, ModelScore
from distillery.stages import report as reports
from distillery.stages import scoring
from distillery.stages.teacher import TeacherConnection
from distillery.storage import Layout, resolve_model

PROGRESS_INTERVAL_SECONDS = 10.0
MEMORY_SAMPLE_SECONDS = 0.25
# A model answer is retried like a teacher request, but evaluation wants every model to face
# the same conditions, so few retries and a generous timeout.
REQUEST_TIMEOUT_SECONDS = 300.0
MAX_RETRIES = 2
TEACHER_FROM_RECORDS = "generation records"


class EvaluationFailed(RuntimeError):
    """Evaluation could not score a model (no validation data, a model answering nothing)."""


@dataclass
class Answer:
    text: str = ""
    latency_ms: float | None = None
    output_tokens: int = 0
    error: str | None = None


@dataclass
class ModelRun:
    """What one model did on the validation prompts."""

    name: str
    answers: list[Answer]
    wall_seconds: float | None
    peak_memory_bytes: int | None = None
    source: str = "served"
    notes: list[str] = field(default_factory=list)


def job_name(job: DistillationJob) -> str:
    return job.metadata.name or "job"  # as generation and training name it


# ------------------------------------------------------------------ prompts and the teacher's answers


def validation_prompts(job: DistillationJob, layout: Layout) -> list[Any]:
    """The validation prompts every model answers: generation's own reader, so they match what the teacher saw."""
    from distillery.stages.generate import iter_prompts

    data, evaluation = job.spec.data, job.spec.evaluation
    if data.validation is None:
        raise EvaluationFailed("data.validation is empty: there are no held-out prompts to evaluate on")
    limits = [n for n in (data.max_validation_samples, evaluation.max_samples) if n is not None]
    prompts = list(
        iter_prompts(
            data, layout.input(data.validation), 0, 1, min(limits) if limits else None, "data.validation"
        )
    )
    if not prompts:
        raise EvaluationFailed(f"data.validation ({data.validation}) has no records")
    return prompts


def teacher_records(layout: Layout) -> dict[int, dict]:
    """The teacher's first answer to each validation input line, accepted or rejected by the filters.

    Rejected answers count too: scoring only the accepted ones would hide the teacher's
    mistakes (the verify filter rejects exactly those) and inflate its score.
    """
    from distillery.stages.train_data import read_records

    directory = layout.generated("validation")
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    by_line: dict[int, dict] = {}
    for record in read_records(files):
        if record.get("sample", 0) == 0 and isinstance(record.get("line"), int):
            by_line.setdefault(record["line"], record)
    return by_line


def run_from_records(prompts: list[Any], records: dict[int, dict]) -> ModelRun:
    answers = []
    for prompt in prompts:
        record = records.get(prompt.line)
        if record is None:
            answers.append(Answer(error="no answer in the generation records"))
        else:
            usage = record.get("usage") or {}
            answers.append(
                Answer(record["response"], record.get("latency_ms"), int(usage.get("completion_tokens") or 0))
            )
    missing = sum(a.error is not None for a in answers)
    notes = [
        "the teacher was scored from the answers it gave during generation (it is not served during "
        "evaluation); its latencies were measured under generation's load and sampling settings, and "
        "its throughput and memory are not measured"
    ]
    if missing:
        notes.append(f"{missing} validation prompts have no teacher answer in the generation records")
    return ModelRun("teacher", answers, None, None, TEACHER_FROM_RECORDS, notes)


# ------------------------------------------------------------------ asking a served model


class MemoryWatcher:
    """Samples the resident memory of a process and its children in a thread; `peak` is the largest sum."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int | None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None:
                self.peak = max(self.peak or 0, value)
            self._stop.wait(MEMORY_SAMPLE_SECONDS)

    def __enter__(self) -> MemoryWatcher:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


async def _ask_all(
    connection: TeacherConnection,
    prompts: list[Any],
    params: dict,
    concurrency: int,
    say: Callable[[str], None],
) -> tuple[list[Answer], float]:
    from distillery.stages.chat import ChatClient, RequestFailed

    answers = [Answer() for _ in prompts]
    done = 0

    async def ask(index: int) -> None:
        nonlocal done
        try:
            result = await client.complete(prompts[index].messages, **params)
            choice = result.choices[0]
            answers[index] = Answer(choice.text, result.latency_s * 1000, int(result.completion_tokens))
        except RequestFailed as error:
            answers[index] = Answer(error=str(error))
        done += 1

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            say(f"{done}/{len(prompts)} answered")

    async with ChatClient(
        connection, concurrency=concurrency, timeout=REQUEST_TIMEOUT_SECONDS, max_retries=MAX_RETRIES
    ) as client:
        reporter = asyncio.create_task(progress())
        started = time.monotonic()
        try:
            await asyncio.gather(*(ask(i) for i in range(len(prompts))))
        finally:
            reporter.cancel()
        return answers, time.monotonic() - started


def ask_model(
    name: str,
    connection: TeacherConnection,
    prompts: list[Any],
    job: DistillationJob,
    pid: int | None = None,
    say: Callable[[str], None] = print,
) -> ModelRun:
    """Send every prompt to one served model (greedy, same client and concurrency for all models)."""
    params = {"temperature": 0.0, "max_tokens": max_tokens(job)}
    with MemoryWatcher(pid) as memory:
        answers, wall = asyncio.run(
            _ask_all(
                connection, prompts, params, job.spec.evaluation.concurrency, lambda m: say(f"{name}: {m}")
            )
        )
    errors = [a.error for a in answers if a.error]
    if len(errors) == len(answers):
        raise EvaluationFailed(f"{name}: every request failed, e.g. {errors[0]}")
    run = ModelRun(name, answers, wall, memory.peak, "live" if pid is None else "served")
    if errors:
        run.notes.append(
            f"{name}: {len(errors)} of {len(answers)} requests failed (scored as wrong), e.g. {errors[0]}"
        )
    return run


def max_tokens(job: DistillationJob) -> int:
    return job.spec.evaluation.max_tokens or job.spec.generation.max_tokens


# ------------------------------------------------------------------ serving the student and the baseline


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").exists() or (model_dir / "chat_template.json").exists():
        return True
    config = model_dir / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def serving_args(job: DistillationJob, layout: Layout, model: str) -> list[str]:
    """vLLM arguments for a compared model: `evaluation.extraArgs`, plus the ChatML template
    training falls back to when the base model's tokenizer has none (so the baseline is prompted
    exactly as the student was trained)."""
    from distillery.stages.train_data import FALLBACK_CHAT_TEMPLATE

    args = list(job.spec.evaluation.extra_args)
    model_dir = Path(model)
    if model_dir.is_dir() and not _has_chat_template(model_dir) and "--chat-template" not in args:
        template = layout.work / "logs" / "fallback-chat-template.jinja"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text(FALLBACK_CHAT_TEMPLATE)
        args += ["--chat-template", str(template)]
    return args


@contextlib.contextmanager
def serve_local(
    job: DistillationJob, layout: Layout, name: str, model: str
) -> Iterator[tuple[TeacherConnection, int]]:
    """A compared model served by a local vLLM; yields its connection and the server's pid."""
    from distillery.stages.teacher import local_vllm_server

    with local_vllm_server(
        model,
        name,
        extra_args=serving_args(job, layout, model),
        log_path=layout.work / "logs" / f"evaluate-{name}.log",
        env=cpu_server_env() if job.spec.evaluation.gpus == 0 else None,
    ) as server:
        yield server.connection(), server.process.pid


def cpu_server_env() -> dict[str, str]:
    """vLLM's CPU build reserves VLLM_CPU_KVCACHE_SPACE GiB for its KV cache; evaluation needs
    little, so 1 GiB unless the environment says otherwise."""
    import os

    return {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


Server = Callable[[DistillationJob, Layout, str, str], contextlib.AbstractContextManager]


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
    latencies = [a.latency_ms for a in run.answers if a.latency_ms is not None]
    entry.update(
        scoring.serving_metrics(latencies, sum(a.output_tokens for a in run.answers), run.wall_seconds)
    )
    entry["outputTokens"] = sum(a.output_tokens for a in run.answers)
    entry["peakMemoryBytes"] = run.peak_memory_bytes
    local = Path(model) if model and Path(model).is_dir() else None
    entry["parameters"] = reports.safetensors_parameters(local) if local else None
    entry["sizeBytes"] = reports.directory_bytes(local) if local else None
    entry["answered"] = sum(a.error is None for a in run.answers)
    entry["errors"] = len(run.answers) - entry["answered"]
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
    for name in reports.MODEL_ORDER:
        if name in runs:
            entries[name] = model_entry(
                job, runs[name], prompts, None if name == "teacher" else teacher_texts, models.get(name)
            )
    score = lambda name: (entries.get(name) or {}).get("score")  # noqa: E731
    retention = scoring.retention(score("student"), score("teacher"))
    student = entries.get("student") or {}
    gate = scoring.apply_gate(
        spec.evaluation.gate, metric, score("student"), retention, student.get("latencyP95Ms")
    )
    notes = [note for run in runs.values() for note in run.notes]
    return {
        "job": job_name(job),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "taskType": spec.data.task_type.value,
        "metric": metric,
        "samples": len(prompts),
        "withReference": sum(p.reference is not None for p in prompts),
        "maxTokens": max_tokens(job),
        "concurrency": spec.evaluation.concurrency,
        "models": entries,
        "retention": retention,
        "improvement": scoring.improvement(score("student"), score("baseline")),
        "gate": {"passed": gate.passed, "reason": gate.reason, "checks": gate.checks},
        "notes": notes,
        "lineage": reports.lineage(job, layout),
    }


def write_answers(path: Path, prompts: list[Any], runs: dict[str, ModelRun]) -> Path:
    """Every model's answer to every prompt beside the reference, for a person checking the scores."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for index, prompt in enumerate(prompts):
            row = {"id": prompt.id, "line": prompt.line, "prompt": prompt.messages[-1]["content"],
                   "reference": prompt.reference}  # fmt: skip
            for name, run in runs.items():
                answer = run.answers[index]
                row[name] = answer.text if answer.error is None else None
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def status_summary(report: dict[str, Any], report_path: str) -> dict[str, Any]:
    """The stage's summary: `EvaluationStatus` fields (what the operator copies into status) + the report path."""
    scores = {
        name: ModelScore(
            score=entry.get("score"),
            latency_p50_ms=entry.get("latencyP50Ms"),
            latency_p95_ms=entry.get("latencyP95Ms"),
        )
        for name, entry in report["models"].items()
    }
    status = EvaluationStatus(
        metric=report["metric"],
        retention=report["retention"],
        gate_passed=report["gate"]["passed"],
        gate_reason=report["gate"]["reason"],
        **scores,
    )
    return {
        "stage": "evaluate",
        **status.model_dump(mode="json", by_alias=True, exclude_none=True),
        "report": report_path,
    }


def _publish_metrics(report: dict[str, Any]) -> None:
    from distillery import metrics

    for name, entry in report["models"].items():
        if entry.get("score") is not None:
            metrics.EVAL_SCORE.labels(name).set(entry["score"])
        for percentile in ("50", "95"):
            value = entry.get(f"latencyP{percentile}Ms")
            if value is not None:
                metrics.EVAL_LATENCY.labels(name, percentile).set(value / 1000)
        if entry.get("outputTokensPerSecond") is not None:
            metrics.EVAL_THROUGHPUT.labels(name).set(entry["outputTokensPerSecond"])


# ------------------------------------------------------------------ the stage


def evaluate_job(
    job: DistillationJob,
    storage_root: Path,
    *,
    teacher: TeacherConnection | None = None,
    serve: Server = serve_local,
    say: Callable[[str], None] = lambda message: print(f"evaluate: {message}", file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Score every model in `evaluation.compare`, write the report, apply the gate; returns the report.

    `teacher`: measure the teacher live at this connection; None scores it from the generation
    records. `serve(job, layout, name, model)` serves the student and the baseline (a local vLLM
    by default; tests may pass an already running server).
    """
    root = Path(storage_root)
    layout = Layout(root, job_name(job))
    spec = job.spec
    compare = spec.evaluation.compare
    prompts = validation_prompts(job, layout)
    say(
        f"{len(prompts)} validation prompts, comparing {', '.join(c for c in reports.MODEL_ORDER if c in compare)}"
    )
    models: dict[str, str | None] = {
        "student": str(layout.student),
        "baseline": resolve_model(root, spec.student.model),
        "teacher": resolve_model(root, spec.teacher.model) if spec.teacher.model else None,
    }
    if "student" in compare and not (layout.student / "config.json").exists():
        raise EvaluationFailed(f"no trained student at {layout.student}; run the train stage first")

    runs: dict[str, ModelRun] = {}
    if "teacher" in compare:
        if teacher is not None:
            say(f"teacher: asking {teacher.model} at {teacher.base_url}")
            runs["teacher"] = ask_model("teacher", teacher, prompts, job, None, say)
            models["teacher"] = models["teacher"] or teacher.model
        else:
            records = teacher_records(layout)
            if not records:
                raise EvaluationFailed(
                    f"no teacher answers under {layout.generated('validation')} and no --teacher-url to ask it; "
                    "run generation with data.validation set, or give the teacher's URL"
                )
            runs["teacher"] = run_from_records(prompts, records)
            say("teacher: scored from its generation records")
    for name in ("baseline", "student"):
        if name not in compare:
            continue
        say(f"{name}: serving {models[name]}")
        started = time.monotonic()
        with serve(job, layout, name, models[name]) as (connection, pid):
            runs[name] = ask_model(name, connection, prompts, job, pid, say)
        say(f"{name}: done in {time.monotonic() - started:.0f}s (server start included)")

    report = build_report(job, layout, prompts, runs, models)
    paths = reports.write_report(report, layout.evaluation_report)
    paths["answers"] = write_answers(
        layout.evaluation_report.with_name("evaluation-answers.jsonl"), prompts, runs
    )
    say("report: " + ", ".join(str(p) for p in paths.values()))
    _publish_metrics(report)
    summary = status_summary(report, paths["json"].relative_to(root).as_posix())
    done = layout.stage_done("evaluate")
    reports.write_json_atomic(done, summary)
    return report


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from distillery.cli import add_job_argument

    add_job_argument(parser)
    parser.add_argument("--storage", default=".", metavar="DIR", help="the job's storage root (default: .)")
    parser.add_argument(
        "--teacher-url",
        metavar="URL",
        help="measure the teacher live at this OpenAI base URL (…/v1); default: score it from its generation records",
    )
    parser.add_argument("--teacher-model", metavar="NAME", help="model name to request from --teacher-url")
    parser.add_argument(
        "--gate-exit-code",
        type=int,
        default=1,
        metavar="N",
        help="exit code when the quality gate fails (default 1). The operator passes 0: a failed gate is "
        "a verdict in the summary, not a pod failure for the Job to retry",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="P", help="serve /metrics on P (0: off)"
    )


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distillery.cli import job_from_argument
    from distillery.stages.common import start_metrics_server, write_termination_message
    from distillery.stages.teacher import teacher_connection

    job = job_from_argument(args.job)
    start_metrics_server(args.metrics_port)
    try:
        teacher = None
        if args.teacher_url:
            teacher = teacher_connection(job.spec.teacher, args.teacher_url)
            if args.teacher_model:
                teacher = replace(teacher, model=args.teacher_model)
        report = evaluate_job(job, Path(args.storage), teacher=teacher)
    except (EvaluationFailed, ValueError) as error:
        summary = {"stage": "evaluate", "failed": True, "reason": str(error)}
        print(f"distillery evaluate: {error}", file=sys.stderr)
        print(json.dumps(summary, sort_keys=True))
        write_termination_message(summary)
        return 1
    for line in reports.summary_lines(report):
        print(line)
    layout = Layout(Path(args.storage), job_name(job))
    summary = status_summary(report, layout.evaluation_report.relative_to(layout.root).as_posix())
    print(json.dumps(summary, sort_keys=True))
    write_termination_message(summary)
    return 0 if report["gate"]["passed"] else args.gate_exit_code
