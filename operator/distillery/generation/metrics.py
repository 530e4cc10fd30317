"""The generation pods' Prometheus series, in their own registry (served by `distillery generate`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

GEN_REQUESTS = Counter(
    "distillery_generation_requests_total",
    "Teacher requests by outcome (ok, retry, error).",
    ["outcome"],
    registry=REGISTRY,
)
GEN_REQUEST_DURATION = Histogram(
    "distillery_generation_request_duration_seconds",
    "Latency of one successful teacher request.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
GEN_TOKENS = Counter(
    "distillery_generation_tokens_total",
    "Tokens sent to / received from the teacher.",
    ["direction"],
    registry=REGISTRY,
)
GEN_RECORDS = Counter(
    "distillery_generation_records_total", "Teacher records written (accepted).", registry=REGISTRY
)
GEN_REJECTED = Counter(
    "distillery_generation_rejected_total",
    "Teacher responses rejected, by reason.",
    ["reason"],
    registry=REGISTRY,
)
GEN_IN_FLIGHT = Gauge(
    "distillery_generation_in_flight_requests", "Teacher requests in flight.", registry=REGISTRY
)
