"""Task types: what a record means (the chat sent to a model, its reference, the answer), and the prompts read
from the job's inputs. Generation and evaluation share both as equals.

    definitions  per task type: the messages of a record, its reference and id, answer extraction and matching
    prompts      a shard's (or the validation set's) input records, streamed, as chat prompts
"""

from __future__ import annotations

from distillery.tasks.definitions import (
    QA_TEMPLATE_WITHOUT_CONTEXT,
    VERIFIABLE,
    RecordError,
    answers_match,
    build_messages,
    extract_answer,
    normalize_number,
    normalize_text,
    record_id,
    reference_of,
    system_prompt,
)

__all__ = [
    "QA_TEMPLATE_WITHOUT_CONTEXT",
    "VERIFIABLE",
    "RecordError",
    "answers_match",
    "build_messages",
    "extract_answer",
    "normalize_number",
    "normalize_text",
    "record_id",
    "reference_of",
    "system_prompt",
]
