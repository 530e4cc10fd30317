"""Which teacher answers are kept: length, finish reason, verification against a reference, dedup.

Also the sampling parameters of every teacher request, from the spec.
"""

from __future__ import annotations

from typing import Any

from distillery.api import FilterSpec, GenerationSpec, TaskType
from distillery.storage import record_key

REJECT_REASONS = ("truncated", "too_short", "too_long", "wrong_answer", "duplicate")


# 8-byte hash of a (prompt, response) pair: what dedup remembers per accepted record.
dedup_key = record_key


def rejection(
    filters: FilterSpec,
    task: TaskType,
    labels: list[str],
    response: str,
    finish_reason: str | None,
    reference: str | None,
) -> tuple[str, str] | None:
    """(reason, detail) when a response is rejected by the filters (dedup aside), else None."""
    from distillery.tasks import VERIFIABLE, answers_match, extract_answer

    if filters.require_finished and finish_reason == "length":
        return "truncated", "cut off by generation.maxTokens"
    if len(response.strip()) < filters.min_response_chars:
        return "too_short", f"{len(response.strip())} chars < minResponseChars {filters.min_response_chars}"
    if filters.max_response_chars is not None and len(response) > filters.max_response_chars:
        return "too_long", f"{len(response)} chars > maxResponseChars {filters.max_response_chars}"
    if (
        filters.verify
        and reference is not None
        and task in VERIFIABLE
        and not answers_match(task, response, reference, labels)
    ):
        return "wrong_answer", f"expected {reference!r}, answer {extract_answer(task, response, labels)!r}"
    return None


def request_params(generation: GenerationSpec) -> dict[str, Any]:
    """The sampling parameters of every teacher request, from the spec."""
    params: dict[str, Any] = {
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "max_tokens": generation.max_tokens,
        "n": generation.samples_per_prompt,
    }
    if generation.seed is not None:
        params["seed"] = generation.seed
    if generation.top_logprobs > 0 or generation.samples_per_prompt > 1:
        # With n > 1 the usage is per request; per-token logprobs give each sample's exact length.
        params["logprobs"] = True
        params["top_logprobs"] = generation.top_logprobs
        params["return_tokens_as_token_ids"] = True  # vLLM: tokens as `token_id:N`, the student's ids
    return params
