"""The operator's Prometheus series, in the operator's own registry (served on its /metrics).

Dashboards and alerts in the Helm chart may use only series defined in this module and in
the stages' metrics modules (`generation.metrics`, `training.metrics`, `evaluation.metrics`);
a test parses their expressions and checks. Base units, `distillery_` prefix, bounded
labels: per-job series carry `namespace` and `distillery_job` (not `job`: Prometheus gives every
target its scrape `job`), whose number is the number of
DistillationJobs, and are removed when a job is deleted.
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from distillery.api import DistillationJobStatus, Phase
from distillery.contract import stages
from distillery.contract.stages import Stage

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

TEACHER = "teacher"  # the served teacher's cost, beside the stages'
MODELS = ("teacher", "baseline", "student")

JOBS = Gauge("distillery_jobs", "DistillationJobs the operator sees, by phase.", ["phase"], registry=REGISTRY)
JOB_PHASE = Gauge(
    "distillery_job_phase",
    "1 for the phase each DistillationJob is in, 0 for the others.",
    ["namespace", "distillery_job", "phase"],
    registry=REGISTRY,
)
JOB_PROGRESS = Gauge(
    "distillery_job_progress_ratio",
    "Fraction (0-1) of the current stage a DistillationJob has done.",
    ["namespace", "distillery_job", "stage"],
    registry=REGISTRY,
)
JOB_RECORDS = Gauge(
    "distillery_job_generated_records",
    "Teacher records accepted for a job so far.",
    ["namespace", "distillery_job"],
    registry=REGISTRY,
)
JOB_TOKENS = Gauge(
    "distillery_job_generated_tokens",
    "Teacher output tokens generated for a job so far.",
    ["namespace", "distillery_job"],
    registry=REGISTRY,
)
JOB_REJECTED = Gauge(
    "distillery_job_rejected_records",
    "Teacher responses rejected by the filters for a job.",
    ["namespace", "distillery_job"],
    registry=REGISTRY,
)
JOB_TRAIN_LOSS = Gauge(
    "distillery_job_train_loss",
    "Latest training loss reported for a job.",
    ["namespace", "distillery_job"],
    registry=REGISTRY,
)
JOB_EVAL_SCORE = Gauge(
    "distillery_job_eval_score",
    "Task score (accuracy or ROUGE-L, 0-1) of each compared model of a job.",
    ["namespace", "distillery_job", "model"],
    registry=REGISTRY,
)
JOB_RETENTION = Gauge(
    "distillery_job_retention_ratio",
    "Student score divided by teacher score for a job.",
    ["namespace", "distillery_job"],
    registry=REGISTRY,
)
JOB_GPU_SECONDS = Gauge(
    "distillery_job_gpu_seconds",
    "GPUs held x seconds by a job so far, by stage (teacher: ready to removed; stages: their pods).",
    ["namespace", "distillery_job", "stage"],
    registry=REGISTRY,
)
JOB_CPU_SECONDS = Gauge(
    "distillery_job_cpu_seconds",
    "CPU seconds a job's stage processes reported, by stage.",
    ["namespace", "distillery_job", "stage"],
    registry=REGISTRY,
)
JOB_STAGE_RESTARTS = Gauge(
    "distillery_job_stage_restarts",
    "Restarts of a job's stage pods so far, as the operator sees them: a stage Job's failed (and replaced) "
    "pods plus its containers' restarts; the teacher's container restarts.",
    ["namespace", "distillery_job", "stage"],
    registry=REGISTRY,
)
JOB_PRICE = Gauge(
    "distillery_job_price",
    "GPU-hours x the operator's price per GPU-hour for a job (only with a price table).",
    ["namespace", "distillery_job", "currency"],
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "distillery_stage_duration_seconds",
    "Wall time of a finished stage of a DistillationJob.",
    ["stage"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
    registry=REGISTRY,
)
RECONCILES = Counter(
    "distillery_reconcile_total",
    "Reconciliations of DistillationJobs, by result (ok, retry, error).",
    ["result"],
    registry=REGISTRY,
)
for _result in ("ok", "retry", "error"):  # exported at 0 from the start: an error rate of 0, not "no data"
    RECONCILES.labels(_result)
# The classes of the operator's own faults (`apiclient.fault_reason`): a bounded label set.
FAULT_REASONS = ("throttled", "server_error", "timeout", "unreachable", "refused", "unexpected")
RECONCILE_ERRORS = Counter(
    "distillery_reconcile_errors_total",
    "Reconciliations that failed and were retried with backoff, by cause: throttled (429), server_error "
    "(5xx), timeout, unreachable (API server), refused (another 4xx), unexpected (an operator bug: see its log).",
    ["reason"],
    registry=REGISTRY,
)
API_RETRIES = Counter(
    "distillery_operator_api_retries_total",
    "Kubernetes API requests the operator retried after a 429, a 5xx, a timeout or a broken connection.",
    ["reason"],
    registry=REGISTRY,
)
API_WRITE_WAIT = Counter(
    "distillery_operator_api_write_wait_seconds_total",
    "Seconds the operator's writes to the Kubernetes API waited for its client-side rate limit (the chart's "
    "operator.apiWriteQPS and apiWriteBurst); rising steadily: the limit, not the API server, paces the jobs.",
    registry=REGISTRY,
)
for _reason in FAULT_REASONS:  # exported at 0 from the start, like the reconcile results
    RECONCILE_ERRORS.labels(_reason)
for _reason in FAULT_REASONS[:4]:
    API_RETRIES.labels(_reason)
RECONCILE_DURATION = Histogram(
    "distillery_reconcile_duration_seconds",
    "Time one reconciliation of a DistillationJob takes, API calls included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LEADER = Gauge(
    "distillery_operator_leader",
    "1 when this operator replica reconciles (it holds the leader Lease, or runs alone); 0 while it stands by.",
    registry=REGISTRY,
)
CHILDREN_CREATED = Counter(
    "distillery_children_created_total",
    "Child objects the operator created, by kind.",
    ["kind"],
    registry=REGISTRY,
)

# ------------------------------------------------------------------ per-job series

_state_lock = threading.Lock()
_phases: dict[tuple[str, str], Phase] = {}  # (namespace, name) -> phase, for the jobs-by-phase gauge
_counts: dict[Phase, int] = dict.fromkeys(Phase, 0)  # jobs per phase, kept with _phases
_deleted: set[str] = set()  # uids of deleted jobs: a reconcile still in flight must not re-export them
_currencies: dict[tuple[str, str], set[str]] = {}  # the price series each job has, to remove them with it


def forget_job(namespace: str, job: str, uid: str = "") -> None:
    """Drop a deleted job's series so per-job labels stay bounded."""
    with _state_lock:
        if uid:
            _deleted.add(uid)
        _count(_phases.pop((namespace, job), None), None)
        for gauge in (JOB_RECORDS, JOB_TOKENS, JOB_REJECTED, JOB_TRAIN_LOSS, JOB_RETENTION):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, job)
        for phase in Phase:
            with contextlib.suppress(KeyError):
                JOB_PHASE.remove(namespace, job, phase.value)
        for stage in (TEACHER, *stages.names()):
            for gauge in (JOB_PROGRESS, JOB_GPU_SECONDS, JOB_CPU_SECONDS, JOB_STAGE_RESTARTS):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, job, stage)
        for currency in _currencies.pop((namespace, job), ()):
            with contextlib.suppress(KeyError):
                JOB_PRICE.remove(namespace, job, currency)
        for model in MODELS:
            with contextlib.suppress(KeyError):
                JOB_EVAL_SCORE.remove(namespace, job, model)


