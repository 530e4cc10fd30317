"""An OpenAI-compatible chat-completions client: bounded concurrency, per-request timeout, retries.

Shared by generation (the teacher writes the data) and evaluation (every compared model
answers the validation prompts). A `TeacherConnection` says where to send requests,
whichever way the model is provided (served by us, or an external endpoint). Plain `httpx.AsyncClient` over one pooled connection per
request in flight: the same transport the `openai` package uses, without its per-call
model validation, which matters when the client shares a few CPU cores with the server.

Retries: timeouts, dropped connections, HTTP 429 and 5xx are retried with exponential
backoff and jitter (a `Retry-After` header is honoured); other 4xx answers (a wrong model
name, a prompt too long) are final. The concurrency slot is released while backing off.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distillery import backoff
from distillery.api import TeacherSpec
from distillery.contract.commands import API_KEY_ENV
from distillery.serving.replicas import Replicas, Resolver

# Backoff of retry n (0-based): between half and all of min(cap, base * 2**n) seconds.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
ERROR_BODY_CHARS = 300
TOKEN_ID_PREFIX = "token_id:"


@dataclass(frozen=True)
class TeacherConnection:
    """Where requests go: an OpenAI-compatible base URL (ending in /v1), a model name, an optional key."""

    base_url: str
    model: str
    api_key: str | None = None
    # The served teacher: its host name resolves to every ready replica, and requests are spread over them
    # (`serving.replicas`). An external endpoint is balanced by whoever runs it: its URL is used as is.
    spread: bool = False
    # How the host name is resolved to the replicas' addresses (DNS unless a test names its servers).
    resolve: Resolver | None = field(default=None, compare=False)
    # The local server's process when this process started it (`serving.vllm`): its CPU time and memory
    # can then be measured, as for every model the evaluation serves.
    server_pid: int | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else "none"
        return f"TeacherConnection(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    def replicas(self) -> Replicas | None:
        """A fresh round robin over the teacher's replicas, or None when the URL is used as is."""
        return Replicas(self.base_url, self.resolve) if self.spread else None


def teacher_connection(
    teacher: TeacherSpec, base_url: str | None = None, environ: Mapping[str, str] = os.environ
) -> TeacherConnection:
    """The connection for a spec: its external endpoint (API key from DISTILLERY_TEACHER_API_KEY),
    or the served model at `base_url` (e.g. the teacher Service's URL)."""
    if teacher.endpoint is not None:
        return TeacherConnection(
            base_url=(base_url or teacher.endpoint.url).rstrip("/"),
            model=teacher.endpoint.model,
            api_key=environ.get(API_KEY_ENV) or None,
        )
    if not base_url:
        raise ValueError("teacher.model is served by vLLM: give the server's base URL (e.g. --teacher-url)")
    return TeacherConnection(base_url=base_url.rstrip("/"), model=teacher.served_model_name, spread=True)


class RequestFailed(Exception):
    """A request that got no usable answer; `kind` is a short label (timeout, connection, http_404, ...)."""

    def __init__(self, kind: str, message: str, retryable: bool):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


@dataclass
class ChatChoice:
    text: str
    finish_reason: str | None
    completion_tokens: int | None
    logprobs: list[dict] | None = None


