"""Pure scoring functions of the evaluation stage: task metrics, serving metrics, retention, the gate.

Nothing here does I/O; every function takes plain values and returns plain values, so
each is tested against numbers worked out by hand. BLEU and ROUGE-L come from the
maintained libraries (sacrebleu, rouge-score) so the figures match what papers report;
answer extraction and matching come from `distillery.tasks`, the same code generation
uses to verify the teacher, so "correct" means one thing across the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery import tasks
from distillery.api import BenchmarkGate, GateSpec, TaskType

# The task score of each task type: what the gate, retention and the report's headline use.
CLASSIFICATION_TASKS = (TaskType.nli, TaskType.qa, TaskType.math)


def task_metric(task: TaskType) -> str:
    """Name of the task score: `accuracy` for nli / qa / math (one right answer), else `rougeL`."""
    return "accuracy" if task in CLASSIFICATION_TASKS else "rougeL"


# ------------------------------------------------------------------ task metrics


def accuracy(
    task: TaskType, predictions: Sequence[str], references: Sequence[str | None], labels: Sequence[str]
) -> float | None:
    """Exact-match accuracy after answer extraction, over the records that have a reference.

    None when no record has a reference (nothing to score against).
    """
    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
    if not pairs:
        return None
    return sum(1 for p, r in pairs if tasks.answers_match(task, p, r, list(labels))) / len(pairs)


def bleu(predictions: Sequence[str], references: Sequence[str | None]) -> float | None:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, exponential smoothing off), scaled to 0-1."""
    import sacrebleu

    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
    if not pairs:
        return None
    result = sacrebleu.corpus_bleu([p for p, _ in pairs], [[r for _, r in pairs]])
    return result.score / 100.0


def rouge_l(predictions: Sequence[str], references: Sequence[str | None]) -> float | None:
    """Mean ROUGE-L F-measure (rouge-score, Porter stemming), 0-1."""
    from rouge_score import rouge_scorer

    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
    if not pairs:
        return None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in pairs) / len(pairs)


def teacher_agreement(
    task: TaskType, predictions: Sequence[str], teacher: Sequence[str | None], labels: Sequence[str]
) -> float | None:
    """How often a model gives the teacher's own answer.

    For nli / qa / math: the fraction whose extracted answers match the teacher's extracted
    answer. For summarization / conversation there is no single answer, so it is the mean
    ROUGE-L against the teacher's text. Records without a teacher answer are left out; a
    response with no extractable answer agrees with nothing.
    """
    if task in CLASSIFICATION_TASKS:
        pairs = [(p, t) for p, t in zip(predictions, teacher, strict=True) if t is not None]
        if not pairs:
            return None
        hits = 0
        for prediction, answer in pairs:
            theirs = tasks.extract_answer(task, answer, list(labels))
            hits += theirs is not None and tasks.extract_answer(task, prediction, list(labels)) == theirs
        return hits / len(pairs)
    return rouge_l(predictions, teacher)


def token_f1(predictions: Sequence[str], references: Sequence[str | None]) -> float | None:
    """SQuAD token F1 of the extracted qa answer against the reference (normalised words), averaged."""
    from collections import Counter

    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
    if not pairs:
        return None
    total = 0.0
    for prediction, reference in pairs:
        answer = (tasks.extract_answer(TaskType.qa, prediction, []) or "").split()
        expected = tasks.normalize_text(reference).split()
        common = sum((Counter(answer) & Counter(expected)).values())
        if common:
            precision, recall = common / len(answer), common / len(expected)
            total += 2 * precision * recall / (precision + recall)
    return total / len(pairs)


def task_scores(
    task: TaskType,
    metrics: Sequence[str],
    predictions: Sequence[str],
    references: Sequence[str | None],
    teacher: Sequence[str | None] | None,
    labels: Sequence[str],
) -> dict[str, float | None]:
    """The task metrics the spec asks for that mean something for this task, plus `score`.

    nli / qa / math have one right answer: accuracy (and token F1 for qa). BLEU and ROUGE-L
    measure overlap with a free text, so they are computed for summarization and conversation
    only (on one-word answers BLEU is 0 by construction). The task metric is always computed.
    """
    out: dict[str, float | None] = {}
    wanted = set(metrics) | {task_metric(task)}
    if task in CLASSIFICATION_TASKS:
        if "accuracy" in wanted:
            out["accuracy"] = accuracy(task, predictions, references, labels)
        if "f1" in wanted and task is TaskType.qa:
            out["f1"] = token_f1(predictions, references)
    else:
        if "bleu" in wanted:
            out["bleu"] = bleu(predictions, references)
        if "rougeL" in wanted:
            out["rougeL"] = rouge_l(predictions, references)
    if "teacherAgreement" in wanted and teacher is not None:
        out["teacherAgreement"] = teacher_agreement(task, predictions, teacher, labels)
    out["score"] = out.get(task_metric(task))
    return out


