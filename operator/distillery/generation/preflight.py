"""Before a shard fans out: is the teacher there, serving the right model, and are its answers usable?

An unreachable teacher, a wrong model name or a teacher whose every answer is rejected fails the shard in
seconds, with the reason, instead of after a whole split of failed requests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from distillery.contract.summaries import FailureReason, StageFailed
from distillery.serving.client import RequestFailed, TeacherConnection, backoff_delay


class GenerationFailed(StageFailed):
    """The shard cannot succeed (teacher unreachable, wrong model, too few accepted answers)."""


async def check_teacher(client: Any, connection: TeacherConnection) -> None:
    """Fail fast on an unreachable teacher or a wrong model name (GET /models, a few quick tries)."""
    url = connection.base_url
    for attempt in range(4):
        try:
            served = await client.list_models()
            break
        except RequestFailed as error:
            if error.kind == "http_404":
                return  # an endpoint without /models: the smoke test checks the model name
            if error.kind in ("http_401", "http_403"):
                raise GenerationFailed(
                    f"the teacher at {url} refused the API key: {error}", FailureReason.teacher_refused
                ) from None
            if not error.retryable or attempt == 3:
                raise GenerationFailed(
                    f"the teacher at {url} is unreachable: {error}; is it running, and is --teacher-url right?",
                    FailureReason.teacher_unreachable,
                ) from None
            await asyncio.sleep(backoff_delay(attempt))
    if connection.model not in served:
        raise GenerationFailed(
            f"the teacher at {url} serves {served}, not {connection.model!r}; "
            "check teacher.servedModelName / teacher.endpoint.model (or --teacher-model)",
            FailureReason.teacher_refused,
        )


def smoke_test_verdict(outcomes: list[tuple[str, str]]) -> None:
    """The smoke test's (outcome, detail) pairs: passes when any answer was accepted, else says why none was."""
    if not outcomes or any(outcome == "accepted" for outcome, _ in outcomes):
        return
    errors = [detail for outcome, detail in outcomes if outcome == "error"]
    if len(errors) == len(outcomes):
        raise GenerationFailed(
            f"smoke test: all {len(outcomes)} teacher requests failed; first: {errors[0]}",
            FailureReason.smoke_test_failed,
        )
    reasons = Counter(detail.split(":", 1)[0] for outcome, detail in outcomes if outcome == "rejected")
    example = next(detail for outcome, detail in outcomes if outcome == "rejected")
    raise GenerationFailed(
        f"smoke test: every answer of the teacher was rejected ({dict(reasons)}), e.g. {example}; "
        "check data.taskType, the prompt template and generation.filters",
        FailureReason.smoke_test_failed,
    )
