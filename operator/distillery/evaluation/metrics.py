"""The evaluation pod's Prometheus series, in its own registry (served by `distillery evaluate`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

EVAL_SCORE = Gauge(
    "distillery_eval_score", "Task score (0-1) of a compared model.", ["model"], registry=REGISTRY
)
# Not `quantile`: Prometheus reserves that label for summaries (promtool check metrics refuses it).
EVAL_LATENCY = Gauge(
    "distillery_eval_latency_seconds",
    "Per-response latency of a compared model at a percentile (label values 50, 95).",
    ["model", "percentile"],
    registry=REGISTRY,
)
EVAL_THROUGHPUT = Gauge(
    "distillery_eval_output_tokens_per_second",
    "Output tokens per second of a compared model.",
    ["model"],
    registry=REGISTRY,
)
EVAL_MODELS_TOTAL = Gauge(
    "distillery_eval_models_compared",
    "Models this evaluation compares (teacher, baseline, student).",
    registry=REGISTRY,
)
EVAL_MODELS_DONE = Gauge(
    "distillery_eval_models_done",
    "Compared models whose answers are in (the operator shows it as progress).",
    registry=REGISTRY,
)
