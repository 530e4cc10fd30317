"""The DistillationJob's status: written by the operator only, read by people and `kubectl get`.

Re-exported by `distillery.api`, which is where the rest of the code imports it from.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import ConfigDict, Field

from distillery.api.base import LIST_MAX, NAME_MAX, Model


class Phase(str, enum.Enum):
    pending = "Pending"
    teacher_starting = "TeacherStarting"
    generating = "Generating"
    training = "Training"
    evaluating = "Evaluating"
    succeeded = "Succeeded"
    failed = "Failed"
    suspended = "Suspended"

    @property
    def is_terminal(self) -> bool:
        return self in (Phase.succeeded, Phase.failed)


class ConditionType(str, enum.Enum):
    admitted = "Admitted"  # only where the operator's guard is on (controller.guard)
    inputs_ready = "InputsReady"
    teacher_ready = "TeacherReady"
    data_generated = "DataGenerated"
    student_trained = "StudentTrained"
    evaluated = "Evaluated"
    quality_gate_passed = "QualityGatePassed"


class Reason(str, enum.Enum):
    """Reasons of the job's conditions set by the operator (one CamelCase word each).

    A failed stage's condition carries the stage's own reason instead (`FailureReason` in
    `distillery.contract.summaries`, e.g. InvalidInput), or the Kubernetes Job's
    (BackoffLimitExceeded, DeadlineExceeded, ...) when the stage left no summary.
    """

    # progress
    checking = "Checking"
    allowed = "Allowed"
    waiting_for_secret = "WaitingForSecret"
    starting = "Starting"
    ready = "Ready"
    external_endpoint = "ExternalEndpoint"
    generating = "Generating"
    training = "Training"
    evaluating = "Evaluating"
    completed = "Completed"
    scaled_down = "ScaledDown"
    suspended = "Suspended"
    queued = "Queued"  # Kueue has not admitted a stage Job or the teacher's pods yet
    # verdicts and failures
    gate_passed = "GatePassed"
    no_gate = "NoGate"
    gate_failed = "GateFailed"
    no_gate_result = "NoGateResult"
    startup_timeout = "StartupTimeout"
    job_failed = "JobFailed"
    child_refused = "ChildRefused"  # the API server refused a child (403 quota, 422 invalid, ...)
    api_unavailable = "ApiUnavailable"  # 429, 5xx or a timeout: retried with backoff
    spec_changed = "SpecChanged"
    policy_denied = "PolicyDenied"  # the operator's guard refuses an image, a Secret or a toleration
    stopped = "Stopped"  # a stage Job removed because the job ended


# False conditions with these reasons are work under way, not trouble (Normal Events).
_PROGRESS_REASONS = frozenset(
    {
        Reason.checking,
        Reason.starting,
        Reason.generating,
        Reason.training,
        Reason.evaluating,
        Reason.scaled_down,
        Reason.suspended,
        Reason.queued,
        Reason.api_unavailable,
    }
)


def is_progress_reason(reason: str) -> bool:
    """Whether a condition reason (ours, a stage's or a Job's) means work under way."""
    return any(reason == member.value for member in _PROGRESS_REASONS)


class Condition(Model):
    type: ConditionType = Field(description="TeacherReady, DataGenerated, StudentTrained, Evaluated, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word a program can match on.")
    message: str = Field("", description="What happened, for a person.")
    last_transition_time: str | None = Field(None, description="When the status last changed (RFC 3339).")


class Progress(Model):
    """How far the current stage is. While a stage runs, its figures are those of the latest status write:
    the operator writes when the whole percent, the ETA's minute or a stage's shard count moves, not on
    every scrape of the pods' /metrics."""

    summary: str | None = Field(
        None,
        description="One line for `kubectl get` (PROGRESS), e.g. `generate 37% (1850/5000 prompts, ETA 12m)`.",
    )
    percent: int | None = Field(None, ge=0, le=100, description="The current stage's share done, 0-100.")
    eta_seconds: int | None = Field(
        None,
        ge=0,
        description="Seconds the current stage still needs at its rate since it started (whole minutes); "
        "empty until a rate is known.",
    )
    tokens_per_second: float | None = Field(
        None,
        ge=0,
        description="Generation: teacher output tokens per second, summed over the running shards; "
        "training: real tokens per second the student trains on.",
    )
    shards_done: int | None = Field(None, ge=0, description="Generation shards finished.")
    shards_total: int | None = Field(None, ge=0, description="Generation shards in all.")
    prompts_done: int | None = Field(
        None, ge=0, description="Prompts generation has handled (accepted, rejected or given up on)."
    )
    prompts_total: int | None = Field(
        None,
        ge=0,
        description="Prompts generation answers in all; empty until every shard has counted its inputs.",
    )
    records: int | None = Field(None, ge=0, description="Teacher records accepted so far.")
    tokens: int | None = Field(None, ge=0, description="Teacher output tokens so far.")
    rejected: int | None = Field(None, ge=0, description="Teacher responses rejected by the filters.")
    decontaminated: int | None = Field(
        None,
        ge=0,
        description="Training prompts dropped before generation for overlapping validation prompts.",
    )
    duplicates: int | None = Field(
        None, ge=0, description="Teacher records dropped by training as exact duplicates across shards."
    )
    epoch: float | None = Field(None, ge=0, description="Training epoch reached.")
    step: int | None = Field(None, ge=0, description="Training updates done.")
    steps_total: int | None = Field(
        None, ge=0, description="Training updates in all (epochs x updates per epoch)."
    )
    train_loss: float | None = Field(None, description="Latest training loss.")
    models_done: int | None = Field(None, ge=0, description="Models evaluation has scored so far.")
    models_total: int | None = Field(None, ge=0, description="Models evaluation compares.")
    validation_loss: float | None = Field(None, description="Latest validation loss.")
    on_policy_loss: float | None = Field(
        None, description="Latest on-policy loss (reverse KL per sampled token; `method: onPolicy`)."
    )


