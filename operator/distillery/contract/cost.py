"""What a distillation costs: GPUs held x time, CPU time, tokens, and money where a price is known.

The same arithmetic for the operator (`status.cost`), `distillery run` and the evaluation report:

- a stage's pods report what they held in their summaries (`gpus`, `gpuSeconds`, `cpuSeconds`:
  the GPUs the pod holds x its run time, and its processes' own CPU time);
- the teacher's GPUs are held from the moment it is ready until it is removed (the operator
  reads both from the TeacherReady condition; `distillery run` times its server);
- money is GPU-hours x a price per GPU-hour, by GPU type (the node label
  `nvidia.com/gpu.product` in the stage's nodeSelector, else the table's `default`). Without a
  table, or without a price for a GPU type in use, only resources are shown.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Iterable, Mapping
from datetime import datetime

from distillery.api import CostStatus, DistillationJobSpec, StageCost
from distillery.contract import stages as stage_table
from distillery.contract.stages import Stage
from distillery.contract.summaries import EvaluateSummary, GenerateSummary, StageSummary, TrainSummary

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA's GPU feature discovery
DEFAULT_PRICE = "default"
DEFAULT_CURRENCY = "USD"
TEACHER = "teacher"  # the served teacher's entry in status.cost.stages, beside the stages'


def process_cpu_seconds() -> float:
    """User + system CPU time of this process and the children it waited for (vLLM servers, torchrun ranks)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def with_usage(summary: StageSummary, seconds: float, gpus: int, cpu_seconds: float) -> StageSummary:
    """The summary with what its process held: `gpus` for `seconds`, and `cpu_seconds` of CPU."""
    return summary.model_copy(
        update={
            "duration_seconds": summary.duration_seconds
            if summary.duration_seconds is not None
            else round(seconds, 2),
            "gpus": gpus,
            "gpu_seconds": round(gpus * seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
        }
    )


def stage_cost(summaries: Iterable[StageSummary], wall_seconds: float | None = None) -> StageCost:
    """One stage's cost from its pods' summaries (every attempt that left one, failed ones too)."""
    items = list(summaries)
    cpu = [s.cpu_seconds for s in items if s.cpu_seconds is not None]
    return StageCost(
        gpus=max((s.gpus or 0 for s in items), default=0),
        wall_seconds=None if wall_seconds is None else round(wall_seconds, 2),
        pod_seconds=round(sum(s.duration_seconds or 0 for s in items), 2),
        gpu_seconds=round(sum(s.gpu_seconds or 0 for s in items), 2),
        cpu_seconds=round(sum(cpu), 2) if cpu else None,
    )


def teacher_cost(
    gpus: int, ready: datetime | None, removed: datetime | None, replicas: int = 1
) -> StageCost | None:
    """The served teacher: every replica's GPUs (`gpus` each) from ready to removed (None until it has been
    ready). Replicas still loading or restarting hold their GPUs all the same, so each counts the whole span."""
    if ready is None or removed is None or removed < ready:
        return None
    seconds = (removed - ready).total_seconds()
    return StageCost(
        gpus=gpus,
        wall_seconds=round(seconds, 2),
        pod_seconds=round(replicas * seconds, 2),
        gpu_seconds=round(replicas * gpus * seconds, 2),
    )


def job_cost(
    stages: Mapping[str, StageCost],
    generated: Iterable[GenerateSummary] = (),
    trained: TrainSummary | None = None,
    evaluated: EvaluateSummary | None = None,
    retention: float | None = None,
) -> CostStatus:
    """The job's totals from its stages' costs and the summaries that count tokens and requests."""
    reports = {Stage.generate: list(generated), Stage.train: [trained], Stage.evaluate: [evaluated]}
    return with_stages(CostStatus(**counts(reports)), stages, retention)


def counts(reports: Mapping[str, Iterable[StageSummary | None]]) -> dict[str, int]:
    """The status.cost counts (tokens, requests) the stage table says each stage's summaries carry,
    summed over the summaries given for it (a sharded stage's one per shard)."""
    out: dict[str, int] = {}
    for entry in stage_table.STAGES:
        given = [s for s in reports.get(entry.stage, ()) if s is not None]
        for source, target in entry.cost_counts.items():
            out[target] = out.get(target, 0) + sum(getattr(s, source) or 0 for s in given)
    return out


def with_stages(
    cost: CostStatus, stages: Mapping[str, StageCost], retention: float | None = None
) -> CostStatus:
    """`cost` with these stages' costs added (replacing any of the same name) and its totals made again."""
    merged = {**cost.stages, **stages}
    cpu = [c.cpu_seconds for c in merged.values() if c.cpu_seconds is not None]
    gpu_hours = sum(c.gpu_seconds for c in merged.values()) / 3600
    per_hour = round(retention / gpu_hours, 4) if retention is not None and gpu_hours > 0 else None
    return cost.model_copy(
        update={
            "stages": merged,
            "gpu_hours": round(gpu_hours, 4),
            "cpu_hours": round(sum(cpu) / 3600, 4) if cpu else None,
            "retention_per_gpu_hour": per_hour if retention is not None else cost.retention_per_gpu_hour,
            "price": None,  # made again by `priced`, over every stage
            "currency": None,
        }
    )


def evaluation_cost(
    spent: CostStatus | None,
    seconds: float,
    gpus: int,
    cpu_seconds: float,
    requests: int,
    retention: float | None,
) -> CostStatus:
    """The job's cost as the evaluation stage reports it: what came before (`spent`, from the operator or
    `distillery run`) and the evaluation so far."""
    own = StageCost(
        gpus=gpus,
        wall_seconds=round(seconds, 2),
        pod_seconds=round(seconds, 2),
        gpu_seconds=round(gpus * seconds, 2),
        cpu_seconds=round(cpu_seconds, 2),
    )
    base = (spent or CostStatus()).model_copy(update={"evaluation_requests": requests})
    return with_stages(base, {Stage.evaluate: own}, retention)


# ------------------------------------------------------------------ money


def parse_prices(text: str) -> dict[str, float]:
    """`default=2.5,NVIDIA-H100-80GB-HBM3=4.1` (what the chart passes) as a table; refuses what it cannot read."""
    table = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        gpu_type, sep, value = item.rpartition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not gpu_type or not 0 <= price < math.inf:  # nan fails both
            raise ValueError(f"GPU price {item!r}: expected TYPE=PRICE with a price >= 0, e.g. default=2.5")
        table[gpu_type.strip()] = price
    return table


def gpu_type(spec: DistillationJobSpec, stage: str) -> str:
    """The GPU type the stage's pods run on: its section's nodeSelector (the stage table's `section`)."""
    if stage == TEACHER:
        name = TEACHER
    else:
        name = stage_table.facts(stage).section if stage in stage_table.names() else "generation"
    section = getattr(spec, name)
    return section.node_selector.get(GPU_PRODUCT_LABEL, DEFAULT_PRICE)


def priced(
    cost: CostStatus, spec: DistillationJobSpec, prices: Mapping[str, float], currency: str
) -> CostStatus:
    """The cost with its price, when the table has one for every GPU type in use; else unchanged."""
    if not prices:
        return cost
    total = 0.0
    for stage, used in cost.stages.items():
        if used.gpu_seconds <= 0:
            continue
        kind = gpu_type(spec, stage)
        price = prices.get(kind, prices.get(DEFAULT_PRICE))
        if price is None:
            return cost  # a GPU type the table does not price: resources only, never a partial sum
        total += used.gpu_seconds / 3600 * price
    return cost.model_copy(update={"price": round(total, 4), "currency": currency})


# ------------------------------------------------------------------ for people


def cost_lines(cost: CostStatus) -> list[str]:
    """A few lines for `distillery run` and the report."""
    by_stage = ", ".join(
        f"{stage} {used.gpu_seconds / 3600:.3f}"
        for stage, used in cost.stages.items()
        if used.gpu_seconds > 0
    )
    line = f"cost: {cost.gpu_hours:.3f} GPU-hours" + (f" ({by_stage})" if by_stage else "")
    if cost.cpu_hours is not None:
        line += f", {cost.cpu_hours * 3600:.0f} CPU-seconds"
    if cost.price is not None:
        line += f", {cost.price:.2f} {cost.currency}"
    lines = [line]
    lines.append(
        f"  teacher tokens {cost.teacher_prompt_tokens} in / {cost.teacher_output_tokens} out; "
        f"{cost.training_tokens} training tokens; {cost.evaluation_requests} evaluation requests"
    )
    if cost.retention_per_gpu_hour is not None:
        lines.append(f"  retention per GPU-hour: {cost.retention_per_gpu_hour:.3f}")
    return lines


def cost_markdown(cost: CostStatus) -> list[str]:
    """The report's cost section: a row per stage, the totals, and retention per GPU-hour."""
    rows = ["| stage | GPUs | wall s | pod s | GPU-hours | CPU s |", "|---|---|---|---|---|---|"]
    for stage, used in cost.stages.items():
        wall = "" if used.wall_seconds is None else f"{used.wall_seconds:.0f}"
        cpu = "" if used.cpu_seconds is None else f"{used.cpu_seconds:.0f}"
        rows.append(
            f"| {stage} | {used.gpus} | {wall} | {used.pod_seconds:.0f} | "
            f"{used.gpu_seconds / 3600:.3f} | {cpu} |"
        )
    rows.append("")
    rows.append(
        f"- **GPU-hours**: {cost.gpu_hours:.3f}"
        + (
            f" (**{cost.price:.2f} {cost.currency}** at the operator's prices)"
            if cost.price is not None
            else " (no price table: resources only)"
        )
    )
    if cost.retention_per_gpu_hour is not None:
        rows.append(f"- **Retention per GPU-hour**: {cost.retention_per_gpu_hour:.3f}")
    rows.append(
        f"- teacher tokens: {cost.teacher_prompt_tokens} in, {cost.teacher_output_tokens} out; "
        f"training tokens: {cost.training_tokens}; evaluation requests: {cost.evaluation_requests}"
    )
    return rows
