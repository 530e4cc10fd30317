"""The evaluation report (`jobs/<job>/reports/evaluation.json`) as a model: written by the evaluation stage,
read by its renderings (Markdown, PNG, model card), the export, `distillery run` and the benchmarks.

The stage builds the report as JSON (camelCase, in the order below) and writes it unchanged;
every reader parses it here instead of indexing the JSON by string. Fields a reader does not
know are kept, so an older reader can parse a newer report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from distillery.api import CostStatus

MODEL_ORDER = ("teacher", "baseline", "student")
TEACHER_FROM_RECORDS = "generation records"  # a teacher scored from generation's records, not served


class Part(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class BenchmarkScore(Part):
    """One metric of one lm-eval task: its value and, where lm-eval gives one, its standard error."""

    value: float | None = None
    stderr: float | None = None


class BenchmarkResult(Part):
    """One lm-eval task's scores for one model, by metric as lm-eval names it (`acc`, `exact_match,strip`)."""

    samples: int | None = None
    metrics: dict[str, BenchmarkScore] = {}


class ModelEntry(Part):
    """One compared model's row: task scores, serving figures, size, public benchmark scores by task."""

    model: str | None = None
    source: str = ""
    score: float | None = None
    accuracy: float | None = None
    bleu: float | None = None
    rouge_l: float | None = None
    teacher_agreement: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_mean_ms: float | None = None
    output_tokens_per_second: float | None = None
    responses_per_second: float | None = None
    cpu_ms_per_output_token: float | None = None
    output_tokens: int | None = None
    peak_memory_bytes: int | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    answered: int | None = None
    errors: int | None = None
    benchmarks: dict[str, BenchmarkResult] = {}

    def benchmark(self, task: str, metric: str) -> float | None:
        """One benchmark score, or None when this model has none for that task and metric."""
        result = self.benchmarks.get(task)
        score = result.metrics.get(metric) if result else None
        return score.value if score else None

    def value(self, column: str) -> Any:
        """A column by its name in the JSON (`accuracy`, `rougeL`, `teacherAgreement`, ...)."""
        return self.model_dump(by_alias=True).get(column)

    @property
    def live(self) -> bool:
        """Asked for this evaluation (served or called), not scored from generation's records."""
        return self.source != TEACHER_FROM_RECORDS


class GateCheck(Part):
    name: str
    passed: bool
    text: str = ""
    threshold: float | None = None
    value: float | None = None


class Gate(Part):
    passed: bool
    reason: str
    checks: list[GateCheck] = []

    def thresholds(self) -> dict[str, float | None]:
        return {check.name: check.threshold for check in self.checks}


class Improvement(Part):
    absolute: float | None = None
    relative: float | None = None


class Measurement(Part):
    """How the compared models' latency and throughput were measured (`evaluation.measure`)."""

    rounds: int = 0
    concurrency: int | None = None
    max_tokens: int | None = None
    server_args: list[str] = []
    sources: dict[str, str] = {}
    comparable: bool = False
    text: str = ""


class BenchmarkRun(Part):
    """One lm-eval task as it was run: the spec's entry."""

    task: str
    num_fewshot: int = 0
    limit: int | None = None


class Benchmarks(Part):
    """The public benchmarks run against every compared model (`evaluation.benchmarks`)."""

    harness: str = ""
    tasks: list[BenchmarkRun] = []
    retention: dict[str, dict[str, float]] = {}  # task -> metric -> student / teacher


class Output(Part):
    uri: str
    written: bool
    reason: str = ""
    files: int | None = None
    bytes: int | None = None


class DataCleaning(Part):
    decontaminated: int = 0
    rejected: int = 0
    duplicates: int = 0


class Rejudged(Part):
    at: str
    previous_gate: str


class Fingerprints(Part):
    generate: str | None = None
    train: str | None = None
    evaluate: str | None = None


class InputDigest(Part):
    path: str
    sha256: str | None = None
    etag: str | None = None
    bytes: int | None = None
    missing: bool = False

    @property
    def identity(self) -> str | None:
        return self.sha256 or self.etag


class TreeDigest(Part):
    sha256: str | None = None
    files: int = 0
    bytes: int = 0
    missing: bool = False


class StudentFile(Part):
    path: str
    bytes: int
    sha256: str


class StudentFiles(Part):
    path: str
    files: list[StudentFile] = []


class ModelReference(Part):
    model: str | None = None
    resolved: str | None = None
    endpoint: str | None = None


class Lineage(Part):
    job: str | None = None
    spec_hash: str | None = None
    distillery_version: str | None = None
    teacher: ModelReference = ModelReference()
    student_base: ModelReference = ModelReference()
    training_method: str | None = None
    data: dict[str, InputDigest | None] = {}
    generated: dict[str, TreeDigest] = {}
    student: StudentFiles | None = None


class EvaluationReport(Part):
    """The whole report, as `evaluation.json` holds it."""

    fingerprints: Fingerprints | None = None
    job: str = ""
    created: str = ""
    task_type: str = ""
    metric: str = ""
    samples: int = 0
    with_reference: int | None = None
    max_tokens: int | None = None
    concurrency: int | None = None
    measurement: Measurement | None = None
    models: dict[str, ModelEntry] = {}
    retention: float | None = None
    improvement: Improvement | None = None
    gate: Gate
    notes: list[str] = []
    data_cleaning: DataCleaning | None = None
    lineage: Lineage = Lineage()
    cost: CostStatus | None = None
    output: Output | None = None
    rejudged: Rejudged | None = None
    benchmarks: Benchmarks | None = None

    @classmethod
    def of(cls, report: EvaluationReport | dict[str, Any]) -> EvaluationReport:
        """The report as the model (the stage builds it as the JSON it writes)."""
        return report if isinstance(report, EvaluationReport) else cls.model_validate(report)

    @classmethod
    def read(cls, path: Path) -> EvaluationReport:
        """The report a stage wrote (ValueError when it is not one)."""
        return cls.model_validate(json.loads(Path(path).read_text()))

    def compared(self) -> list[tuple[str, ModelEntry]]:
        """(name, entry) of each compared model, teacher, baseline, student."""
        return [(name, self.models[name]) for name in MODEL_ORDER if name in self.models]

    def score(self, name: str) -> float | None:
        entry = self.models.get(name)
        return entry.score if entry else None

    @property
    def student(self) -> ModelEntry:
        return self.models.get("student") or ModelEntry()

    @property
    def live_requests(self) -> int:
        """Answers asked of the models served or called for this evaluation (not a teacher scored from records)."""
        return sum((e.answered or 0) + (e.errors or 0) for e in self.models.values() if e.live)


class TrainingReport(BaseModel):
    """The training report (`jobs/<job>/reports/training.json`): written by the training stage, read by the
    evaluation stage (duplicates, fingerprint), the model card and the export. Snake_case on disk, as the
    training summary's fields; fields a reader does not know are kept."""

    model_config = ConfigDict(extra="allow")

    method: str | None = None
    step: int | None = None
    train_loss: float | None = None
    validation_loss: float | None = None
    duplicates: int = 0
    fingerprint: str | None = None
    examples: int | None = None
    skipped_examples: int | None = None
    validation_examples: int | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None
    lora: dict[str, Any] | None = None
    device: str | None = None
    world_size: int | None = None
    hyperparameters: dict[str, Any] = {}

    @classmethod
    def read(cls, path: Path) -> TrainingReport | None:
        """The report training wrote there; None when there is none or it cannot be read (a student trained
        elsewhere, or a file cut short)."""
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            return None
