"""The training pod's Prometheus series, in its own registry (served by `distillery train`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

TRAIN_LOSS = Gauge("distillery_train_loss", "Training loss of the latest update.", registry=REGISTRY)
TRAIN_VALIDATION_LOSS = Gauge(
    "distillery_train_validation_loss", "Validation loss after the latest epoch.", registry=REGISTRY
)
TRAIN_STEP = Gauge("distillery_train_step", "Optimizer updates done.", registry=REGISTRY)
TRAIN_EPOCH = Gauge("distillery_train_epoch", "Epochs done (fractional).", registry=REGISTRY)
TRAIN_TOKENS = Counter(
    "distillery_train_tokens_total", "Real (non-padding) tokens the student trained on.", registry=REGISTRY
)
TRAIN_TOKENS_PER_SECOND = Gauge(
    "distillery_train_tokens_per_second",
    "Real tokens per second over the latest logging window.",
    registry=REGISTRY,
)
TRAIN_ON_POLICY_LOSS = Gauge(
    "distillery_train_on_policy_loss",
    "Reverse KL to the teacher per sampled token, of the latest on-policy update (training.method onPolicy).",
    registry=REGISTRY,
)
TRAIN_TEACHER_GRADED_TOKENS = Counter(
    "distillery_train_teacher_graded_tokens_total",
    "Tokens the student sampled and the teacher graded (training.method onPolicy).",
    registry=REGISTRY,
)
