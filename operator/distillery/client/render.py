"""What the plugin prints: the `get` table and the `describe` page, from typed jobs (pure functions)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from distillery.api import DistillationJob

GET_COLUMNS = ("NAME", "PHASE", "PROGRESS", "RETENTION", "COST", "AGE")


def parse_time(value: str | None) -> datetime.datetime | None:
    """An RFC 3339 time of the API (`2026-12-07T17:20:56Z`), timezone-aware; None when empty or unreadable."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """A duration as kubectl prints ages (apimachinery's duration.HumanDuration): `45s`, `3m12s`, `25m`,
    `5h3m`, `20h`, `3d4h`, `12d`, `2y30d`, `9y`."""
    if seconds is None:
        return "<unknown>"
    s = max(int(seconds), 0)
    minutes, hours = s // 60, s // 3600
    days = hours // 24
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def age(value: str | None, now: datetime.datetime) -> str:
    when = parse_time(value)
    return duration((now - when).total_seconds()) if when else "<unknown>"


def _meta(job: DistillationJob, key: str) -> Any:
    return (job.metadata.model_extra or {}).get(key)


def cost(job: DistillationJob) -> str:
    """The price where the operator has a price table (`12.40 USD`), else the GPU-hours (`0.35 GPU-h`)."""
    c = job.status.cost if job.status else None
    if c is None:
        return ""
    if c.price is not None:
        return f"{c.price:.2f} {c.currency or ''}".rstrip()
    return f"{c.gpu_hours:.2f} GPU-h"


def row(job: DistillationJob, now: datetime.datetime) -> list[str]:
    status = job.status
    retention = status.evaluation.retention if status and status.evaluation else None
    return [
        job.metadata.name or "",
        status.phase.value if status and status.phase else "",
        (status.progress.summary if status and status.progress else None) or "",
        "" if retention is None else f"{retention:.3f}",
        cost(job),
        age(_meta(job, "creationTimestamp"), now),
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart, empty cells as `<none>` only when
    kubectl would (never here: an empty cell stays empty)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "   ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def get_table(jobs: Sequence[DistillationJob], now: datetime.datetime) -> str:
    return table(GET_COLUMNS, [row(job, now) for job in jobs])


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in lines)] if lines else [f"{title}:  <none>"]


def describe(job: DistillationJob, events: Sequence[dict[str, Any]], now: datetime.datetime) -> str:
    """The job's page: phase, times, scores, artifacts, stage timings from status.cost, conditions, Events."""
    status = job.status
    started = parse_time(status.start_time) if status else None
    ended = parse_time(status.completion_time) if status else None
    fields = [
        ("Name", job.metadata.name or ""),
        ("Namespace", job.metadata.namespace or ""),
        ("Phase", (status.phase.value if status and status.phase else "") or "<none>"),
        ("Message", (status.message if status else None) or ""),
        ("Progress", (status.progress.summary if status and status.progress else None) or ""),
        (
            "Created",
            f"{_meta(job, 'creationTimestamp') or ''} ({age(_meta(job, 'creationTimestamp'), now)} ago)",
        ),
        ("Started", status.start_time if status and status.start_time else "<not yet>"),
        (
            "Completed",
            f"{status.completion_time} (took {duration((ended - started).total_seconds())})"
            if status and status.completion_time and started and ended
            else (status.completion_time if status and status.completion_time else "<not yet>"),
        ),
        ("Cost", cost(job) or "<none>"),
        ("Suspend", str(job.spec.suspend).lower()),
    ]
    width = max(len(k) for k, _ in fields) + 2
    out = [f"{k + ':':<{width}}{v}".rstrip() for k, v in fields]
    ev = status.evaluation if status else None
    if ev is not None:
        scores = []
        for who in ("teacher", "baseline", "student"):
            score = getattr(ev, who)
            if score is not None:
                p50 = "" if score.latency_p50_ms is None else f", p50 {score.latency_p50_ms:.0f} ms"
                scores.append(f"{who}: {ev.metric or 'score'} {_number(score.score)}{p50}")
        if ev.retention is not None:
            scores.append(f"retention: {ev.retention:.3f}")
        if ev.gate_passed is not None:
            scores.append(
                f"gate: {'passed' if ev.gate_passed else 'failed'}"
                + (f" ({ev.gate_reason})" if ev.gate_reason else "")
            )
        out += _section("Evaluation", scores)
    artifacts = status.artifacts if status else None
    out += _section(
        "Artifacts",
        [f"{k}: {v}" for k, v in (artifacts.model_dump(exclude_none=True) if artifacts else {}).items()],
    )
    stages = status.cost.stages if status and status.cost else {}
    stage_rows = [
        [
            name,
            duration(c.wall_seconds) if c.wall_seconds is not None else "",
            f"{c.pod_seconds:.0f}",
            f"{c.gpu_seconds:.0f}",
        ]
        for name, c in stages.items()
    ]
    out += _section(
        "Stages",
        table(["STAGE", "WALL", "POD-SECONDS", "GPU-SECONDS"], stage_rows).splitlines() if stage_rows else [],
    )
    conditions = [
        [c.type.value, c.status, c.reason, age(c.last_transition_time, now), c.message]
        for c in (status.conditions if status else [])
    ]
    out += _section(
        "Conditions",
        table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], conditions).splitlines() if conditions else [],
    )
    event_rows = [
        [
            e.get("type") or "",
            e.get("reason") or "",
            age(
                e.get("lastTimestamp")
                or e.get("eventTime")
                or (e.get("metadata") or {}).get("creationTimestamp"),
                now,
            ),
            ((e.get("source") or {}).get("component") or e.get("reportingComponent") or ""),
            " ".join((e.get("message") or "").split()),
        ]
        for e in sorted(events, key=_event_time)
    ]
    out += _section(
        "Events",
        table(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], event_rows).splitlines() if event_rows else [],
    )
    return "\n".join(out) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _event_time(event: dict[str, Any]) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