# ------------------------------------------------------------------ serving metrics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def serving_metrics(
    latencies_ms: Sequence[float], output_tokens: int, wall_seconds: float | None
) -> dict[str, float | None]:
    """Latency p50 / p95 / mean per response, and output tokens and responses per second of wall time."""
    rate = wall_seconds is not None and wall_seconds > 0
    return {
        "latencyP50Ms": percentile(latencies_ms, 50),
        "latencyP95Ms": percentile(latencies_ms, 95),
        "latencyMeanMs": sum(latencies_ms) / len(latencies_ms) if latencies_ms else None,
        "outputTokensPerSecond": output_tokens / wall_seconds if rate else None,
        "responsesPerSecond": len(latencies_ms) / wall_seconds if rate else None,
    }


# ------------------------------------------------------------------ comparison and gate


def retention(student: float | None, teacher: float | None) -> float | None:
    """Student score / teacher score; None when either is unknown or the teacher scored 0."""
    if student is None or teacher is None or teacher <= 0:
        return None
    return student / teacher


def improvement(student: float | None, baseline: float | None) -> dict[str, float | None]:
    """How much distillation moved the score: absolute difference and relative to the baseline."""
    if student is None or baseline is None:
        return {"absolute": None, "relative": None}
    return {
        "absolute": student - baseline,
        "relative": (student - baseline) / baseline if baseline > 0 else None,
    }


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)


# model -> task -> metric -> value: the lm-eval scores the gate reads (from the report's model entries).
BenchmarkScores = dict[str, dict[str, dict[str, float | None]]]


def benchmark_check(floor: BenchmarkGate, scores: BenchmarkScores) -> dict[str, Any]:
    """One `gate.benchmarks` entry against the student's (and for retention the teacher's) score."""
    student = scores.get("student", {}).get(floor.task, {}).get(floor.metric)
    what = f"{floor.task} {floor.metric}"
    if floor.min_score is not None:
        name, threshold, value = "minScore", floor.min_score, student
        subject = what
    else:
        teacher = scores.get("teacher", {}).get(floor.task, {}).get(floor.metric)
        name, threshold = "minRetention", floor.min_retention
        value = student / teacher if student is not None and teacher else None
        subject = f"{what} retention"
    assert threshold is not None  # the model requires exactly one floor
    ok = value is not None and value >= threshold
    text = f"{subject} {_fmt(value)} {'>=' if ok else '<'} {name} {threshold:g}"
    if value is None:
        text += f" (no score for metric {floor.metric} of task {floor.task}"
        text += ")" if floor.min_score is not None else ", or the teacher scored 0)"
    return {
        "name": f"benchmarks.{floor.task}.{floor.metric}.{name}",
        "threshold": threshold,
        "value": value,
        "passed": ok,
        "text": text,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:.4g}{unit}"


def apply_gate(
    gate: GateSpec,
    metric: str,
    score: float | None,
    retention_: float | None,
    latency_p95_ms: float | None,
    benchmarks: BenchmarkScores | None = None,
) -> GateResult:
    """Check the student against each threshold the spec sets; an unknown value fails its check.

    The reason names every failed check with the value and the threshold, e.g.
    `retention 0.42 < minRetention 0.9`; when all pass it lists what was checked.
    `benchmarks` gives, per model, task and metric, the lm-eval scores `gate.benchmarks` floors.
    """
    checks = []
    if gate.min_retention is not None:
        ok = retention_ is not None and retention_ >= gate.min_retention
        checks.append(
            {
                "name": "minRetention",
                "threshold": gate.min_retention,
                "value": retention_,
                "passed": ok,
                "text": f"retention {_fmt(retention_)} {'>=' if ok else '<'} minRetention {gate.min_retention:g}"
                if retention_ is not None
                else "retention unknown (no teacher score, or the teacher scored 0)",
            }
        )
    if gate.min_score is not None:
        ok = score is not None and score >= gate.min_score
        checks.append(
            {
                "name": "minScore",
                "threshold": gate.min_score,
                "value": score,
                "passed": ok,
                "text": f"{metric} {_fmt(score)} {'>=' if ok else '<'} minScore {gate.min_score:g}",
            }
        )
    if gate.max_latency_ms is not None:
        ok = latency_p95_ms is not None and latency_p95_ms <= gate.max_latency_ms
        checks.append(
            {
                "name": "maxLatencyMs",
                "threshold": gate.max_latency_ms,
                "value": latency_p95_ms,
                "passed": ok,
                "text": f"p95 latency {_fmt(latency_p95_ms, ' ms')} {'<=' if ok else '>'} maxLatencyMs {gate.max_latency_ms:g}",
            }
        )
    checks += [benchmark_check(floor, benchmarks or {}) for floor in gate.benchmarks]
    failed = [c["text"] for c in checks if not c["passed"]]
    if failed:
        return GateResult(False, "quality gate failed: " + "; ".join(failed), checks)
    if not checks:
        return GateResult(True, "no quality gate set (evaluation.gate is empty)", checks)
    return GateResult(True, "quality gate passed: " + "; ".join(c["text"] for c in checks), checks)
