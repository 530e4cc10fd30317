"""The training pod's Prometheus series, in its own registry (served by `distillery train`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from distillery.contract import series

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

TRAIN_LOSS = Gauge(series.TRAIN_LOSS, "Training loss of the latest update.", registry=REGISTRY)
TRAIN_VALIDATION_LOSS = Gauge(
    series.TRAIN_VALIDATION_LOSS, "Validation loss after the latest epoch.", registry=REGISTRY
)
TRAIN_STEP = Gauge(series.TRAIN_STEP, "Optimizer updates done.", registry=REGISTRY)
TRAIN_STEPS = Gauge(
    series.TRAIN_STEPS,
    "Optimizer updates this training makes in all (epochs x updates per epoch).",
    registry=REGISTRY,
)
TRAIN_EPOCH = Gauge(series.TRAIN_EPOCH, "Epochs done (fractional).", registry=REGISTRY)
TRAIN_TOKENS = Counter(
    series.TRAIN_TOKENS, "Real (non-padding) tokens the student trained on.", registry=REGISTRY
)
TRAIN_TOKENS_PER_SECOND = Gauge(
    series.TRAIN_TOKENS_PER_SECOND,
    "Real tokens per second over the latest logging window.",
    registry=REGISTRY,
)
TRAIN_ON_POLICY_LOSS = Gauge(
    series.TRAIN_ON_POLICY_LOSS,
    "Reverse KL to the teacher per sampled token, of the latest on-policy update (training.method onPolicy).",
    registry=REGISTRY,
)
TRAIN_TEACHER_GRADED_TOKENS = Counter(
    series.TRAIN_TEACHER_GRADED_TOKENS,
    "Tokens the student sampled and the teacher graded (training.method onPolicy).",
    registry=REGISTRY,
)
