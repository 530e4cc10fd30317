"""Public benchmarks: EleutherAI's lm-evaluation-harness run against each compared model's vLLM server.

While the evaluation serves a model (teacher, baseline, student, one at a time), `run_benchmarks`
calls lm-eval's `simple_evaluate` with its own OpenAI-compatible backend `local-completions`
pointed at that server: loglikelihood and multiple-choice tasks send `echo` + `logprobs` and read
the prompt's log-probabilities back (vLLM's completions API returns them); generate_until tasks
read the greedy completion. The tokenizer is the served model's own directory (the harness counts
context tokens with it), so nothing is fetched from the hub.

Task definitions come from lm-eval's built-in registry and from `evaluation.benchmarkTasks`
(`distillery.benchmark_tasks`, which the check stage uses to load every task before any GPU is held).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from distillery.api import BenchmarkSpec, DistillationJob
from distillery.benchmark_tasks import BenchmarkFailed, inside, task_directory, task_manager
from distillery.contract.report import MODEL_ORDER, BenchmarkRun, Benchmarks, EvaluationReport, ModelEntry
from distillery.contract.summaries import FailureReason, StageFailed
from distillery.serving.client import TeacherConnection

# lm-eval writes each metric as `name,filter` (e.g. `acc,none`, `exact_match,strip`); its stderr as
# `name_stderr,filter`. The report keys a metric by its name alone, or `name,filter` for a filter
# other than `none` (a task may score one metric under several filters).
_NO_FILTER = "none"
# Requests in flight per model: the harness's own batching over the server (the server batches further).
CONCURRENT_REQUESTS = 8
# The harness retries a failed request this many times before it gives up on the task.
MAX_RETRIES = 3


# ------------------------------------------------------------------ running and reading the scores


def run_benchmarks(
    benchmarks: list[BenchmarkSpec],
    directory: Path | None,
    base_url: str,
    model: str,
    tokenizer: str,
    api_key: str | None = None,
    manager: Any = None,
) -> dict[str, dict[str, Any]]:
    """Every listed task against one served model; returns `scores(results)` of lm-eval's results.

    `base_url` ends in /v1 (an OpenAI-compatible server); `model` is its served name; `tokenizer`
    a local directory (or hub id) of the model's tokenizer; `api_key` is sent as a bearer token
    (an external teacher endpoint); `manager` a `task_manager(directory)` to reuse (indexing lm-eval's
    thousands of task YAMLs takes seconds). Tasks with the same fewshot and limit
    run in one `simple_evaluate` call.
    """
    from lm_eval import simple_evaluate

    manager = manager or task_manager(directory)
    # Absolute before lm-eval runs inside the task directory (a relative path would then miss it).
    if Path(tokenizer).exists():
        tokenizer = str(Path(tokenizer).resolve())
    args = {
        "base_url": base_url.rstrip("/") + "/completions",
        "model": model,
        "tokenizer": tokenizer,
        "tokenizer_backend": "huggingface",
        "num_concurrent": CONCURRENT_REQUESTS,
        "max_retries": MAX_RETRIES,
    }
    if api_key:
        args["header"] = {"Authorization": f"Bearer {api_key}"}
    found: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[int, int | None], list[str]] = {}
    for benchmark in benchmarks:
        groups.setdefault((benchmark.num_fewshot, benchmark.limit), []).append(benchmark.task)
    for (fewshot, limit), tasks in groups.items():
        with inside(directory):
            results = simple_evaluate(
                model="local-completions",
                model_args=args,
                tasks=tasks,
                num_fewshot=fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
        if results is None:
            raise BenchmarkFailed(f"lm-eval returned no results for {', '.join(tasks)}")
        found.update(scores(results, tasks))
    return found


def scores(results: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """Each task's metrics from lm-eval's results (pure): `{task: {"samples": n, "metrics": {metric:
    {"value": v, "stderr": s}}}}`; stderr is None where lm-eval gives none (one sample, or a metric without)."""
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        row = results.get("results", {}).get(task)
        if row is None:
            raise BenchmarkFailed(f"{task}: lm-eval's results have no entry for this task")
        metrics: dict[str, dict[str, float | None]] = {}
        for key, value in row.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            name, filter_ = key.split(",", 1)
            label = name if filter_ == _NO_FILTER else f"{name},{filter_}"
            stderr = row.get(f"{name}_stderr,{filter_}")
            metrics[label] = {"value": float(value), "stderr": _number(stderr)}
        samples = (results.get("n-samples") or {}).get(task) or {}
        out[task] = {"samples": samples.get("effective"), "metrics": metrics}
    return out


def _number(value: Any) -> float | None:
    """A float, or None for lm-eval's "N/A" and NaN."""
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return None


