"""Quality benchmark v3's tables: per model the task score and each public benchmark (value, stderr, N,
retention against the teacher), per method the mean and spread over seeds, and the cost of each stage.

Pure: every function takes the evaluation reports' model entries (as `EvaluationReport` writes them, by
alias) and the runs' figures, and returns rows or lines (tests/unit/test_quality_public.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from distillery.evaluation.scoring import retention  # the report's own: one definition of retention


def benchmark_score(entry: Mapping, task: str, metric: str) -> tuple[float | None, float | None, int | None]:
    """(value, stderr, documents) of one lm-eval metric in a report's model entry; Nones when absent."""
    result = (entry.get("benchmarks") or {}).get(task) or {}
    score = (result.get("metrics") or {}).get(metric) or {}
    return score.get("value"), score.get("stderr"), result.get("samples")


def model_row(
    name: str, entry: Mapping, teacher: Mapping, benchmarks: Mapping[str, str], run: Mapping
) -> dict:
    """One model's figures. `benchmarks` maps lm-eval task -> the metric reported (the published one);
    `run` holds a student's training figures (empty for the teacher and the baseline)."""
    row = {
        "model": name,
        "method": run.get("method", name),
        "seed": run.get("seed"),
        "task_score": entry.get("score"),
        "task_retention": retention(entry.get("score"), teacher.get("score")),
        "benchmarks": {},
    }
    for task, metric in benchmarks.items():
        value, stderr, n = benchmark_score(entry, task, metric)
        row["benchmarks"][task] = {
            "metric": metric,
            "value": value,
            "stderr": stderr,
            "n": n,
            "retention": retention(value, benchmark_score(teacher, task, metric)[0]),
        }
    summary = run.get("summary") or {}
    row.update(
        train_loss=summary.get("trainLoss"),
        on_policy_loss=summary.get("onPolicyLoss"),
        updates=summary.get("step"),
        teacher_tokens=run.get("teacher_tokens"),
        train_s=run.get("train_seconds"),
        train_cpu_s=run.get("train_cpu_seconds"),
        train_load=run.get("train_load"),
    )
    return row


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: Sequence[Mapping], benchmarks: Mapping[str, str]) -> list[str]:
    """A Markdown table, one line per model: task score and every benchmark as value ± stderr (retention)."""
    head = ["model", "seed", "task score (ret.)"]
    head += [f"{task} {metric} ± se (ret.)" for task, metric in benchmarks.items()]
    head += ["train loss", "teacher tokens", "train s / CPU s (load)"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [
            r["method"],
            _f(r["seed"], "d"),
            f"{_f(r['task_score'], '.3f')} ({_f(r['task_retention'], '.2f')})",
        ]
        for task in benchmarks:
            b = r["benchmarks"][task]
            cells.append(f"{_f(b['value'], '.3f')} ± {_f(b['stderr'], '.3f')} ({_f(b['retention'], '.2f')})")
        cost = (
            "-"
            if r["train_s"] is None
            else f"{r['train_s']:.0f} / {_f(r['train_cpu_s'], '.0f')} ({r['train_load']})"
        )
        cells += [_f(r["train_loss"], ".3f"), _f(r["teacher_tokens"], ",d"), cost]
        out.append("| " + " | ".join(cells) + " |")
    return out


def spread(values: Sequence[float]) -> str:
    """'mean ± sd (min-max)'; sd is the sample standard deviation (0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} ({min(values):.3f}-{max(values):.3f})"


def method_summary(rows: Sequence[Mapping], benchmarks: Mapping[str, str]) -> list[str]:
    """Per training method (students only): retention on the task and each benchmark over its seeds, and
    the mean public-benchmark retention the headline compares against the 90 % goal."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["seed"] is not None):
        mine = [r for r in rows if r["method"] == method and r["seed"] is not None]
        parts = []
        task = [r["task_retention"] for r in mine if r["task_retention"] is not None]
        if task:
            parts.append(f"task {spread(task)}")
        means = []
        for name in benchmarks:
            kept = [r["benchmarks"][name]["retention"] for r in mine]
            kept = [k for k in kept if k is not None]
            if kept:
                parts.append(f"{name} {spread(kept)}")
                means.append(statistics.fmean(kept))
        if means:
            parts.append(f"public mean {statistics.fmean(means):.3f}")
        out.append(f"{method} (n={len(mine)}) retention: " + "; ".join(parts))
    return out


def stage_costs(stages: Mapping[str, Mapping]) -> list[str]:
    """A Markdown table of each stage's wall time and CPU time (user + system of its processes). A span
    named with "(incl." contains other stages (the teacher served while generation and onPolicy run): it is
    shown, and left out of the total so that nothing is counted twice."""
    out = ["| stage | wall s | CPU s | CPU-hours | load at start |", "| --- | ---: | ---: | ---: | --- |"]
    total_wall = total_cpu = 0.0
    for name, cost in stages.items():
        if "(incl." not in name:
            total_wall += cost["wall_s"]
            total_cpu += cost["cpu_s"]
        out.append(
            f"| {name} | {cost['wall_s']:.0f} | {cost['cpu_s']:.0f} | {cost['cpu_s'] / 3600:.3f} | {cost.get('load', '-')} |"
        )
    out.append(f"| total | {total_wall:.0f} | {total_cpu:.0f} | {total_cpu / 3600:.3f} | |")
    return out


def sample_answers(rows: Sequence[Mapping], columns: Sequence[str], count: int, width: int = 70) -> list[str]:
    """The first `count` prompts of `evaluation-answers.jsonl`-style rows with each model's answer, one
    line each, cut to `width` characters."""

    def cut(text) -> str:
        text = " ".join(str(text).split()) if text is not None else "(no answer)"
        return text if len(text) <= width else text[: width - 3] + "..."

    out = []
    for row in rows[:count]:
        out.append(f"- {cut(row['prompt'].splitlines()[0])} (reference: {row.get('reference')})")
        out += [f"  - {name}: {cut(row.get(name))}" for name in columns if name in row]
    return out
