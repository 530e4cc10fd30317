"""Are the job's inputs there and readable? Checked before the teacher starts, by `distillery check` (a small
Job on a cluster) and by `distillery run`'s preflight: the same function for both.

Each input (`data.train`, `data.validation`: a path on the storage or an `s3://` URI) is opened
and its first records parsed and turned into prompts, so a missing object, refused credentials,
an unreachable store, a wrong format or a record the task cannot use fails in seconds, naming the
field and the location, instead of after the teacher has loaded. Models given as paths on the
storage must be directories there (a Hugging Face id is left to the server that loads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob, is_uri
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


def looks_local(root: Path, value: str) -> bool:
    """Whether a model reference means a path (absolute, ./, ../, or under an existing storage directory)
    rather than a Hugging Face id such as `org/name`."""
    if is_uri(value):
        return False
    if value.startswith(("/", "./", "../", "~")):
        return True
    first = Path(value).parts[0] if Path(value).parts else ""
    return bool(first) and (root / first).is_dir()


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
    models = [("spec.student.model", spec.student.model)]
    if spec.teacher.model is not None:
        models.append(("spec.teacher.model", spec.teacher.model))
    for field_name, value in models:
        if looks_local(root, value) and not Path(resolve_model(root, value)).is_dir():
            message = f"{value} is not a model directory under the storage {root}"
            result.findings.append(Finding(field_name, message, FailureReason.input_not_found))
    return result


def failure_text(result: InputsChecked) -> str:
    """One line per finding, each naming its field: what the job's condition and Event say."""
    return "; ".join(f"{f.field}: {f.message}" for f in result.findings)