class ModelScore(Model):
    score: float | None = Field(None, description="Task score (accuracy or ROUGE-L) on validation data.")
    latency_p50_ms: float | None = Field(None, description="Median latency of one response, in ms.")
    latency_p95_ms: float | None = Field(None, description="95th-percentile latency, in ms.")


class BenchmarkStatus(Model):
    """One public benchmark's headline score per compared model (the report has every metric and its stderr)."""

    task: str = Field(max_length=NAME_MAX, description="lm-eval task name.")
    metric: str = Field(
        max_length=NAME_MAX, description="The metric shown, as lm-eval names it (e.g. `acc`)."
    )
    teacher: float | None = Field(None, description="The teacher's score.")
    baseline: float | None = Field(None, description="The student's base model's score.")
    student: float | None = Field(None, description="The distilled student's score.")
    retention: float | None = Field(None, description="Student score / teacher score.")


class EvaluationStatus(Model):
    metric: str | None = Field(None, description="Name of the task score.")
    teacher: ModelScore | None = Field(None, description="Teacher's scores.")
    baseline: ModelScore | None = Field(None, description="Student's base model before distillation.")
    student: ModelScore | None = Field(None, description="The distilled student.")
    retention: float | None = Field(None, description="Student score / teacher score.")
    gate_passed: bool | None = Field(None, description="Whether the quality gate passed.")
    gate_reason: str | None = Field(None, description="Why the gate passed or failed.")
    benchmarks: list[BenchmarkStatus] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Public benchmarks (`evaluation.benchmarks`): each task's first metric, per model.",
    )


class StageCost(Model):
    """What one stage (or the teacher) held: GPUs x time, and the CPU its processes used."""

    gpus: int = Field(0, ge=0, description="GPUs each of its pods held.")
    wall_seconds: float | None = Field(
        None,
        ge=0,
        description="Wall-clock time: first pod start to last pod end; the teacher's, ready to removed.",
    )
    pod_seconds: float = Field(0, ge=0, description="Seconds its pods ran, summed over pods (shards add up).")
    gpu_seconds: float = Field(0, ge=0, description="GPUs held x seconds, summed over its pods.")
    cpu_seconds: float | None = Field(
        None, ge=0, description="CPU time (user + system) of its processes, where they report it."
    )


