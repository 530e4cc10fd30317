"""What the operator sees of a job's children, reduced to what the phase machine needs.

Pure functions from the raw API objects (dicts) to small frozen records; the pods'
termination messages (each stage's JSON summary) are read tolerantly: a missing or
malformed summary is skipped, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class JobState:
    """A batch/v1 Job of one stage."""

    exists: bool = False
    complete: bool = False
    failed: bool = False
    reason: str = ""  # the Job's Failed condition reason: BackoffLimitExceeded, DeadlineExceeded, ...
    message: str = ""
    suspended: bool = False
    succeeded: int = 0
    active: int = 0
    failed_indexes: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    # Termination messages of the stage's finished containers, newest last; for an Indexed
    # Job only the latest successful one per index.
    summaries: tuple[dict[str, Any], ...] = ()
    # The error a failed pod left (its summary's "error", or the log tail), for the Failed message.
    pod_error: str = ""


@dataclass(frozen=True)
class TeacherState:
    exists: bool = False
    ready: bool = False
    waiting_reason: str = ""  # e.g. ImagePullBackOff, CrashLoopBackOff: shown while it starts


@dataclass(frozen=True)
class Observed:
    teacher: TeacherState = field(default_factory=TeacherState)
    generate: JobState = field(default_factory=JobState)
    train: JobState = field(default_factory=JobState)
    evaluate: JobState = field(default_factory=JobState)
    # The existing claim named by storage.pvc.claimName does not exist (yet).
    claim_missing: bool = False


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in items if isinstance(c, dict) and c.get("status") == "True"}


def parse_summary(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
            "terminated"
        )
        if state:
            return state
    return None


def job_state(job: dict[str, Any] | None, pods: list[dict[str, Any]] = ()) -> JobState:
    if job is None:
        return JobState()
    status = job.get("status") or {}
    conditions = _conditions(job)
    failed = conditions.get("Failed")
    summaries: dict[str, dict[str, Any]] = {}
    pod_error = ""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    for number, pod in enumerate(ordered):
        state = _terminated(pod)
        if state is None:
            continue
        summary = parse_summary(state.get("message"))
        if state.get("exitCode") == 0 and summary is not None:
            annotations = (pod.get("metadata") or {}).get("annotations") or {}
            summaries[annotations.get(INDEX_ANNOTATION, f"pod-{number}")] = summary
        elif state.get("exitCode") not in (None, 0):
            detail = (summary or {}).get("error") if summary else (state.get("message") or "")
            pod_error = str(detail or state.get("reason") or f"exit code {state.get('exitCode')}").strip()[
                -500:
            ]
    return JobState(
        exists=True,
        complete="Complete" in conditions,
        failed=failed is not None,
        reason=(failed or {}).get("reason", ""),
        message=(failed or {}).get("message", ""),
        suspended=bool((job.get("spec") or {}).get("suspend")),
        succeeded=int(status.get("succeeded") or 0),
        active=int(status.get("active") or 0),
        failed_indexes=status.get("failedIndexes") or "",
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        summaries=tuple(summaries[k] for k in sorted(summaries)),
        pod_error=pod_error,
    )


def teacher_state(deployment: dict[str, Any] | None, pods: list[dict[str, Any]] = ()) -> TeacherState:
    if deployment is None:
        return TeacherState()
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0) >= 1
    waiting = ""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            reason = ((status.get("state") or {}).get("waiting") or {}).get("reason")
            if reason and reason != "ContainerCreating":
                waiting = reason
    return TeacherState(exists=True, ready=ready, waiting_reason=waiting)


# ------------------------------------------------------------------ summaries -> numbers


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):  # e.g. rejected by reason, or tokens by direction
        for key in ("completion", "output", "completion_tokens"):
            if key in value:
                return _number(value[key])
        numbers = [_number(v) for v in value.values()]
        return sum(n for n in numbers if n is not None)
    return None


def generation_totals(summaries: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """Records, tokens and rejected responses summed over the finished shards."""
    totals = {"records": 0, "tokens": 0, "rejected": 0}
    for summary in summaries:
        for key in totals:
            value = _number(summary.get(key))
            if value is not None:
                totals[key] += int(value)
    return totals


def _first(summary: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if summary.get(key) is not None:
            return summary[key]
    return None


def training_result(summaries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    if not summaries:
        return {}
    summary = summaries[-1]
    out = {
        "train_loss": _number(_first(summary, "train_loss", "loss")),
        "validation_loss": _number(_first(summary, "validation_loss", "eval_loss")),
        "step": _number(_first(summary, "step", "steps")),
        "epoch": _number(_first(summary, "epoch", "epochs")),
        "student": _first(summary, "student", "output"),
    }
    return {k: v for k, v in out.items() if v is not None}


def evaluation_result(summaries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Scores, retention, the gate and the report path, from the evaluator's summary."""
    if not summaries:
        return {}
    summary = summaries[-1]
    scores: dict[str, dict[str, float]] = {}
    for model, value in (summary.get("scores") or {}).items():
        if isinstance(value, dict):
            entry = {
                "score": _number(_first(value, "score", "task_score")),
                "latencyP50Ms": _number(_first(value, "latency_p50_ms", "latencyP50Ms")),
                "latencyP95Ms": _number(_first(value, "latency_p95_ms", "latencyP95Ms")),
            }
        else:
            entry = {"score": _number(value)}
        scores[model] = {k: v for k, v in entry.items() if v is not None}
    gate = summary.get("gate")
    passed = _first(summary, "gate_passed", "passed")
    reason = summary.get("gate_reason")
    if isinstance(gate, dict):
        passed = gate.get("passed", passed)
        reason = gate.get("reason", reason)
    elif isinstance(gate, bool):
        passed = gate
    out = {
        "metric": summary.get("metric"),
        "scores": scores,
        "retention": _number(summary.get("retention")),
        "gate_passed": passed if isinstance(passed, bool) else None,
        "gate_reason": reason,
        "report": _first(summary, "report", "report_path"),
    }
    return {k: v for k, v in out.items() if v is not None}
