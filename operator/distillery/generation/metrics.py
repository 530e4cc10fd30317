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
