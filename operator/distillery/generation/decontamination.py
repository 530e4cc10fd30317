"""Decontamination: training prompts whose word n-grams overlap the validation prompts are dropped before generation.

A prompt's text is what the record asks (its `prompt` and `context` fields, or the user turns
of a conversation), not the template around it: a fixed template shared by every prompt would
otherwise make them all overlap. Words are lowercased runs of letters and digits. A text
shorter than `ngramSize` words is one n-gram of all its words, so it matches only an identical
short prompt. The overlap of a training prompt is the fraction of its n-grams found in any
validation prompt; above `maxOverlap` it is dropped (0: one shared n-gram is enough, the rule of
GPT-3's 13-gram contamination study). Pure but for reading the validation file once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillery.api import DataSpec, Decontamination, DistillationJob, TaskType

_WORD = re.compile(r"\w+", re.UNICODE)


def record_text(data: DataSpec, record: dict[str, Any]) -> str:
    """What a record asks, without the prompt template or the system prompt."""
    fields = data.fields
    if data.task_type is TaskType.conversation:
        turns = record.get(fields.messages)
        if isinstance(turns, list):
            return "\n".join(
                str(m.get("content", "")) for m in turns if isinstance(m, dict) and m.get("role") == "user"
            )
        return ""
    parts = [record.get(fields.prompt), record.get(fields.context)]
    return "\n".join(str(p) for p in parts if p is not None and p != "")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, size: int) -> set[int]:
    """8-byte hashes of the text's word n-grams (the whole text when it is shorter than `size` words)."""
    tokens = words(text)
    if not tokens:
        return set()
    spans = [tokens] if len(tokens) < size else [tokens[i : i + size] for i in range(len(tokens) - size + 1)]
    return {
        int.from_bytes(hashlib.blake2b(" ".join(s).encode(), digest_size=8).digest(), "big") for s in spans
    }


def overlap(grams: set[int], reference: set[int]) -> float:
    """Fraction of `grams` that occur in `reference` (0 for an empty text)."""
    return len(grams & reference) / len(grams) if grams else 0.0


class Decontaminator:
    """The validation prompts' n-grams, and the verdict on each training record."""

    def __init__(self, data: DataSpec, validation_records: Iterable[dict[str, Any]]):
        self.data = data
        self.settings: Decontamination = data.decontamination
        self.reference: set[int] = set()
        for record in validation_records:
            self.reference |= ngrams(record_text(data, record), self.settings.ngram_size)

    def keep(self, record: dict[str, Any]) -> bool:
        """False when the training record overlaps the validation prompts more than `maxOverlap`."""
        grams = ngrams(record_text(self.data, record), self.settings.ngram_size)
        return overlap(grams, self.reference) <= self.settings.max_overlap


def decontaminator_for(job: DistillationJob, root: Path | str) -> Decontaminator | None:
    """The job's decontaminator (its validation prompts read once, streamed), or None when it has none."""
    from distillery.datasource import iter_records, resolve

    data = job.spec.data
    if not (data.decontamination.enabled and data.validation):
        return None
    records = iter_records(
        resolve(data.validation, root),
        field="data.validation",
        declared_format=data.format,
        store=job.spec.storage.object_store,
        limit=data.max_validation_samples,
    )
    return Decontaminator(data, (record for _, record in records))
