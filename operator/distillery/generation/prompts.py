"""This shard's input records, streamed from JSONL, as chat prompts for the teacher.

The shard owns the records whose position (0-based, blank lines not counted) is K modulo N,
in `data.train` and `data.validation` alike, so N shards cover every record exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distillery.api import DataSpec
from distillery.contract.summaries import FailureReason, StageFailed


class InputError(StageFailed, ValueError):
    """A malformed input file or record; the message names the file and the line."""

    reason = FailureReason.invalid_input


@dataclass(frozen=True)
class Prompt:
    line: int  # 1-based line number in the input file
    id: str
    messages: list[dict]
    reference: str | None


def owned(position: int, shard_index: int, shard_count: int) -> bool:
    """Whether the record at `position` (0-based, blank lines not counted) belongs to shard K of N."""
    return position % shard_count == shard_index


def iter_prompts(
    data: DataSpec,
    path: Path,
    shard_index: int,
    shard_count: int,
    limit: int | None = None,
    field_name: str = "",
) -> Iterator[Prompt]:
    """This shard's prompts from a JSONL file, streamed; raises InputError naming the line."""
    from distillery.tasks import RecordError, build_messages, record_id, reference_of

    where = f"{field_name} ({path})" if field_name else str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; a generator cannot use `with` and report OSError
    except OSError as error:
        raise InputError(f"{where}: cannot read the input: {error.strerror}") from None
    with handle:
        position = 0
        for line_number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            if limit is not None and position >= limit:
                return
            position += 1
            if not owned(position - 1, shard_index, shard_count):
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                detail = (
                    f"{error.msg} at column {error.colno}"
                    if isinstance(error, json.JSONDecodeError)
                    else error
                )
                raise InputError(f"{where}: line {line_number}: not valid JSON: {detail}") from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{where}: line {line_number}: expected a JSON object, got {type(record).__name__}"
                )
            try:
                messages = build_messages(data, record)
            except RecordError as error:
                raise InputError(f"{where}: line {line_number}: {error}") from None
            yield Prompt(
                line_number, record_id(data, record, line_number), messages, reference_of(data, record)
            )
