"""The quality benchmark's rows and tables: one row per (task, method, seed) run, mean and spread per method."""

from __future__ import annotations

import os
import statistics


def load_average() -> str:
    """The 1-minute load average, printed beside every figure (the machine is shared)."""
    return f"load {os.getloadavg()[0]:.1f}"


def run_row(run: dict, evaluated: dict, teacher: dict, generation: dict) -> dict:
    """One run's figures: the student's score and latency, retention against the live teacher, the budgets."""
    student = evaluated["models"]["student"]
    baseline = evaluated["models"].get("baseline") or {}
    summary = run["summary"]
    return {
        "task": run["task"],
        "method": run["method"],
        "seed": run["seed"],
        "score": student.get("score"),
        "baseline": baseline.get("score"),
        "retention": (student.get("score") or 0.0) / teacher["score"] if teacher["score"] else None,
        "p50_ms": student.get("latencyP50Ms"),
        "p95_ms": student.get("latencyP95Ms"),
        "parameters": student.get("parameters"),
        "updates": summary.get("step"),
        "on_policy_updates": summary.get("onPolicyUpdates"),
        "train_loss": summary.get("trainLoss"),
        "on_policy_loss": summary.get("onPolicyLoss"),
        "teacher_tokens": run["teacher_tokens"],
        "teacher_generation_tokens": run["teacher_generation_tokens"],
        "teacher_grading_tokens": run["teacher_grading_tokens"],
        "generate_s": generation["seconds"],
        "generate_load": generation["load"],
        "train_s": run["train_seconds"],
        "train_load": run["train_load"],
        "evaluate_s": evaluated["evaluate_seconds"],
        "evaluate_load": evaluated["evaluate_load"],
    }


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> list[str]:
    head = (
        f"{'method':9} {'seed':>4} {'score':>6} {'retain':>6} {'p50 ms':>7} {'p95 ms':>7} {'updates':>7} "
        f"{'teacher tok':>11} {'train s':>8} {'eval s':>7}  load (train)"
    )
    out = [head]
    for r in rows:
        out.append(
            f"{r['method']:9} {r['seed']:>4} {_f(r['score'], '.3f'):>6} {_f(r['retention'], '.3f'):>6} "
            f"{_f(r['p50_ms'], '.0f'):>7} {_f(r['p95_ms'], '.0f'):>7} {_f(r['updates'], 'd'):>7} "
            f"{r['teacher_tokens']:>11,} {r['train_s']:>8.0f} {r['evaluate_s']:>7.0f}  {r['train_load']}"
        )
    baseline = next((r["baseline"] for r in rows if r.get("baseline") is not None), None)
    out.append(
        f"baseline (untrained cut): {_f(baseline, '.3f')}; generation {rows[0]['generate_s']:.0f}s "
        f"({rows[0]['generate_load']})"
        if rows
        else "no runs"
    )
    return out


def spread(values: list[float]) -> dict:
    """Mean, min, max and sample standard deviation (0 for one value)."""
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def aggregate(rows: list[dict]) -> list[str]:
    """Per method: score and retention as mean ± sd (min-max) over its seeds."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        scores = [r["score"] for r in rows if r["method"] == method and r["score"] is not None]
        retained = [r["retention"] for r in rows if r["method"] == method and r["retention"] is not None]
        if not scores:
            continue
        s, t = spread(scores), spread(retained)
        out.append(
            f"{method:9} n={s['n']}: score {s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.3f}-{s['max']:.3f}), "
            f"retention {t['mean']:.3f} ± {t['sd']:.3f} ({t['min']:.3f}-{t['max']:.3f})"
        )
    return out
