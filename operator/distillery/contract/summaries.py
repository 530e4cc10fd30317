"""What each stage reports when it ends, as typed models: written by the stage, read by the operator and `distillery run`.

A stage ends by writing its summary as compact JSON to its termination message
(`/dev/termination-log` in a pod, `$DISTILLERY_TERMINATION_LOG` elsewhere; the kubelet keeps
4 KiB of it) and as the last line of its stdout. A summary says the same thing on success
and on failure: counts and durations so far, and on failure a `failure` with a reason a
program can match on and the message a person needs ("malformed line 12", "teacher
unreachable"), which the operator puts in the job's condition and Event unchanged.

Field names are camelCase on the wire, as in the status they end up in. Readers ignore
fields they do not know, so an older operator can read a newer stage's summary.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from distillery import atomic
from distillery.api import EvaluationStatus
from distillery.contract.commands import TERMINATION_LOG_ENV, TERMINATION_LOG_PATH

# The kubelet keeps at most this much of a termination message.
TERMINATION_LIMIT = 4096
# A failure message longer than this is cut (keeping its end, where the cause usually is).
MESSAGE_LIMIT = 1500


class FailureReason(str, enum.Enum):
    """Why a stage failed: one CamelCase word, used as the job condition's reason."""

    invalid_spec = "InvalidSpec"  # the spec cannot work for this stage (e.g. kd with different tokenizers)
    invalid_input = "InvalidInput"  # an input is malformed (the message names the line or row)
    input_not_found = "InputNotFound"  # an input file, object or bucket does not exist (the message names it)
    access_denied = "AccessDenied"  # the object store refused the credentials
    input_unreadable = "InputUnreadable"  # the store did not answer, or another I/O error
    storage_unwritable = "StorageUnwritable"  # the job's storage refused a write (read-only, missing, full)
    model_unloadable = (
        "ModelUnloadable"  # a model (or its tokenizer) could not be loaded; the message names the field
    )
    export_failed = "ExportFailed"  # the student, report or model card could not be written to spec.output
    teacher_unreachable = "TeacherUnreachable"  # no answer from the teacher's URL
    teacher_refused = "TeacherRefused"  # wrong API key or model name
    smoke_test_failed = "SmokeTestFailed"  # the first prompts all failed or were all rejected
    too_few_accepted = "TooFewAccepted"  # below generation.minSuccessRatio
    no_data = "NoData"  # nothing to train or evaluate on
    stale_data = "StaleData"  # an upstream result on storage was made for another spec or other inputs
    server_failed = "ServerFailed"  # vLLM could not serve a model being evaluated
    crashed = "Crashed"  # an unexpected error; the pod's log has the traceback


class StageFailed(Exception):
    """Raised by stage code for a failure it understands; becomes the summary's `failure`."""

    reason: FailureReason = FailureReason.crashed

    def __init__(self, message: str, reason: FailureReason | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Failure(_Wire):
    reason: FailureReason
    message: str

    @classmethod
    def of(cls, reason: FailureReason, message: str) -> Failure:
        text = message.strip()
        if len(text) > MESSAGE_LIMIT:
            text = "…" + text[-MESSAGE_LIMIT:]
        return cls(reason=reason, message=text)


# Stage -> its summary model; each registers itself, so a summary is parsed by its `stage` and the
# stage table (contract.stages) can check it names every one.
SUMMARY_TYPES: dict[str, type[StageSummary]] = {}


class StageSummary(_Wire):
    stage: str
    failure: Failure | None = None
    duration_seconds: float | None = None
    # What this process held and used (contract.cost): GPUs its pod holds, GPUs x duration, CPU time.
    gpus: int | None = None
    gpu_seconds: float | None = None
    cpu_seconds: float | None = None
    fingerprint: str | None = None  # of what decided the stage's output (`distillery.fingerprints`)

    @property
    def succeeded(self) -> bool:
        return self.failure is None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        SUMMARY_TYPES[cls.model_fields["stage"].default] = cls


class SplitCounts(_Wire):
    prompts: int = 0
    records: int = 0
    errors: int = 0


class InputSummary(_Wire):
    location: str | None = None  # the path or URI, as read (never with credentials)
    format: str | None = None
    bytes: int | None = None
    checked: int = 0  # records parsed


class CheckSummary(StageSummary):
    """The inputs and models checked before the teacher starts."""

    stage: Literal["check"] = "check"
    inputs: dict[str, InputSummary] = Field(default_factory=dict)  # by spec field


class GenerateSummary(StageSummary):
    """One generation shard (both splits)."""

    stage: Literal["generate"] = "generate"
    shard: int = 0
    shards: int = 1
    teacher_model: str | None = None
    prompts: int = 0
    records: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)  # by reason
    decontaminated: int = 0  # training prompts dropped for overlapping validation prompts
    errors: int = 0  # prompts whose request failed for good
    error_samples: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    resumed: int = 0  # prompts an earlier run of this shard had done
    output_tokens_per_second: float | None = None
    splits: dict[str, SplitCounts] = Field(default_factory=dict)


