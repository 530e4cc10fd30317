"""The generation pods' Prometheus series, in their own registry (served by `distillery generate`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from distillery.contract import series

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

GEN_REQUESTS = Counter(
    series.GENERATION_REQUESTS,
    "Teacher requests by outcome (ok, retry, error).",
    ["outcome"],
    registry=REGISTRY,
)
GEN_REQUEST_DURATION = Histogram(
    series.GENERATION_REQUEST_DURATION,
    "Latency of one successful teacher request.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
GEN_TOKENS = Counter(
    series.GENERATION_TOKENS,
    "Tokens sent to / received from the teacher.",
    ["direction"],
    registry=REGISTRY,
)
GEN_RECORDS = Counter(series.GENERATION_RECORDS, "Teacher records written (accepted).", registry=REGISTRY)
GEN_REJECTED = Counter(
    series.GENERATION_REJECTED,
    "Teacher responses rejected, by reason.",
    ["reason"],
    registry=REGISTRY,
)
GEN_IN_FLIGHT = Gauge(series.GENERATION_IN_FLIGHT, "Teacher requests in flight.", registry=REGISTRY)

# The shard's position, an earlier run of the shard included (it resumes from its files): what the operator
# shows as progress (`kubectl get dj`). The counters above count this process's work only.
GEN_PROMPTS = Gauge(
    series.GENERATION_PROMPTS,
    "Prompts this shard answers in all (both splits); 0 until it has counted its inputs.",
    registry=REGISTRY,
)
GEN_PROMPTS_DONE = Gauge(
    series.GENERATION_PROMPTS_DONE,
    "Prompts this shard has handled (accepted, rejected or given up on), an earlier run's included.",
    registry=REGISTRY,
)
GEN_RECORDS_ACCEPTED = Gauge(
    series.GENERATION_RECORDS_ACCEPTED,
    "Records this shard has accepted, those of an earlier run of it included.",
    registry=REGISTRY,
)
GEN_OUTPUT_TOKENS_PER_SECOND = Gauge(
    series.GENERATION_OUTPUT_TOKENS_PER_SECOND,
    "Teacher output tokens per second this shard has received since it started.",
    registry=REGISTRY,
)
