"""The evaluation pod's Prometheus series, in its own registry (served by `distillery evaluate`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

from distillery.contract import series

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

EVAL_SCORE = Gauge(series.EVAL_SCORE, "Task score (0-1) of a compared model.", ["model"], registry=REGISTRY)
# Not `quantile`: Prometheus reserves that label for summaries (promtool check metrics refuses it).
EVAL_LATENCY = Gauge(
    series.EVAL_LATENCY,
    "Per-response latency of a compared model at a percentile (label values 50, 95).",
    ["model", "percentile"],
    registry=REGISTRY,
)
EVAL_THROUGHPUT = Gauge(
    series.EVAL_THROUGHPUT,
    "Output tokens per second of a compared model.",
    ["model"],
    registry=REGISTRY,
)
# Bounded labels: the compared models x the tasks and metrics the spec lists (at most 64 tasks).
EVAL_BENCHMARK_SCORE = Gauge(
    series.EVAL_BENCHMARK_SCORE,
    "Public benchmark score of a compared model: one lm-eval task and metric (e.g. acc, 0-1).",
    ["model", "task", "metric"],
    registry=REGISTRY,
)
EVAL_MODELS_TOTAL = Gauge(
    series.EVAL_MODELS_COMPARED,
    "Models this evaluation compares (teacher, baseline, student).",
    registry=REGISTRY,
)
EVAL_MODELS_DONE = Gauge(
    series.EVAL_MODELS_DONE,
    "Compared models whose answers are in (the operator shows it as progress).",
    registry=REGISTRY,
)
