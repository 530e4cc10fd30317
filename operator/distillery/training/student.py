"""The training stage for one job: the teacher's records -> examples -> the trained student on storage.

Reads every record file under `generated/train/` (and `generated/validation/` for a
validation loss per epoch), trains with sequence-level KD (`sft`: cross-entropy on the
teacher's responses) or adds logit KD (`kd`: the teacher's stored top-k), optionally
through LoRA adapters, and writes the student (safetensors + tokenizer + config; LoRA
merged), `reports/training.json` and resumable checkpoints. The loop is
`training.loop`; torch and transformers are imported only when training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery import atomic, fingerprints
from distillery.api import DistillationJob, TrainingMethod
from distillery.contract.records import read_records
from distillery.contract.report import TrainingReport
from distillery.contract.summaries import FailureReason, StageFailed, TrainSummary
from distillery.errors import one_line
from distillery.storage import Layout, generated_fingerprint, record_key, resolve_model
from distillery.tokenizer import FALLBACK_CHAT_TEMPLATE, check_same_tokenizer, refuse, student_tokenizer


def load_examples(
    files: list[Path], tokenizer: Any, max_length: int, use_teacher_tokens: bool, dedup: bool = False
):
    """(examples, skipped, records with the teacher's top-k, duplicates) from record files.

    The examples come ordered by their (prompt, response), not in the order the shards wrote them:
    a shard writes each answer as it comes back, so that order (and which of two equal answers it
    kept) changes from run to run and after a resume; the seeded batch order then starts from the
    same list, so the student is a function of the records.

    `dedup`: a record whose (prompt, response) an earlier one had is dropped and counted: each
    shard dedups its own records, this catches those repeated across shards.
    """
    from distillery.training.data import encode

    keyed, seen = [], set()
    skipped, scored, duplicates = 0, 0, 0
    for record in read_records(files):
        key = record_key(record.messages, record.response)
        if dedup:
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
        scored += record.has_teacher_top
        example = encode(record, tokenizer, max_length, use_teacher_tokens)
        if example is None:
            skipped += 1
        else:
            keyed.append((key, example))
    keyed.sort(key=lambda pair: pair[0])  # stable: equal pairs (no dedup) keep their file order
    return [example for _, example in keyed], skipped, scored, duplicates


def _save_student(model: Any, tokenizer: Any, target: Path, dtype: Any) -> None:
    """safetensors + config + tokenizer, written beside the target and renamed into place."""
    if hasattr(model, "merge_and_unload"):  # LoRA: fold the adapters into the weights
        model = model.merge_and_unload()
    with atomic.replacing_directory(target) as tmp:
        model.to(dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


@dataclass
class TrainingData:
    """The student's tokenizer and the examples it trains and validates on."""

    tokenizer: Any
    pad_id: int
    examples: list[Any]
    validation: list[Any]
    skipped: int
    duplicates: int = 0
    fingerprint: str = ""  # of this training run: the spec's student and training, and the records'


def prepare_data(job: DistillationJob, root: Path, layout: Layout, say: Callable[..., None]) -> TrainingData:
    """Tokenize the teacher's records with the student's chat template; refuse what cannot train."""
    from distillery.training.data import record_files

    spec, training = job.spec, job.spec.training
    shards = spec.generation.shards
    train_files = record_files(layout.generated("train"), shards)
    try:
        upstream = generated_fingerprint(layout, "train", shards)
    except ValueError as error:
        raise StageFailed(f"spec.generation: {error}", FailureReason.stale_data) from None
    if not train_files:
        raise StageFailed(
            f"spec.data.train: no teacher records under {layout.generated('train')}; run the generate stage first",
            FailureReason.no_data,
        )
    tokenizer = student_tokenizer(job, root)
    if not tokenizer.chat_template:
        say("the student's tokenizer has no chat template; using ChatML (saved with the student)")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    kd = training.method is TrainingMethod.kd
    check_same_tokenizer(job, root, tokenizer)
    examples, skipped, scored, duplicates = load_examples(
        train_files, tokenizer, training.max_seq_length, kd, dedup=spec.generation.filters.dedup
    )
    if not examples:
        raise refuse(
            "spec.training.maxSeqLength",
            f"no record fits in {training.max_seq_length} tokens with room for an answer",
        )
    if kd and scored == 0:
        raise refuse(
            "spec.training.method",
            "is 'kd' but no record carries the teacher's top-k logprobs (was generation.topLogprobs 0 "
            "when the data was generated?); regenerate with topLogprobs > 0 or use training.method: sft",
        )
    validation, _, _, _ = load_examples(
        record_files(layout.generated("validation"), shards), tokenizer, training.max_seq_length, kd
    )
    say(
        f"{len(examples)} training examples ({skipped} skipped: prompt longer than maxSeqLength, "
        f"{duplicates} duplicates across shards), {len(validation)} validation examples, "
        f"method {training.method.value}"
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fingerprint = fingerprints.training(job, upstream or "unstamped")
    return TrainingData(tokenizer, pad_id, examples, validation, skipped, duplicates, fingerprint)


def load_student(job: DistillationJob, root: Path, device: Any) -> tuple[Any, Any, int]:
    """The student in fp32 master weights (LoRA-wrapped when asked), the dtype to save it in, its size."""
    import torch
    from transformers import AutoModelForCausalLM

    training = job.spec.training
    torch.manual_seed(training.seed)
    reference = resolve_model(root, job.spec.student.model)
    try:
        model = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32)
    except (
        OSError,
        ValueError,
        KeyError,
    ) as error:  # no weights, no config, an unknown model_type, offline hub
        raise StageFailed(
            f"spec.student.model: cannot load {reference!r}: {one_line(error)}",
            FailureReason.model_unloadable,
        ) from None
    saved_dtype = getattr(model.config, "dtype", None) or torch.float32
    saved_dtype = getattr(torch, saved_dtype) if isinstance(saved_dtype, str) else saved_dtype
    parameters = sum(p.numel() for p in model.parameters())
    if training.lora:
        from peft import LoraConfig, get_peft_model

        lora = training.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    return model.to(device), saved_dtype, parameters


def train_config(job: DistillationJob, fingerprint: str = "") -> Any:
    """The loop's settings from the spec's `training` section (and the stage's fingerprint, for resuming)."""
    from distillery.training.config import TrainConfig
    from distillery.training.onpolicy import OnPolicyConfig

    training, on_policy = job.spec.training, None
    if training.method is TrainingMethod.on_policy:
        knobs = training.on_policy
        on_policy = OnPolicyConfig(
            fraction=knobs.fraction,
            samples_per_prompt=knobs.samples_per_prompt,
            temperature=knobs.temperature,
            max_new_tokens=knobs.max_tokens or job.spec.generation.max_tokens,
            top_logprobs=knobs.top_logprobs,
            max_seq_length=training.max_seq_length,
        )
    return TrainConfig(
        fingerprint=fingerprint,
        learning_rate=training.learning_rate,
        batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        epochs=training.epochs,
        warmup_ratio=training.warmup_ratio,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        precision=training.precision,
        seed=training.seed,
        kd=training.method is TrainingMethod.kd,
        kd_temperature=training.kd_temperature,
        alpha=training.alpha,
        checkpoint_every_steps=training.checkpoint_every_steps,
        on_policy=on_policy,
        packing=training.packing,
        compile=training.compile,
        gradient_checkpointing=training.gradient_checkpointing,
    )


# ------------------------------------------------------------------ onPolicy: the teacher grades


def grading_failed(error: Any, job: DistillationJob, url: str) -> Exception:
    """A teacher request that failed for good, as the refusal or stage failure it means."""
    from distillery.serving.prompt_logprobs import TeacherCannotGrade

    teacher = job.spec.teacher
    if isinstance(error, TeacherCannotGrade):
        return refuse(
            "spec.teacher.endpoint" if teacher.endpoint is not None else "spec.teacher.model",
            f"cannot grade the student's samples: {error}. training.method onPolicy needs a teacher that returns "
            "the log-probabilities of given token ids (vLLM's prompt_logprobs); use training.method: sft instead",
        )
    if error.kind == "http_400" and "vocabulary" in str(error):  # vLLM: "Token id N is out of vocabulary"
        return refuse(
            "spec.training.method",
            f"is 'onPolicy' but the teacher refuses the student's token ids "
            f"({error}): their tokenizers differ; use training.method: sft",
        )
    if error.kind in ("http_401", "http_403", "http_404"):
        return StageFailed(
            f"the teacher at {url} refused the request: {error}; check teacher.endpoint.apiKeySecret "
            "and the model name",
            FailureReason.teacher_refused,
        )
    return StageFailed(f"the teacher at {url} is unreachable: {error}", FailureReason.teacher_unreachable)


@contextlib.contextmanager
def on_policy_source(
    job: DistillationJob,
    data: TrainingData,
    model: Any,
    device: Any,
    rank: int,
    teacher_url: str | None,
    teacher_model: str | None,
) -> Iterator[Any]:
    """The source of on-policy batches (None for other methods), its teacher checked on one real prompt first:
    it must answer, return the log-probabilities of given token ids, and read those ids as the student does."""
    if job.spec.training.method is not TrainingMethod.on_policy:
        yield None
        return
    from distillery.serving.client import RequestFailed, teacher_connection
    from distillery.serving.prompt_logprobs import PromptLogprobsClient
    from distillery.training.onpolicy import OnPolicySource, stop_token_ids, tokens_disagreeing

    teacher, knobs = job.spec.teacher, job.spec.training.on_policy
    if teacher.endpoint is None and not teacher_url:
        raise refuse(
            "--teacher-url", "is required: training.method onPolicy asks the served teacher to grade"
        )
    connection = teacher_connection(teacher, teacher_url)
    connection = dataclasses.replace(connection, model=teacher_model or connection.model)
    with PromptLogprobsClient(
        connection, timeout=knobs.request_timeout_seconds, max_retries=knobs.max_retries
    ) as client:

        def grade(sequences: list[list[int]], starts: list[int], top_k: int) -> list[Any]:
            try:
                return client.grade(sequences, starts, top_k)
            except RequestFailed as error:
                raise grading_failed(error, job, connection.base_url) from None

        probe = data.examples[0].input_ids  # a real prompt and the teacher's own answer
        disagreeing = tokens_disagreeing(data.tokenizer, probe, 1, grade([probe], [1], knobs.top_logprobs)[0])
        if disagreeing:
            raise refuse(
                "spec.training.method",
                "is 'onPolicy' but the teacher reads token ids differently from "
                f"the student's tokenizer ({'; '.join(disagreeing[:3])}); use training.method: sft",
            )
        source = OnPolicySource(
            model,
            train_config(job).on_policy,
            grade,
            stop_ids=stop_token_ids(data.tokenizer),
            pad_id=data.pad_id,
            seed=job.spec.training.seed,
            rank=rank,
            device=device,
        )
        yield source


# ------------------------------------------------------------------ the stage

# Hyperparameters the training report repeats, as the spec names them.
REPORTED_SETTINGS = {
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "epochs",
    "max_seq_length",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "precision",
    "seed",
    "kd_temperature",
    "alpha",
    "on_policy",
    "packing",
    "compile",
    "gradient_checkpointing",
}
REPORTED_RUN = (
    "precision",
    "loss_tokens",
    "computed_tokens",
    "padding_fraction",
    "train_seconds",
    "validation",
    "history",
    "on_policy",
    "efficiency",
)


def _summary(
    job: DistillationJob, layout: Layout, run: dict[str, Any], began: float, data: Any
) -> TrainSummary:
    on_policy = [p["on_policy"] for p in run["history"] if "on_policy" in p]
    counts = run.get("on_policy") or {}
    return TrainSummary(
        method=job.spec.training.method.value,
        student=str(layout.student),
        epoch=float(job.spec.training.epochs),
        step=run["updates"],
        train_loss=run["history"][-1]["loss"] if run["history"] else None,
        validation_loss=run["validation"][-1]["loss"] if run["validation"] else None,
        tokens=run["tokens"],
        tokens_per_second=run["tokens_per_second"],
        resumed_from_step=run["resumed_from_step"],
        on_policy_loss=on_policy[-1] if on_policy else None,
        on_policy_updates=counts.get("updates"),
        teacher_scored_tokens=counts.get("scored_tokens"),
        teacher_prompt_tokens=counts.get("teacher_tokens"),
        duration_seconds=round(time.time() - began, 1),
        duplicates=data.duplicates,
        fingerprint=data.fingerprint,
    )


def train_student(
    job: DistillationJob, storage_root: Path, teacher_url: str | None = None, teacher_model: str | None = None
) -> TrainSummary:
    """Train the job's student on its generated records; returns the summary (also in the report).

    `teacher_url` / `teacher_model`: where the teacher grades the student's samples (onPolicy)."""
    import torch

    from distillery.training.loop import Distributed, train

    began = time.time()
    root = Path(storage_root)
    training = job.spec.training
    layout = Layout.of(job, root)
    dist = Distributed.from_env()
    say = print if dist.is_main else (lambda *_a, **_k: None)
    data = prepare_data(job, root, layout, say)
    device = dist.setup(use_gpu=training.gpus > 0 and torch.cuda.is_available())
    model, saved_dtype, parameters = load_student(job, root, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    try:
        with on_policy_source(job, data, model, device, dist.rank, teacher_url, teacher_model) as source:
            run = train(
                model,
                data.examples,
                data.validation,
                train_config(job, data.fingerprint),
                pad_id=data.pad_id,
                device=device,
                checkpoint_dir=layout.checkpoints,
                dist=dist,
                log=say,
                on_policy=source,
            )
    except ValueError as error:
        raise refuse("spec.training", str(error)) from None
    summary = _summary(job, layout, run, began, data)
    if dist.is_main:
        _save_student(model, data.tokenizer, layout.student, saved_dtype)
        report = TrainingReport.model_validate(
            {
                **summary.model_dump(),
                "examples": len(data.examples),
                "skipped_examples": data.skipped,
                "validation_examples": len(data.validation),
                "parameters": parameters,
                "trainable_parameters": trainable,
                "lora": training.lora.model_dump(by_alias=True) if training.lora else None,
                "device": device.type,
                "world_size": dist.world_size,
                "hyperparameters": training.model_dump(mode="json", by_alias=True, include=REPORTED_SETTINGS),
                **{k: run[k] for k in REPORTED_RUN},
            }
        )
        atomic.write_json(layout.training_report, report.model_dump(mode="json"), sort_keys=False)
    dist.barrier()
    if dist.world_size > 1:
        torch.distributed.destroy_process_group()
    return summary
