"""The stage sections of a DistillationJob's spec: generation, training and evaluation.

Re-exported by `distillery.api`, which is where the rest of the code imports them from.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from distillery.api.base import LIST_MAX, PATH_MAX, Arg, Model, Name, Rule, section
from distillery.api.benchmarks import BenchmarkGate, BenchmarkSpec
from distillery.api.pods import StageRuntime
from distillery.api.storage import uri_rule


class TrainingMethod(str, enum.Enum):
    sft = "sft"
    kd = "kd"
    on_policy = "onPolicy"


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
    RULES = (
        Rule(
            "parallelism",
            "expected at most generation.shards",
            "!has(self.parallelism) || self.parallelism <= self.shards",
            lambda g: g.parallelism is None or g.parallelism <= g.shards,
        ),
    )

    shards: int = Field(1, ge=1, le=10000, description="Number of shards (pods of the Indexed Job).")
    parallelism: int | None = Field(
        None, ge=1, le=10000, description="Shards running at once; empty runs all shards at once."
    )
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight per shard.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature of the teacher.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling probability mass.")
    max_tokens: int = Field(512, ge=1, le=131072, description="Largest response, in tokens.")
    samples_per_prompt: int = Field(1, ge=1, le=64, description="Teacher responses kept per prompt.")
    top_logprobs: int = Field(
        0,
        ge=0,
        le=20,
        description="Top-k log-probabilities kept per response token (needed by `kd`); 0 keeps none.",
    )
    seed: int | None = Field(None, description="Sampling seed sent to the teacher, for repeatable data.")
    request_timeout_seconds: float = Field(300.0, gt=0, description="Timeout of one teacher request.")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of one request on timeouts, 429 and 5xx.")
    min_success_ratio: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="A shard fails when fewer of its prompts than this get an accepted answer.",
    )
    smoke_test_prompts: int = Field(
        3, ge=0, le=100, description="Prompts tried before fanning out, to fail fast on a broken teacher."
    )
    filters: FilterSpec = section(FilterSpec, "Which teacher responses are kept.")


# ---------------------------------------------------------------- training


class LoraSpec(Model):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling is alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[Name] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=LIST_MAX,
        description="Module names LoRA adapts.",
    )


class OnPolicySpec(Model):
    """On-policy distillation (GKD): the student samples, the served teacher grades every sampled token."""

    fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of updates whose batch the student samples and the teacher grades (GKD's lambda); "
        "the other updates train on the teacher's generated records, as `sft` does.",
    )
    samples_per_prompt: int = Field(
        1, ge=1, le=64, description="Completions the student samples per prompt of an on-policy batch."
    )
    temperature: float = Field(
        1.0,
        gt=0.0,
        le=2.0,
        description="Sampling temperature of the student (1 samples its own distribution).",
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=131072,
        description="Longest student completion, in tokens; empty uses generation.maxTokens.",
    )
    top_logprobs: int = Field(
        20,
        ge=1,
        le=20,
        description="Teacher log-probabilities per sampled token (its top-k, plus the sampled token's own); "
        "vLLM serves at most 20 unless started with a larger `--max-logprobs`.",
    )
    request_timeout_seconds: float = Field(
        300.0, gt=0, description="Timeout of one request for the teacher's log-probabilities."
    )
    max_retries: int = Field(
        5, ge=0, le=50, description="Retries of one teacher request on timeouts, 429 and 5xx."
    )


BATCH_SIZE_MAX = 4096


def _batch_size(value: Any) -> int | str:
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= BATCH_SIZE_MAX
    ):
        return value
    raise PydanticCustomError("batch_size", f"expected a whole number from 1 to {BATCH_SIZE_MAX}, or 'auto'")


# A whole number, or "auto": an int-or-string in the CRD, each form checked by the keywords of its type.
BatchSize = Annotated[
    int | str,
    PlainValidator(_batch_size),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "minimum": 1,
            "maximum": BATCH_SIZE_MAX,
            "pattern": "^auto$",
            "maxLength": 4,
        }
    ),
]


# Most training nodes one job may ask for: 64 nodes of 8 GPUs is 512 GPUs, more than one queue admits as a job.
TRAINING_NODES_MAX = 64


class TrainingSpec(StageRuntime):
    RULES = (
        Rule(
            "alpha",
            "is 0 with method 'kd'; expected > 0 (or use method: sft)",
            "has(self.lora) || self.method != 'kd' || self.alpha != 0.0",
            lambda t: t.lora is not None or t.method is not TrainingMethod.kd or t.alpha != 0,
        ),
        Rule(
            "nodes",
            "is more than 1 with method 'onPolicy'; on-policy training runs on one node (expected 1, "
            "or method sft or kd)",
            "self.nodes == 1 || self.method != 'onPolicy'",
            lambda t: t.nodes == 1 or t.method is not TrainingMethod.on_policy,
        ),
    )

    method: TrainingMethod = Field(
        TrainingMethod.sft,
        description="`sft`: sequence-level KD (fine-tune on the teacher's text). "
        "`kd`: adds a loss on the teacher's stored top-k distributions. "
        "`onPolicy`: the student samples and the served teacher grades each sampled token "
        "(per-token reverse KL); the teacher is kept through training.",
    )
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    batch_size: BatchSize = Field(
        2,
        description="Sequences per device per step; `auto`: on a GPU, the largest power of two (up to 256) whose "
        "longest batch fits in its memory, found before training by halving on out-of-memory errors (8 without "
        "a GPU). `auto` changes the update size with the hardware: set the learning rate with that in mind.",
    )
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
    gpus: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs on each training node; more than one uses torchrun (a process per GPU).",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=TRAINING_NODES_MAX,
        description="Training pods, each with `gpus` GPUs, one torchrun rank group per pod (data parallel, DDP) "
        "meeting at pod 0 (c10d rendezvous through a headless Service), run as an Indexed Job or a JobSet (`launcher`). "
        "An update is `batchSize` x `gradientAccumulationSteps` x every process's sequences.",
    )
    launcher: Literal["auto", "job", "jobset"] = Field(
        "auto",
        description="What runs the training pods: `job`, an Indexed Job (with a headless Service for `nodes` > 1); "
        "`jobset`, a JobSet (jobset.x-k8s.io/v1alpha2; one replicated Job of `nodes` pods, its own headless "
        "Service, restarted as a whole up to `backoffLimit` times); `auto`, a JobSet when the operator finds the "
        "JobSet CRD on the cluster, else a Job. Same command line, checkpoints and resume either way.",
    )
    checkpoint_every_steps: int = Field(200, ge=1, description="Save a resumable checkpoint every N updates.")
    on_policy: OnPolicySpec = section(OnPolicySpec, "Settings of `method: onPolicy`.")
    packing: bool = Field(
        True,
        description="Train on padding-free packed batches: each micro-batch is one row of its sequences end to end, "
        "each attending only to itself (flash-attention's varlen kernel on GPUs). Same loss and gradients as "
        "padded batches, no compute spent on padding. Students whose attention cannot pack (sliding windows, "
        "logit soft-capping) train padded; the training log and report say why.",
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder layer: faster steps after a compilation of seconds to minutes "
        "before the first update, so it pays on long runs.",
    )
    gradient_checkpointing: bool | None = Field(
        None,
        description="Recompute activations in the backward pass instead of keeping them: about a third more "
        "compute for far less memory. Empty: on only when, on a GPU, the batch does not fit without it.",
    )

    @property
    def all_gpus(self) -> int:
        """The GPUs every training pod holds together: what the training costs."""
        return self.gpus * self.nodes


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
    max_latency_ms: float | None = Field(
        None, gt=0.0, description="Largest p95 latency of the student, in ms."
    )
    benchmarks: list[BenchmarkGate] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Floors on the student's public benchmark scores (tasks of `evaluation.benchmarks`).",
    )


class EvaluationSpec(StageRuntime):
    RULES = (
        Rule(
            "gate.minRetention",
            "needs 'teacher' in evaluation.compare to compute retention",
            "!has(self.gate.minRetention) || 'teacher' in self.compare",
            lambda e: e.gate.min_retention is None or "teacher" in e.compare,
        ),
        Rule(
            "benchmarks",
            "lists a task twice; each lm-eval task is run once",
            "!has(self.benchmarks) || self.benchmarks.all(b, self.benchmarks.filter(c, c.task == b.task).size() == 1)",
            lambda e: len({b.task for b in e.benchmarks}) == len(e.benchmarks),
        ),
        Rule(
            "gate.benchmarks",
            "names a task that is not in evaluation.benchmarks",
            "!has(self.gate.benchmarks) || self.gate.benchmarks.all(g, "
            "has(self.benchmarks) && self.benchmarks.exists(b, b.task == g.task))",
            lambda e: {g.task for g in e.gate.benchmarks} <= {b.task for b in e.benchmarks},
        ),
        Rule(
            "gate.benchmarks",
            "a minRetention floor needs 'teacher' in evaluation.compare to compute retention",
            "!has(self.gate.benchmarks) || 'teacher' in self.compare "
            "|| self.gate.benchmarks.all(g, !has(g.minRetention))",
            lambda e: "teacher" in e.compare or all(g.min_retention is None for g in e.gate.benchmarks),
        ),
        uri_rule("benchmarkTasks", optional=True),
    )

    metrics: list[Metric] = Field(
        default_factory=lambda: [
            "accuracy",
            "bleu",
            "rougeL",
            "teacherAgreement",
            "latency",
            "throughput",
            "memory",
            "size",
        ],
        min_length=1,
        max_length=LIST_MAX,
        description="What to measure; the task score is accuracy (nli, qa, math) or ROUGE-L (others).",
    )
    compare: list[Compared] = Field(
        default_factory=lambda: ["teacher", "baseline", "student"],
        min_length=1,
        max_length=LIST_MAX,
        description="Which models to score.",
    )
    max_samples: int | None = Field(None, ge=1, description="Score at most N validation records.")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight while scoring a model.")
    max_tokens: int | None = Field(None, ge=1, description="Largest answer; empty uses generation.maxTokens.")
    gpus: int = Field(1, ge=0, le=64, description="GPUs for the eval pod (it serves the student with vLLM).")
    extra_args: list[Arg] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="More vLLM server arguments when serving the student and the baseline, "
        "e.g. `--max-model-len 4096`; passed as is.",
    )
    benchmarks: list[BenchmarkSpec] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Public benchmarks: lm-evaluation-harness tasks run against every compared model while "
        "vLLM serves it; loglikelihood and multiple-choice tasks use the server's prompt log-probabilities.",
    )
    benchmark_tasks: str | None = Field(
        None,
        min_length=1,
        max_length=PATH_MAX,
        description="Directory of lm-eval task YAMLs and their data files, for tasks the hub cannot give "
        "(an offline cluster): a path on the job's storage or an `s3://bucket/prefix`; copied to local disk "
        "and passed to lm-eval as its include path. Data paths in the YAMLs are relative to it.",
    )
    gate: GateSpec = section(GateSpec, "Quality gate; a failed gate fails the job but keeps every artifact.")
