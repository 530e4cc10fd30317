"""What the operator sees of a job's children, reduced to what the phase machine needs.

Pure functions from the raw API objects (dicts) to small frozen records; the pods'
termination messages (each stage's JSON summary) are read tolerantly: a missing or
malformed summary is skipped, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from distillery.api import EvaluationStatus

_EVALUATION_FIELDS = {field.alias for field in EvaluationStatus.model_fields.values()}

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
    if isinstance(value, dict):  # rejected responses by reason
        numbers = [_number(v) for v in value.values()]
        return sum(n for n in numbers if n is not None)
    return None


# The keys each stage's summary uses (see the stages' `summary`/`status_summary`).
GENERATION_TOTALS = {"records": "records", "tokens": "output_tokens", "rejected": "rejected"}


def generation_totals(summaries: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """Records, output tokens and rejected responses summed over the finished shards."""
    totals = dict.fromkeys(GENERATION_TOTALS, 0)
    for summary in summaries:
        for total, key in GENERATION_TOTALS.items():
            value = _number(summary.get(key))
            if value is not None:
                totals[total] += int(value)
    return totals


def training_result(summaries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    if not summaries:
        return {}
    summary = summaries[-1]
    out = {key: _number(summary.get(key)) for key in ("train_loss", "validation_loss", "step", "epoch")}
    out["student"] = summary.get("student")
    return {k: v for k, v in out.items() if v is not None}


def evaluation_result(summaries: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Scores, retention, the gate and the report path, from the evaluator's summary.

    The evaluator writes `EvaluationStatus` fields (camelCase) plus `report`, so the
    status model itself parses it; a summary it cannot parse reads as no result.
    """
    if not summaries:
        return {}
    summary = summaries[-1]
    fields = {k: v for k, v in summary.items() if k in _EVALUATION_FIELDS}
    try:
        parsed = EvaluationStatus.model_validate(fields)
    except ValidationError:
        return {}
    scores = {
        model: score.model_dump(by_alias=True, exclude_none=True)
        for model in ("teacher", "baseline", "student")
        if (score := getattr(parsed, model)) is not None
    }
    out = {
        "metric": parsed.metric,
        "scores": scores,
        "retention": parsed.retention,
        "gate_passed": parsed.gate_passed,
        "gate_reason": parsed.gate_reason,
        "report": summary.get("report"),
    }
    return {k: v for k, v in out.items() if v is not None}
