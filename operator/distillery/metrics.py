"""Every Prometheus series Distillery exports, defined once.

Dashboards and alerts in the Helm chart may use only names defined here (a test
parses their expressions and checks). Base units, `distillery_` prefix, bounded
labels: per-job series carry `namespace` and `job`, whose number is the number of
DistillationJobs, and are removed when a job is deleted.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

PHASES = ("Pending", "TeacherStarting", "Generating", "Training", "Evaluating", "Succeeded", "Failed", "Suspended")
STAGES = ("teacher", "generate", "train", "evaluate")

# ------------------------------------------------------------------ operator
JOBS = Gauge("distillery_jobs", "DistillationJobs the operator sees, by phase.", ["phase"])
JOB_PHASE = Gauge(
    "distillery_job_phase",
    "1 for the phase each DistillationJob is in, 0 for the others.",
    ["namespace", "job", "phase"],
)
JOB_PROGRESS = Gauge(
    "distillery_job_progress_ratio",
    "Fraction (0-1) of the current stage a DistillationJob has done.",
    ["namespace", "job", "stage"],
)
JOB_RECORDS = Gauge(
    "distillery_job_generated_records", "Teacher records accepted for a job so far.", ["namespace", "job"]
)
JOB_TOKENS = Gauge(
    "distillery_job_generated_tokens", "Teacher output tokens generated for a job so far.", ["namespace", "job"]
)
JOB_REJECTED = Gauge(
    "distillery_job_rejected_records", "Teacher responses rejected by the filters for a job.", ["namespace", "job"]
)
JOB_TRAIN_LOSS = Gauge("distillery_job_train_loss", "Latest training loss reported for a job.", ["namespace", "job"])
JOB_EVAL_SCORE = Gauge(
    "distillery_job_eval_score",
    "Task score (accuracy or ROUGE-L, 0-1) of each compared model of a job.",
    ["namespace", "job", "model"],
)
JOB_RETENTION = Gauge(
    "distillery_job_retention_ratio", "Student score divided by teacher score for a job.", ["namespace", "job"]
)
STAGE_DURATION = Histogram(
    "distillery_stage_duration_seconds",
    "Wall time of a finished stage of a DistillationJob.",
    ["stage"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)
RECONCILES = Counter(
    "distillery_reconcile_total", "Reconciliations of DistillationJobs, by result (ok, retry, error).", ["result"]
)
RECONCILE_DURATION = Histogram(
    "distillery_reconcile_duration_seconds",
    "Time one reconciliation of a DistillationJob takes, API calls included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHILDREN_CREATED = Counter(
    "distillery_children_created_total", "Child objects the operator created, by kind.", ["kind"]
)

# ------------------------------------------------------------------ generation worker
GEN_REQUESTS = Counter(
    "distillery_generation_requests_total",
    "Teacher requests by outcome (ok, retry, error).",
    ["outcome"],
)
GEN_REQUEST_DURATION = Histogram(
    "distillery_generation_request_duration_seconds",
    "Latency of one successful teacher request.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
GEN_TOKENS = Counter(
    "distillery_generation_tokens_total", "Tokens sent to / received from the teacher.", ["direction"]
)
GEN_RECORDS = Counter("distillery_generation_records_total", "Teacher records written (accepted).")
GEN_REJECTED = Counter(
    "distillery_generation_rejected_total", "Teacher responses rejected, by reason.", ["reason"]
)
GEN_IN_FLIGHT = Gauge("distillery_generation_in_flight_requests", "Teacher requests in flight.")

# ------------------------------------------------------------------ training worker
TRAIN_LOSS = Gauge("distillery_train_loss", "Training loss of the latest update.")
TRAIN_VALIDATION_LOSS = Gauge("distillery_train_validation_loss", "Validation loss after the latest epoch.")
TRAIN_STEP = Gauge("distillery_train_step", "Optimizer updates done.")
TRAIN_EPOCH = Gauge("distillery_train_epoch", "Epochs done (fractional).")
TRAIN_TOKENS = Counter("distillery_train_tokens_total", "Real (non-padding) tokens the student trained on.")
TRAIN_TOKENS_PER_SECOND = Gauge(
    "distillery_train_tokens_per_second", "Real tokens per second over the latest logging window."
)

# ------------------------------------------------------------------ evaluation worker
EVAL_SCORE = Gauge("distillery_eval_score", "Task score (0-1) of a compared model.", ["model"])
# Not `quantile`: Prometheus reserves that label for summaries (promtool check metrics refuses it).
EVAL_LATENCY = Gauge(
    "distillery_eval_latency_seconds",
    "Per-response latency of a compared model at a percentile (label values 50, 95).",
    ["model", "percentile"],
)
EVAL_THROUGHPUT = Gauge(
    "distillery_eval_output_tokens_per_second", "Output tokens per second of a compared model.", ["model"]
)


def forget_job(namespace: str, job: str) -> None:
    """Drop a deleted job's series so per-job labels stay bounded."""
    for gauge in (JOB_RECORDS, JOB_TOKENS, JOB_REJECTED, JOB_TRAIN_LOSS, JOB_RETENTION):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, job)
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            JOB_PHASE.remove(namespace, job, phase)
    for stage in STAGES:
        with contextlib.suppress(KeyError):
            JOB_PROGRESS.remove(namespace, job, stage)
    for model in ("teacher", "baseline", "student"):
        with contextlib.suppress(KeyError):
            JOB_EVAL_SCORE.remove(namespace, job, model)
