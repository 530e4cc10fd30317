"""This shard's input records, streamed from JSONL or Parquet (a path or an object-store URI), as chat prompts.

The shard owns the records whose position (0-based, blank lines not counted) is K modulo N,
in `data.train` and `data.validation` alike, so N shards cover every record exactly once.
Reading is `datasource.iter_records`; a record's number (`Prompt.line`) is its 1-based line in
a JSONL file or its 1-based row in a Parquet file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from distillery.api import DataSpec, ObjectStoreSpec
from distillery.datasource import InputError, input_format, iter_records

__all__ = ["InputError", "Prompt", "iter_prompts", "owned"]


@dataclass(frozen=True)
class Prompt:
    line: int  # 1-based line (JSONL) or row (Parquet) in the input
    id: str
    messages: list[dict]
    reference: str | None


def owned(position: int, shard_index: int, shard_count: int) -> bool:
    """Whether the record at `position` (0-based, blank lines not counted) belongs to shard K of N."""
    return position % shard_count == shard_index


def iter_prompts(
    data: DataSpec,
    location: Path | str,
    shard_index: int,
    shard_count: int,
    limit: int | None = None,
    field_name: str = "",
    store: ObjectStoreSpec | None = None,
    keep: Callable[[dict], bool] | None = None,
) -> Iterator[Prompt]:
    """This shard's prompts, streamed; raises InputError naming the line (or row).

    `keep(record)`: a record it refuses (decontamination) is skipped; it still holds its position.
    """
    from distillery.tasks import RecordError, build_messages, record_id, reference_of

    unit = "row" if input_format(str(location), data.format) == "parquet" else "line"
    where = f"{field_name} ({location})" if field_name else str(location)
    records = iter_records(
        location,
        field=field_name,
        declared_format=data.format,
        store=store,
        limit=limit,
        select=lambda position: owned(position, shard_index, shard_count),
    )
    for number, record in records:
        try:
            messages = build_messages(data, record)
        except RecordError as error:
            raise InputError(f"{where}: {unit} {number}: {error}") from None
        if keep is None or keep(record):
            yield Prompt(number, record_id(data, record, number), messages, reference_of(data, record))
