"""The quality gate's verdict, the last step of the phase machine (`phases.evaluation`). Pure.

The evaluator decides whether its thresholds are met (`evaluation.gate`); this turns its verdict
into the job's final phase, condition and message. A gate that is set but got no verdict fails the
job rather than pass it.
"""

from __future__ import annotations

from distillery.api import ConditionType as C
from distillery.api import EvaluationStatus, Phase, Reason
from distillery.contract.summaries import EvaluateSummary
from distillery.controller.steps import Cond, Step, Walk


def gate(walk: Walk, scores: EvaluationStatus | None) -> Step:
    thresholds = walk.spec.evaluation.gate
    gate_set = any(
        v is not None for v in (thresholds.min_retention, thresholds.min_score, thresholds.max_latency_ms)
    )
    passed = scores.gate_passed if scores is not None and scores.gate_passed is not None else None
    if passed is None and not gate_set:
        passed = True
    reason_text = (scores.gate_reason if scores else None) or ""
    verdict = {"evaluation": scores}
    if passed is None:
        text = "the evaluator reported no gate result, but evaluation.gate is set"
        return walk.step(
            Phase.failed,
            text,
            Cond(C.quality_gate_passed, "False", Reason.no_gate_result, text),
            summary="gate unknown",
            **verdict,
        )
    if not passed:
        text = f"quality gate failed: {reason_text or 'the student did not meet evaluation.gate'}"
        return walk.step(
            Phase.failed,
            text + " (artifacts are kept)",
            Cond(C.quality_gate_passed, "False", Reason.gate_failed, reason_text or text),
            summary="gate failed",
            **verdict,
        )
    message = reason_text or (
        "every gate threshold is met" if gate_set else "evaluation.gate sets no threshold"
    )
    retention = scores.retention if scores else None
    return walk.step(
        Phase.succeeded,
        f"succeeded: the student is at {walk.artifacts['student']}"
        + (f" (retention {retention:.3f})" if retention is not None else ""),
        Cond(C.quality_gate_passed, "True", Reason.gate_passed if gate_set else Reason.no_gate, message),
        summary="done" + (f", retention {retention:.2f}" if retention is not None else ""),
        **verdict,
    )


def scores_line(result: EvaluateSummary | None) -> str:
    scores = result.evaluation if result else None
    if scores is None:
        return "evaluation finished"
    parts = [
        f"{model} {score.score:.3f}"
        for model in ("teacher", "baseline", "student")
        if (score := getattr(scores, model)) is not None and score.score is not None
    ]
    return f"{scores.metric or 'score'}: " + ", ".join(parts) if parts else "evaluation finished"