def retention(student: dict[str, Any] | None, teacher: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per task and metric, student / teacher (pure); left out where either is missing or the teacher scored 0."""
    out: dict[str, dict[str, float]] = {}
    for task, entry in (student or {}).items():
        theirs = (teacher or {}).get(task, {}).get("metrics", {})
        for metric, value in entry.get("metrics", {}).items():
            base = theirs.get(metric, {}).get("value")
            if base and value.get("value") is not None:
                out.setdefault(task, {})[metric] = value["value"] / base
    return out


# ------------------------------------------------------------------ the evaluation stage's side


def runner(
    job: DistillationJob, root: Path, work: Path, say: Callable[[str], None]
) -> Callable[[str, TeacherConnection, str], dict[str, Any]] | None:
    """What `measure.measure_models` calls while each model is served; None when no benchmark is listed."""
    benchmarks = job.spec.evaluation.benchmarks
    if not benchmarks:
        return None
    directory = task_directory(job, root, work / "benchmark-tasks")
    names = ", ".join(b.task for b in benchmarks)
    managers: list[Any] = []  # built on first use, then shared by every model

    def run(name: str, connection: TeacherConnection, tokenizer: str) -> dict[str, Any]:
        say(f"{name}: lm-eval {names}")
        started = time.monotonic()
        try:
            if not managers:
                managers.append(task_manager(directory))
            found = run_benchmarks(
                benchmarks,
                directory,
                connection.base_url,
                connection.model,
                tokenizer,
                connection.api_key,
                managers[0],
            )
        except StageFailed:
            raise
        except Exception as error:  # the harness raises many kinds; the job needs one message
            raise BenchmarkFailed(
                f"{name}: lm-eval failed on {names}: {type(error).__name__}: {error}",
                FailureReason.server_failed,
            ) from error
        say(f"{name}: lm-eval done in {time.monotonic() - started:.0f}s")
        return found

    return run


def harness() -> str:
    """The harness and the backend the scores come from, for the report."""
    try:
        version = metadata.version("lm-eval")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"lm-eval {version}, local-completions against the evaluation's vLLM server"


def report_section(job: DistillationJob, entries: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The report's `benchmarks`: which tasks ran, how, and the student's retention on each (pure but for
    the harness's version); None when no benchmark is listed."""
    listed = job.spec.evaluation.benchmarks
    if not listed:
        return None
    student = (entries.get("student") or {}).get("benchmarks")
    teacher = (entries.get("teacher") or {}).get("benchmarks")
    section = Benchmarks(
        harness=harness(),
        tasks=[BenchmarkRun(task=b.task, num_fewshot=b.num_fewshot, limit=b.limit) for b in listed],
        retention=retention(student, teacher),
    )
    return section.model_dump(mode="json", by_alias=True)


def gate_scores(models: dict[str, ModelEntry]) -> dict[str, dict[str, dict[str, float | None]]]:
    """model -> task -> metric -> value, from the report's entries: what the gate's benchmark floors read."""
    return {
        name: {
            task: {metric: score.value for metric, score in result.metrics.items()}
            for task, result in entry.benchmarks.items()
        }
        for name, entry in models.items()
    }


def status_rows(models: dict[str, ModelEntry], retained: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """status.evaluation.benchmarks: per task, its first metric (lm-eval lists the headline first) per model."""
    rows = []
    tasks = [task for entry in models.values() for task in entry.benchmarks]
    for task in dict.fromkeys(tasks):
        first = next(e.benchmarks[task] for e in models.values() if task in e.benchmarks)
        metric = next(iter(first.metrics), None)
        if metric is None:
            continue
        row: dict[str, Any] = {"task": task, "metric": metric}
        for name, entry in models.items():
            row[name] = entry.benchmark(task, metric)
        row["retention"] = retained.get(task, {}).get(metric)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ renderings


def _value(score: Any) -> str:
    if score is None or score.value is None:
        return "-"
    return f"{score.value:.3f}" + (f" ± {score.stderr:.3f}" if score.stderr is not None else "")


def markdown_lines(report: EvaluationReport) -> list[str]:
    """The report's "Public benchmarks" section: every task and metric per model, ± its standard error."""
    section = report.benchmarks
    if section is None:
        return []
    compared = report.compared()
    out = [
        "## Public benchmarks",
        "",
        f"{section.harness}; every model served with the same settings. Value ± standard error (lm-eval's).",
        "",
        "| task | shots | metric | n | " + " | ".join(name for name, _ in compared) + " | retention |",
        "|" + "---|" * (5 + len(compared)),
    ]
    for run in section.tasks:
        results = [(name, entry.benchmarks.get(run.task)) for name, entry in compared]
        metrics = dict.fromkeys(m for _, r in results if r for m in r.metrics)
        samples = next((r.samples for _, r in results if r and r.samples is not None), None)
        for metric in metrics:
            cells = [_value(r.metrics.get(metric) if r else None) for _, r in results]
            kept = section.retention.get(run.task, {}).get(metric)
            row = [
                run.task,
                str(run.num_fewshot),
                metric,
                str(samples if samples is not None else "-"),
                *cells,
            ]
            out.append("| " + " | ".join([*row, f"{kept:.3f}" if kept is not None else "-"]) + " |")
    return [*out, ""]


def summary_lines(report: EvaluationReport) -> list[str]:
    """One line per task for the end of `distillery run`: its first metric per model, and retention."""
    if report.benchmarks is None:
        return []
    rows = status_rows(dict(report.compared()), report.benchmarks.retention)
    lines = []
    for row in rows:
        figures = "   ".join(f"{name} {row[name]:.3f}" for name in MODEL_ORDER if row.get(name) is not None)
        kept = f"   retention {row['retention']:.3f}" if row.get("retention") is not None else ""
        lines.append(f"  benchmark {row['task']} {row['metric']}: {figures}{kept}")
    return lines
