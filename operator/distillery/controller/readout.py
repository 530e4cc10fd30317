"""Progress a person can read: percent, ETA and the one-line summary of `kubectl get dj`. Pure.

The ETA is the work left at the rate since the stage started (work done / time since the stage
started), so one slow request or one fast batch does not swing it. Figures go to status only when
they moved as a person sees them (`moved`): the whole percent, the ETA's minute, a finished shard.
Status writes are API traffic and watch events; a scrape every 15 s must not cause one each.
"""

from __future__ import annotations

import math
from typing import Any

from distillery.api import Progress

# The fields that decide whether a running stage's figures are worth a status write.
MOVES = ("percent", "eta_seconds", "shards_done", "prompts_total", "steps_total", "models_done")
# Set (to a value or to empty) by every running stage, so one stage's figures never linger in the next's.
PER_STAGE = ("percent", "eta_seconds", "tokens_per_second")


def percent(done: float | None, total: float | None) -> int | None:
    """The whole percent done, rounded down (100 only when all is done); None without a total."""
    if done is None or not total or total <= 0:
        return None
    return max(0, min(100, math.floor(100 * done / total)))


def eta_seconds(done: float | None, total: float | None, elapsed: float | None) -> int | None:
    """Seconds left at the rate since the stage started, rounded to whole minutes.

    None until a rate is known (nothing done yet, no total, no time passed). More work done in the
    same time never gives a later ETA, and at a steady rate the ETA only falls.
    """
    if done is None or total is None or elapsed is None or done <= 0 or elapsed <= 0 or total <= 0:
        return None
    left = max(0.0, total - done)
    return int(round(left * elapsed / done / 60) * 60)


def duration_text(seconds: float) -> str:
    """`<1m`, `12m`, `1h05m`, `2d03h`."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "<1m"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def count_text(n: float) -> str:
    """Exact below 10,000, then three figures: `1850`, `12.3k`, `123k`, `1.2M`."""
    if n < 10_000:
        return f"{int(n)}"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:.0f}{unit}"
    return f"{int(n)}"  # pragma: no cover


def _eta(seconds: int | None) -> list[str]:
    return [f"ETA {duration_text(seconds)}"] if seconds is not None else []


def generation(
    shards: int,
    finished_shards: int,
    finished_prompts: int,
    live: dict[str, Any],
    elapsed: float | None,
) -> dict[str, Any]:
    """Generation's Progress fields while it runs: the finished shards' figures (from their summaries)
    plus the running shards' (summed from their /metrics, `live`), and the summary line."""
    reporting = int(live.get("shards_reporting", 0))  # running shards that have counted their prompts
    done = finished_prompts + int(live.get("prompts_done", 0))
    known = finished_prompts + int(live.get("prompts_total", 0))
    counted = finished_shards + reporting
    total = known if counted >= shards else None
    # Until every shard has counted its prompts, the total is estimated from those that have (shards
    # own every N-th record, so they are the same size give or take one).
    estimate = total if total is not None else (known * shards / counted if counted and known else None)
    if estimate is not None:
        done = min(done, int(estimate))
    fields: dict[str, Any] = {
        "percent": percent(done, estimate),
        "eta_seconds": eta_seconds(done, estimate, elapsed),
        "tokens_per_second": _rounded(live.get("tokens_per_second")),
        "prompts_done": done if counted else None,
        "prompts_total": total,
    }
    parts = [f"{count_text(done)}/{count_text(total)} prompts" if total else f"{count_text(done)} prompts"]
    if shards > 1:
        parts.append(f"{finished_shards}/{shards} shards")
    parts += _eta(fields["eta_seconds"])
    if fields["percent"] is None:
        summary = f"generate counting prompts ({finished_shards}/{shards} shards done)"
    else:
        approx = "" if total is not None else "~"
        summary = f"generate {approx}{fields['percent']}% ({', '.join(parts)})"
    return {**fields, "summary": summary}


def training(progress: Progress, epochs: int, elapsed: float | None) -> dict[str, Any]:
    """Training's percent, ETA and summary from its pod's figures (updates if it reports their total,
    else epochs)."""
    if progress.steps_total and progress.step is not None:
        done, total = float(progress.step), float(progress.steps_total)
    elif progress.epoch is not None:
        done, total = progress.epoch, float(epochs)
    else:
        return {"percent": None, "eta_seconds": None, "summary": "train starting"}
    fields: dict[str, Any] = {
        "percent": percent(done, total),
        "eta_seconds": eta_seconds(done, total, elapsed),
    }
    parts = []
    if progress.steps_total and progress.step is not None:
        parts.append(f"step {progress.step}/{progress.steps_total}")
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch:.2f}/{epochs}")
    if progress.train_loss is not None:
        parts.append(f"loss {progress.train_loss:.3g}")
    parts += _eta(fields["eta_seconds"])
    return {**fields, "summary": f"train {fields['percent']}% ({', '.join(parts)})"}


def evaluation(progress: Progress, elapsed: float | None) -> dict[str, Any]:
    """Evaluation's percent, ETA and summary: models scored of those it compares."""
    done, total = progress.models_done, progress.models_total
    if not total:
        return {"percent": None, "eta_seconds": None, "summary": "evaluate running"}
    fields: dict[str, Any] = {
        "percent": percent(done, total),
        "eta_seconds": eta_seconds(done, total, elapsed),
    }
    parts = [f"{done or 0}/{total} models", *_eta(fields["eta_seconds"])]
    return {**fields, "summary": f"evaluate {fields['percent']}% ({', '.join(parts)})"}


def moved(old: Progress | None, new: Progress) -> bool:
    """Whether a running stage's new figures differ from status's where a person would see it."""
    if old is None:
        return True
    return any(getattr(old, name) != getattr(new, name) for name in MOVES)


def _rounded(value: Any) -> float | None:
    """Tokens per second to three figures: it goes to status only with a move (`moved`), as it stood then."""
    if value is None:
        return None
    return float(f"{float(value):.3g}")