class CostStatus(Model):
    """What the job has cost so far: resources always, money where the operator has a price table."""

    gpu_hours: float = Field(0, ge=0, description="GPU-hours in all (the printer column).")
    cpu_hours: float | None = Field(None, ge=0, description="CPU-hours of the stage processes, where known.")
    stages: dict[str, StageCost] = Field(
        default_factory=dict, description="By stage: teacher, check, generate, train, evaluate."
    )
    teacher_prompt_tokens: int = Field(0, ge=0, description="Tokens sent to the teacher (generation).")
    teacher_output_tokens: int = Field(0, ge=0, description="Tokens the teacher wrote (generation).")
    training_tokens: int = Field(0, ge=0, description="Real (non-padding) tokens the student trained on.")
    evaluation_requests: int = Field(
        0, ge=0, description="Requests evaluation sent to the models it compares."
    )
    price: float | None = Field(
        None, ge=0, description="GPU-hours x the price table's price per GPU-hour; empty without a table."
    )
    currency: str | None = Field(None, description="Currency of `price`, as the price table names it.")
    retention_per_gpu_hour: float | None = Field(
        None, description="Retention / GPU-hours, once evaluation has scored the student."
    )


class TeacherStatus(Model):
    """The served teacher's pods, as its Deployment counts them; empty while none exists (an endpoint, or
    the teacher released after generation)."""

    replicas: int = Field(0, ge=0, description="Teacher pods asked for (`teacher.replicas`).")
    ready_replicas: int = Field(0, ge=0, description="Teacher pods ready to serve (passing vLLM's /health).")
    summary: str | None = Field(
        None,
        description="`ready/total` for `kubectl get` (TEACHER), as a Deployment's READY column shows it.",
    )


class FaultStatus(Model):
    """One class of fault the job met, as its latest Warning Event (posted at most once a minute) said it."""

    count: int = Field(
        0,
        ge=0,
        description="Times seen up to its latest Event: the operator's retried requests and failed "
        "reconciles of this class, or a stage's restarts.",
    )
    last_time: str | None = Field(
        None, description="When the latest Event of this class was posted (RFC 3339)."
    )
    message: str = Field(
        "",
        description="That Event's message, e.g. `API server throttled (429): retrying; 3 times in the last minute`.",
    )


class Artifacts(Model):
    data: str | None = Field(None, description="Directory of the teacher's generated records.")
    student: str | None = Field(None, description="Directory of the distilled student (safetensors).")
    report: str | None = Field(None, description="The evaluation report (JSON; Markdown and PNG beside it).")
    output: str | None = Field(
        None,
        description="Where the student, report and model card were exported (`spec.output`), once written.",
    )


class DistillationJobStatus(Model):
    model_config = ConfigDict(extra="ignore")  # kopf keeps its own bookkeeping in status too

    phase: Phase | None = Field(None, description="Where the job is: Pending ... Succeeded / Failed.")
    message: str | None = Field(None, description="The latest thing a person should know.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    observed_generation: int | None = Field(None, description="The spec generation this status describes.")
    start_time: str | None = Field(None, description="When the job started (RFC 3339).")
    completion_time: str | None = Field(None, description="When it succeeded or failed (RFC 3339).")
    progress: Progress | None = Field(None, description="Per-stage progress.")
    evaluation: EvaluationStatus | None = Field(None, description="Scores and the gate.")
    cost: CostStatus | None = Field(None, description="GPU-hours, CPU-hours, tokens and price, by stage.")
    teacher: TeacherStatus | None = Field(None, description="The served teacher's ready and total pods.")
    artifacts: Artifacts | None = Field(None, description="Where the results are on the job's storage.")
    faults: dict[str, FaultStatus] | None = Field(
        None,
        description="Faults the job met and got past, by class: the operator's own retried API requests and "
        "reconciles (throttled, server_error, timeout, unreachable, refused, unexpected) and the stages' "
        "restarted pods (teacher_restarted, generate_restarted, ...); updated at most once a minute per class, "
        "with the Warning Event that says it.",
    )
    spec_hashes: dict[str, str] | None = Field(
        None,
        description="A hash of each spec section the job started with: the spec is immutable after creation "
        "(except suspend and ttlSecondsAfterFinished), and the operator fails a job whose spec changed anyway "
        "rather than run children of two specs.",
    )
