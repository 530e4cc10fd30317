"""Are the job's inputs there and readable? Checked before the teacher starts, by `distillery check` (a small
Job on a cluster) and by `distillery run`'s preflight: the same function for both.

Each input (`data.train`, `data.validation`: a path on the storage or an `s3://` URI) is opened
and its first records parsed and turned into prompts, so a missing object, refused credentials,
an unreachable store, a wrong format or a record the task cannot use fails in seconds, naming the
field and the location, instead of after the teacher has loaded. Models given as paths on the
storage must be directories there (a Hugging Face id is left to the server that loads it). Every
lm-eval task in `evaluation.benchmarks` is loaded as the evaluation will load it (its YAML found,
its data read and parsed), so an unknown task, a missing data file or a hub-only task on an offline
cluster fails here, naming the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob, is_uri
from distillery.api.models_ref import ModelRef, classify, model_fields
from distillery.contract.summaries import FailureReason
from distillery.datasource import InputError, check_input, resolve
from distillery.storage import resolve_model

RECORDS_CHECKED = 3


@dataclass(frozen=True)
class Finding:
    """One thing wrong: the spec field, what is wrong (naming the location), and the reason for the condition."""

    field: str
    message: str
    reason: FailureReason


@dataclass
class InputsChecked:
    inputs: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # field -> identity, format, records checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def model_ref(root: Path, value: str) -> ModelRef:
    """A model reference as `classify` reads its text, except that a hub-id-shaped value whose first directory
    exists on the storage (`models/teacher` with `models/` there) is a path."""
    ref = classify(value)
    if ref.kind == "hub" and (root / value.split("/")[0]).is_dir():
        return ModelRef(value, "path")
    return ref


def looks_local(root: Path, value: str) -> bool:
    """Whether a model reference means a path on the storage rather than a Hugging Face id such as `org/name`."""
    return model_ref(root, value).kind == "path"


def model_findings(job: DistillationJob, root: Path) -> list[Finding]:
    """Each model reference that is neither a path nor a hub id, or a path that is not a directory."""
    findings = []
    for field_name, value in model_fields(job.spec):
        ref = model_ref(root, value)
        if ref.problem:
            findings.append(Finding(field_name, ref.problem, FailureReason.invalid_spec))
        elif ref.kind == "path" and not Path(resolve_model(root, value)).is_dir():
            where = "" if Path(value).expanduser().is_absolute() else f" under the storage {root}"
            message = f"{value} is not a model directory{where} (read as a path, not a Hugging Face id)"
            findings.append(Finding(field_name, message, FailureReason.input_not_found))
    return findings


def _prompt_check(job: DistillationJob):
    from distillery.tasks import RecordError, build_messages

    def check(record: dict) -> None:
        try:
            build_messages(job.spec.data, record)
        except RecordError as error:
            raise ValueError(str(error)) from None

    return check


def _finding(field_name: str, value: str, root: Path, error: InputError) -> Finding:
    if error.reason is FailureReason.input_not_found and not is_uri(value):
        return Finding(field_name, f"{value} is not a file under the storage {root}", error.reason)
    if error.reason is FailureReason.input_not_found:
        return Finding(
            field_name, f"{value} does not exist (no such object, or no such bucket)", error.reason
        )
    return Finding(field_name, str(error), error.reason)


def check_job(job: DistillationJob, root: Path | str, records: int = RECORDS_CHECKED) -> InputsChecked:
    """Open every input and parse its first records; check that models given as paths exist."""
    root = Path(root)
    spec = job.spec
    result = InputsChecked()
    for name in ("train", "validation"):
        value = getattr(spec.data, name)
        if value is None:
            continue
        field_name = f"spec.data.{name}"
        try:
            result.inputs[field_name] = check_input(
                value,
                root=root,
                field=f"data.{name}",
                declared_format=spec.data.format,
                store=spec.storage.object_store,
                records=records,
                validate=_prompt_check(job),
            )
            result.inputs[field_name]["location"] = value if is_uri(value) else resolve(value, root)
        except InputError as error:
            result.findings.append(_finding(field_name, value, root, error))
    result.findings += model_findings(job, root)
    result.findings += benchmark_findings(job, root)
    return result


def benchmark_findings(job: DistillationJob, root: Path, work: Path | None = None) -> list[Finding]:
    """Each lm-eval task of `evaluation.benchmarks` that cannot load, naming the task and what is missing.
    An `s3://` task directory is copied under `work` (a temporary directory when None)."""
    import tempfile

    from distillery.benchmark_tasks import BenchmarkFailed, load_problems, task_directory

    benchmarks = job.spec.evaluation.benchmarks
    if not benchmarks:
        return []
    with tempfile.TemporaryDirectory(prefix="benchmark-tasks-") as scratch:
        try:
            directory = task_directory(job, root, Path(work or scratch) / "benchmark-tasks")
        except (BenchmarkFailed, InputError, OSError) as error:
            message = str(error).removeprefix("evaluation.benchmarkTasks: ")
            return [Finding("spec.evaluation.benchmarkTasks", message, FailureReason.input_not_found)]
        problems = load_problems(benchmarks, directory)
    index = {b.task: k for k, b in enumerate(benchmarks)}
    return [
        Finding(
            f"spec.evaluation.benchmarks[{index[p.task]}].task",
            f"{p.task}: {p.message}",
            FailureReason.input_not_found,
        )
        for p in problems
    ]


def failure_text(result: InputsChecked) -> str:
    """One line per finding, each naming its field: what the job's condition and Event say."""
    return "; ".join(f"{f.field}: {f.message}" for f in result.findings)