def export_status(namespace: str, name: str, uid: str, status: DistillationJobStatus) -> None:
    """Set a job's series from its new status (not for a job deleted while this reconcile ran)."""
    phase = status.phase or Phase.pending
    with _state_lock:
        if uid in _deleted:
            return
        for candidate in Phase:
            JOB_PHASE.labels(namespace, name, candidate.value).set(1 if candidate is phase else 0)
        _count(_phases.get((namespace, name)), phase)
        _phases[(namespace, name)] = phase
    progress = status.progress
    if progress is not None:
        for gauge, value in (
            (JOB_RECORDS, progress.records),
            (JOB_TOKENS, progress.tokens),
            (JOB_REJECTED, progress.rejected),
            (JOB_TRAIN_LOSS, progress.train_loss),
        ):
            if value is not None:
                gauge.labels(namespace, name).set(value)
        if progress.shards_total:
            JOB_PROGRESS.labels(namespace, name, Stage.generate).set(
                (progress.shards_done or 0) / progress.shards_total
            )
    evaluation = status.evaluation
    if evaluation is not None:
        for model in MODELS:
            score = getattr(evaluation, model)
            if score is not None and score.score is not None:
                JOB_EVAL_SCORE.labels(namespace, name, model).set(score.score)
        if evaluation.retention is not None:
            JOB_RETENTION.labels(namespace, name).set(evaluation.retention)
    cost = status.cost
    if cost is not None:
        for stage, used in cost.stages.items():
            JOB_GPU_SECONDS.labels(namespace, name, stage).set(used.gpu_seconds)
            if used.cpu_seconds is not None:
                JOB_CPU_SECONDS.labels(namespace, name, stage).set(used.cpu_seconds)
        if cost.price is not None and cost.currency:
            JOB_PRICE.labels(namespace, name, cost.currency).set(cost.price)
            _currencies.setdefault((namespace, name), set()).add(cost.currency)


def export_restarts(namespace: str, name: str, uid: str, restarts: dict[str, int]) -> None:
    """Set a job's restarts by stage (`observe.Observed.restarts`: the children that exist)."""
    with _state_lock:
        if uid in _deleted:
            return
        for stage, count in restarts.items():
            JOB_STAGE_RESTARTS.labels(namespace, name, stage).set(count)


def _count(old: Phase | None, new: Phase | None) -> None:
    """Move one job from `old` to `new` in the jobs-by-phase gauge (constant time: 1000 jobs, 1000 updates)."""
    if old is new:
        return
    for phase, change in ((old, -1), (new, 1)):
        if phase is not None:
            _counts[phase] += change
            JOBS.labels(phase.value).set(_counts[phase])
