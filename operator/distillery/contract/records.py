"""The teacher's records: what generation writes and training and evaluation read, one model for all.

One JSON object per line, in `generated/<split>/shard-K-of-N.jsonl` (accepted) and
`shard-K-of-N.rejected.jsonl` (rejected by the filters); the files and their names are
`storage.Layout`'s. A split of a shard is complete exactly when its `shard-K-of-N.summary.json`
exists; until then its files end in `.partial`.

    id             input record id (+ "#<sample>" when samplesPerPrompt > 1)
    split          "train" or "validation"
    line           1-based line of the input record in its JSONL file (what resume keys on)
    sample         0-based sample number of this response (< samplesPerPrompt)
    messages       the chat messages sent to the teacher (system + user, or a conversation)
    response       the teacher's answer (the assistant turn the student learns)
    finish_reason  "stop" / "length" as the server reported it
    usage          {"prompt_tokens": int, "completion_tokens": int}
    teacher_model  the model name that answered
    reference      the input's reference answer/label, or null
    latency_ms     wall time of the request that produced it
    logprobs       null, or one entry per response token:
                   {"token_id": int, "logprob": float, "top": [[token_id, logprob], ...]}

Rejected records have the same fields plus `reject_reason` (truncated, too_short, too_long,
wrong_answer, duplicate) and `reject_detail` (for a person).

Only `messages` and `response` are required to read a record (records written by hand train
too); the writer always sets every field, in the order above, so the bytes on disk stay those
earlier versions wrote. Fields a reader does not know are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from distillery.contract.summaries import FailureReason, StageFailed


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0


class TokenLogprob(BaseModel):
    """The teacher's log-probability of one response token and its top-k alternatives."""

    model_config = ConfigDict(extra="allow")

    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] = []


class Record(BaseModel):
    """One teacher answer to one prompt, accepted by generation's filters."""

    model_config = ConfigDict(extra="allow")

    id: str | int | None = None
    split: str | None = None
    line: int | None = None
    sample: int = 0
    messages: list[dict[str, Any]]
    response: str
    finish_reason: str | None = None
    usage: Usage | None = None
    teacher_model: str | None = None
    reference: Any = None
    latency_ms: float | None = None
    logprobs: list[TokenLogprob] | None = None

    @classmethod
    def from_line(cls, line: str | bytes) -> Record:
        """A record from one line of a record file; ValueError (JSON) or ValidationError (fields)."""
        return cls.model_validate(json.loads(line))

    @classmethod
    def of(cls, value: Record | dict[str, Any]) -> Record:
        """A record, validated when given as a dict (as a test or a benchmark may build one)."""
        return value if isinstance(value, Record) else cls.model_validate(value)

    def to_line(self) -> str:
        """The record as one line of its file (the format earlier versions wrote, byte for byte)."""
        return json.dumps(self.model_dump(exclude_unset=True), ensure_ascii=False) + "\n"

    @property
    def prompt_tokens(self) -> int:
        return int((self.usage.prompt_tokens if self.usage else 0) or 0)

    @property
    def completion_tokens(self) -> int:
        return int((self.usage.completion_tokens if self.usage else 0) or 0)

    @property
    def has_teacher_top(self) -> bool:
        """Whether every response token carries the teacher's top-k (what logit KD needs)."""
        return bool(self.logprobs) and all(entry.top for entry in self.logprobs or ())


class RejectedRecord(Record):
    """A teacher answer the filters refused, and why."""

    reject_reason: str = "unknown"
    reject_detail: str | None = None


class RecordFileError(StageFailed, ValueError):
    """A generated record that cannot be read; the message names the file and the line."""

    reason = FailureReason.invalid_input


def problem(error: ValueError) -> str:
    """What is wrong with a record line, in a few words (for a message naming the file and line)."""
    if isinstance(error, json.JSONDecodeError):
        return f"not a JSON record ({error.msg})"
    if isinstance(error, ValidationError):
        fields = {str(e["loc"][0]) if e["loc"] else "" for e in error.errors()}
        if fields <= {"messages", "response"}:
            return "expected 'messages' (a list) and 'response' (a string)"
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'the record'}: {first['msg']}"
    return str(error)


def read_records(files: Iterable[Path], model: type[Record] = Record) -> Iterator[Record]:
    """Every record of the given files, in order (blank lines skipped); RecordFileError naming the file and line."""
    for path in files:
        with Path(path).open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield model.from_line(line)
                except ValueError as error:
                    raise RecordFileError(f"{path}:{number}: {problem(error)}") from None
