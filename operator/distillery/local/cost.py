"""What `distillery run` has spent before evaluation, for the report's cost (`distillery.contract.cost`).

On a cluster the operator reads the same figures from its children (`controller/costs.py`); here
they come from the stage processes' summaries under `state/` and from the teacher's served time,
which is kept in `state/teacher.spans.json` so a resumed run still counts the teacher of the run
before it. Only what was spent for the current results counts: spans and summaries made for another
fingerprint (a changed spec or inputs) are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from distillery import atomic
from distillery.api import CostStatus, DistillationJob, StageCost
from distillery.contract.cost import TEACHER, job_cost, parse_prices, stage_cost
from distillery.contract.stages import Stage
from distillery.contract.summaries import GenerateSummary, TrainSummary, read_summary
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout


def _spans_path(layout: Layout) -> Path:
    return layout.state / "teacher.spans.json"


def _spans(layout: Layout) -> list[dict]:
    try:
        spans = json.loads(_spans_path(layout).read_text())
    except (OSError, ValueError):
        return []
    return spans if isinstance(spans, list) else []


def record_teacher(layout: Layout, key: str, gpus: int, seconds: float) -> None:
    """One served span of the teacher (ready to stopped), made for the generation fingerprint `key`."""
    spans = [*_spans(layout), {"key": key, "gpus": gpus, "seconds": round(seconds, 2)}]
    atomic.write_json(_spans_path(layout), spans)


def teacher_spent(layout: Layout, key: str) -> StageCost | None:
    spans = [s for s in _spans(layout) if s.get("key") == key]
    if not spans:
        return None
    seconds = sum(float(s.get("seconds", 0)) for s in spans)
    gpus = max(int(s.get("gpus", 0)) for s in spans)
    gpu_seconds = sum(int(s.get("gpus", 0)) * float(s.get("seconds", 0)) for s in spans)
    return StageCost(
        gpus=gpus,
        wall_seconds=round(seconds, 2),
        pod_seconds=round(seconds, 2),
        gpu_seconds=round(gpu_seconds, 2),
    )


def spent_before_evaluation(job: DistillationJob, layout: Layout, keys: dict[str, str]) -> CostStatus:
    """The teacher, the generation shards and training, from what their processes reported."""
    shards = [
        read_summary(layout.stage_summary(Stage.generate, k)) for k in range(job.spec.generation.shards)
    ]
    generated = [
        s for s in shards if isinstance(s, GenerateSummary) and s.fingerprint in (None, keys[Stage.generate])
    ]
    trained = read_summary(layout.stage_summary(Stage.train))
    trained = trained if isinstance(trained, TrainSummary) else None
    stages = {Stage.generate: stage_cost(generated)} if generated else {}
    if trained is not None:
        stages[Stage.train] = stage_cost([trained])
    teacher = teacher_spent(layout, keys[Stage.generate])
    if teacher is not None:
        stages = {TEACHER: teacher, **stages}
    return job_cost(stages, generated=generated, trained=trained)


class Spent(NamedTuple):
    """What `distillery run` hands the evaluation stage: the cost so far, how to price it, and the
    generation teacher's server when it was kept for the evaluation (`local.teacher`)."""

    cost: CostStatus
    prices: str | None = None
    currency: str | None = None
    teacher: TeacherConnection | None = None


def price_table(text: str) -> str:
    """`--gpu-hour-prices`: refused when it is read, before anything starts."""
    try:
        parse_prices(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