class TrainSummary(StageSummary):
    stage: Literal["train"] = "train"
    method: str | None = None
    student: str | None = None  # where the student was saved
    epoch: float | None = None
    step: int | None = None
    train_loss: float | None = None
    validation_loss: float | None = None
    tokens: int | None = None  # real (non-padding) tokens trained on
    tokens_per_second: float | None = None
    resumed_from_step: int | None = None
    duplicates: int | None = None  # teacher records dropped as exact duplicates across shards
    on_policy_loss: float | None = None  # latest on-policy update's reverse KL per sampled token
    on_policy_updates: int | None = None  # updates whose batch the student sampled and the teacher graded
    teacher_scored_tokens: int | None = None  # sampled tokens the teacher graded
    teacher_prompt_tokens: int | None = None  # tokens sent to the teacher for grading (prompts included)


class EvaluateSummary(StageSummary):
    stage: Literal["evaluate"] = "evaluate"
    evaluation: EvaluationStatus | None = None  # scores, retention and the gate, as status shows them
    report: str | None = None  # the JSON report, relative to the storage root
    output: str | None = None  # where the student, report and model card were exported (spec.output)
    requests: int | None = None  # answers asked of the models compared (live models only)


Summary = StageSummary  # one of the registered subclasses, chosen by its `stage`


# ------------------------------------------------------------------ writing and reading


def _dump(summary: StageSummary) -> str:
    return json.dumps(
        summary.model_dump(mode="json", by_alias=True, exclude_none=True),
        separators=(",", ":"),
        sort_keys=True,
    )


def termination_message(summary: StageSummary) -> str:
    """The summary as compact JSON within the kubelet's 4 KiB: detail lists go first, then the message's head."""
    text = _dump(summary)
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    slim = summary.model_copy(
        update={"error_samples": [], "splits": {}} if isinstance(summary, GenerateSummary) else {}
    )
    text = _dump(slim)
    # Benchmark rows last first (the report keeps them all): status shows those that fit.
    rows = list(slim.evaluation.benchmarks) if isinstance(slim, EvaluateSummary) and slim.evaluation else []
    while rows and len(text.encode()) > TERMINATION_LIMIT:
        rows.pop()
        evaluation = slim.evaluation.model_copy(update={"benchmarks": rows})  # type: ignore[union-attr]
        slim = slim.model_copy(update={"evaluation": evaluation})
        text = _dump(slim)
    while (
        len(text.encode()) > TERMINATION_LIMIT and slim.failure is not None and len(slim.failure.message) > 80
    ):
        cut = slim.failure.message[len(slim.failure.message) // 2 :]
        slim = slim.model_copy(update={"failure": Failure(reason=slim.failure.reason, message="…" + cut)})
        text = _dump(slim)
    return text


def termination_log_path(environ: Any = os.environ) -> Path:
    return Path(environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG_PATH)


def write_summary(summary: StageSummary, environ: Any = os.environ) -> str:
    """Print the summary as stdout's last line and write it where the kubelet (or `distillery run`) reads it."""
    text = termination_message(summary)
    print(text, flush=True)
    path = termination_log_path(environ)
    if path.parent.is_dir():
        # Outside a pod /dev/termination-log may not be writable; stdout has the summary too.
        with contextlib.suppress(OSError):
            try:
                atomic.write_text(path, text)
            except OSError:
                # In a pod it is a file the kubelet mounts: nothing can be made beside it or renamed over
                # it. A message cut short there reads as none (`parse_summary`), never as another one.
                path.write_text(text)
    return text


def parse_summary(text: str | None) -> Summary | None:
    """A summary from a termination message; None for anything that is not one (a log tail, junk)."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    stage = document.get("stage") if isinstance(document, dict) else None
    model = SUMMARY_TYPES.get(stage) if isinstance(stage, str) else None
    try:
        return model.model_validate(document) if model is not None else None
    except ValidationError:
        return None


def read_summary(path: Path) -> Summary | None:
    try:
        return parse_summary(path.read_text())
    except OSError:
        return None


# ------------------------------------------------------------------ totals over shards


class GenerationTotals(_Wire):
    shards: int = 0
    prompts: int = 0
    records: int = 0
    rejected: int = 0
    decontaminated: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


def generation_totals(summaries: Iterable[GenerateSummary]) -> GenerationTotals:
    """Records, tokens, rejected responses and errors summed over finished shards."""
    totals = GenerationTotals()
    rejected: Counter = Counter()
    for summary in summaries:
        totals.shards += 1
        totals.prompts += summary.prompts
        totals.records += summary.records
        totals.errors += summary.errors
        totals.decontaminated += summary.decontaminated
        totals.prompt_tokens += summary.prompt_tokens
        totals.output_tokens += summary.output_tokens
        rejected.update(summary.rejected)
    totals.rejected = sum(rejected.values())
    return totals