@dataclass
class ChatResult:
    choices: list[ChatChoice]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int = 1
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def http_library() -> Any:
    """`httpx2` (what the `openai` package uses) when installed, else `httpx`: the same API.

    httpcore 1.x (under httpx) rescans every pooled connection for each idle one on every
    request: with 64 requests in flight against a server answering in 0.3 s that cost ~9 ms
    of client CPU per request, against ~1.5 ms with httpx2. On a machine shared with the
    server, client CPU is throughput.
    """
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def backoff_delay(attempt: int, rng: random.Random | None = None, retry_after: float | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based) of a request to the teacher (`backoff.delay`)."""
    return backoff.delay(attempt, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, rng, retry_after)


def parse_logprobs(content: list[dict]) -> list[dict]:
    """vLLM's per-token logprobs (tokens as `token_id:N`, from `return_tokens_as_token_ids`)
    -> [{"token_id", "logprob", "top": [[id, logprob], ...]}], the stored record format."""

    def token_id(token: str) -> int:
        if not token.startswith(TOKEN_ID_PREFIX):
            raise RequestFailed(
                "bad_logprobs",
                f"the teacher returned logprob tokens as text ({token!r}); top-k logprobs need a vLLM "
                "teacher that honours return_tokens_as_token_ids",
                retryable=False,
            )
        return int(token[len(TOKEN_ID_PREFIX) :])

    return [
        {
            "token_id": token_id(entry["token"]),
            "logprob": entry["logprob"],
            "top": [[token_id(top["token"]), top["logprob"]] for top in entry.get("top_logprobs") or ()],
        }
        for entry in content
    ]


def error_message(response: Any) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    except ValueError:
        text = response.text
    return " ".join(str(text).split())[:ERROR_BODY_CHARS]


def retry_after_seconds(response: Any) -> float | None:
    return backoff.retry_after_seconds(response.headers.get("retry-after"))


class ChatClient:
    """Async chat completions against one OpenAI-compatible server. Use as `async with`.

    `observer(outcome, seconds)` is called for every attempt: outcome "ok" (seconds = latency),
    "retry" or "error" (seconds = None); generation feeds its Prometheus metrics from it.
    """

    def __init__(
        self,
        connection: TeacherConnection,
        *,
        concurrency: int,
        timeout: float,
        max_retries: int,
        observer: Callable[[str, float | None], None] | None = None,
        rng: random.Random | None = None,
    ):
        self.connection = connection
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.observer = observer or (lambda outcome, seconds: None)
        self.rng = rng or random.Random()
        self._slots = asyncio.Semaphore(concurrency)
        self._http: Any = None
        self.replicas = connection.replicas()

    async def __aenter__(self) -> ChatClient:
        httpx = http_library()
        headers = {"Content-Type": "application/json"}
        if self.connection.api_key:
            headers["Authorization"] = f"Bearer {self.connection.api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.connection.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)),
            # Concurrency is bounded by the semaphore; the pool only keeps connections alive.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=self.concurrency),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def list_models(self) -> list[str]:
        """Model ids the server lists on GET /models; raises RequestFailed (one attempt)."""
        response = await self._send("GET", "/models", None)
        if response.status_code != 200:
            raise RequestFailed(
                f"http_{response.status_code}",
                f"GET {self.connection.base_url}/models: HTTP {response.status_code}: {error_message(response)}",
                retryable=response.status_code == 429 or response.status_code >= 500,
            )
        return [str(m.get("id")) for m in response.json().get("data", [])]

    async def complete(self, messages: list[dict], **params: Any) -> ChatResult:
        """One chat completion (all `n` choices), retried as the module docstring says."""
        body = {"model": self.connection.model, "messages": messages, **params}
        payload = json.dumps(body, ensure_ascii=False).encode()
        attempt = 0
        while True:
            retry_after = None
            started = time.monotonic()
            try:
                async with self._slots:
                    response = await self._send("POST", "/chat/completions", payload)
                    if response.status_code == 200:
                        result = self._parse(response.json(), time.monotonic() - started)
                        result.attempts = attempt + 1
                        self.observer("ok", result.latency_s)
                        return result
                status = response.status_code
                retry_after = retry_after_seconds(response)
                failure = RequestFailed(
                    f"http_{status}",
                    f"HTTP {status} from the teacher: {error_message(response)}",
                    retryable=status == 429 or status >= 500,
                )
            except RequestFailed as error:
                failure = error
            except ValueError as error:  # a 200 whose body is not the JSON it should be
                failure = RequestFailed(
                    "bad_response", f"unreadable response from the teacher: {error}", True
                )
            if not failure.retryable or attempt >= self.max_retries:
                self.observer("error", None)
                if attempt:
                    failure.args = (f"{failure.args[0]} (after {attempt + 1} attempts)",)
                raise failure
            self.observer("retry", None)
            await asyncio.sleep(backoff_delay(attempt, self.rng, retry_after))
            attempt += 1

    async def _base_url(self) -> str:
        """Where the next request goes: the next replica in turn (re-resolved every few seconds), or the URL."""
        if self.replicas is None:
            return self.connection.base_url
        if self.replicas.due:
            await self.replicas.refresh_async()
        return self.replicas.pick()

    async def _send(self, method: str, path: str, payload: bytes | None) -> Any:
        httpx = http_library()
        base = await self._base_url()
        url = base + path
        try:
            # A deadline on the whole request; httpx's timeout alone bounds each read.
            if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
                async with asyncio.timeout(self.timeout):
                    return await self._http.request(method, url, content=payload)
            return await asyncio.wait_for(self._http.request(method, url, content=payload), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException) as error:
            if isinstance(error, httpx.ConnectTimeout) and self.replicas is not None:
                self.replicas.failed(base)  # a node gone: nothing answers at that address
            raise RequestFailed(
                "timeout", f"no answer from the teacher within {self.timeout:g}s", True
            ) from None
        except httpx.TransportError as error:
            if self.replicas is not None:
                self.replicas.failed(base)  # refused or dropped: the replica died; the retry goes elsewhere
            raise RequestFailed(
                "connection",
                f"connection to {base} failed: {type(error).__name__}: {error}".rstrip(": "),
                True,
            ) from None

    @staticmethod
    def _parse(body: dict, latency_s: float) -> ChatResult:
        try:
            raw_choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
            usage = body.get("usage") or {}
            choices = []
            for choice in raw_choices:
                content = (choice.get("logprobs") or {}).get("content")
                logprobs = parse_logprobs(content) if content is not None else None
                choices.append(
                    ChatChoice(
                        text=choice["message"].get("content") or "",
                        finish_reason=choice.get("finish_reason"),
                        completion_tokens=len(logprobs) if logprobs is not None else None,
                        logprobs=logprobs,
                    )
                )
        except (KeyError, TypeError, AttributeError) as error:
            raise RequestFailed(
                "bad_response", f"the teacher's answer lacks {error}", retryable=False
            ) from None
        completion = int(usage.get("completion_tokens") or 0)
        if len(choices) == 1 and choices[0].completion_tokens is None:
            choices[0].completion_tokens = completion
        return ChatResult(
            choices=choices,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=completion,
            latency_s=latency_s,
            model=body.get("model"),
        )
