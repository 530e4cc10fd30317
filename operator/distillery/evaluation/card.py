"""The model card exported with the student: a Hugging Face style README.md. Pure.

Front matter a model hub reads (base model, library, tags), then what a person needs before
using the student: how it scored against its teacher and its base model, whether it passed
the gate, how it was trained, on what data, and the lineage that traces it back.
"""

from __future__ import annotations

from typing import Any

from distillery.api import DistillationJob
from distillery.contract.report import EvaluationReport, TrainingReport


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _teacher_name(job: DistillationJob) -> str:
    teacher = job.spec.teacher
    return teacher.model if teacher.endpoint is None else f"{teacher.endpoint.model} ({teacher.endpoint.url})"


def front_matter(job: DistillationJob) -> list[str]:
    tags = ["distillation", "knowledge-distillation", "distillery", job.spec.data.task_type.value]
    return [
        "---",
        f"base_model: {job.spec.student.model}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        *[f"- {tag}" for tag in tags],
        "---",
        "",
    ]


def evaluation_table(report: EvaluationReport) -> list[str]:
    metric = report.metric
    out = [
        f"| model | {metric} | p50 latency (ms) | p95 latency (ms) | parameters | source |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report.compared():
        row = [
            f"**{name}**",
            _num(entry.score),
            _num(entry.latency_p50_ms, 0),
            _num(entry.latency_p95_ms, 0),
            _num(entry.parameters),
            entry.source,
        ]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if report.retention is not None:
        out.append(f"- Retention (student / teacher {metric}): **{report.retention:.3f}**")
    gain = report.improvement.absolute if report.improvement else None
    if gain is not None:
        out.append(f"- Improvement over the base model: {gain:+.3f} {metric}")
    gate = report.gate
    out.append(f"- Quality gate: **{'passed' if gate.passed else 'FAILED'}** ({gate.reason})")
    return [*out, ""]


def training_section(job: DistillationJob, training: TrainingReport | None) -> list[str]:
    spec = job.spec.training
    out = [
        f"- Method: `{spec.method.value}` "
        + (
            "(sequence-level KD: fine-tuned on the teacher's answers)"
            if spec.method.value == "sft"
            else f"(logit KD on the teacher's top-k, temperature {spec.kd_temperature:g}, alpha {spec.alpha:g})"
        )
    ]
    settings = (training.hyperparameters if training else None) or job.spec.training.model_dump(
        mode="json", by_alias=True, include={"learning_rate", "batch_size", "epochs", "max_seq_length"}
    )
    out.append("- Settings: " + ", ".join(f"{key} `{value}`" for key, value in sorted(settings.items())))
    if spec.lora is not None:
        out.append(f"- LoRA: r {spec.lora.r}, alpha {spec.lora.alpha}, merged into the weights")
    if training:
        out.append(
            f"- {training.examples} training examples, {training.step} updates, final loss "
            f"{_num(training.train_loss, 4)}, validation loss {_num(training.validation_loss, 4)}, "
            f"on {training.device} x{training.world_size}"
        )
    return [*out, ""]


def data_section(job: DistillationJob, report: EvaluationReport) -> list[str]:
    data = job.spec.data
    out = [f"- Task: `{data.task_type.value}`; teacher: `{_teacher_name(job)}`"]
    for split in ("train", "validation"):
        entry = report.lineage.data.get(split)
        if entry:
            out.append(f"- {split}: `{entry.path}` (`{entry.identity}`, {entry.bytes} bytes)")
    cleaning = report.data_cleaning
    if cleaning:
        out.append(
            f"- Cleaning: {cleaning.decontaminated} training prompts dropped for overlapping "
            f"validation prompts ({data.decontamination.ngram_size}-gram overlap above "
            f"{data.decontamination.max_overlap:g}); {cleaning.duplicates} duplicate teacher "
            f"records dropped across shards; {cleaning.rejected} teacher answers rejected by the filters"
        )
    return [*out, ""]


def lineage_section(report: EvaluationReport) -> list[str]:
    lineage = report.lineage
    out = [f"- Spec: `{lineage.spec_hash}`, distillery {lineage.distillery_version}"]
    prints = report.fingerprints.model_dump() if report.fingerprints else {}
    if prints:
        out.append("- Stage fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in prints.items()))
    out.append(f"- Student base: `{lineage.student_base.model}`")
    files = lineage.student.files if lineage.student else []
    out += [f"- `{f.path}` `{f.sha256}`" for f in files]
    return [*out, ""]


def model_card(
    job: DistillationJob, report: EvaluationReport | dict[str, Any], training: TrainingReport | None
) -> str:
    """README.md for the exported student."""
    report = EvaluationReport.of(report)
    name = job.metadata.name or "student"
    out = front_matter(job)
    out += [
        f"# {name}",
        "",
        f"A student distilled from `{_teacher_name(job)}` into `{job.spec.student.model}` by "
        f"Distillery ({report.task_type}, scored by {report.metric} on {report.samples} held-out prompts).",
        "",
        "## Evaluation",
        "",
        *evaluation_table(report),
        "## Training",
        "",
        *training_section(job, training),
        "## Data",
        "",
        *data_section(job, report),
        "## Lineage",
        "",
        *lineage_section(report),
        "## Use",
        "",
        "```bash",
        "vllm serve .   # in a copy of this directory; the chat template is in the tokenizer files",
        "```",
        "",
        "The full report is in `report/` (`evaluation.json`, `evaluation.md`, `evaluation.png`, `training.json`).",
    ]
    return "\n".join(out) + "\n"
