"""Why a vLLM server did not start, in one line, read from its log (pure: text in, cause out).

vLLM ends a failed start with a traceback or an argparse usage message; the person running the
job needs its last line and which setting to change, not the 90 lines above it. The whole log
stays on disk; the one line names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["arguments", "model", "memory"]

# `api_server.py: error: unrecognized arguments: --x` (argparse, exit 2)
_USAGE = re.compile(r"^\S+: error: (?P<message>.+)$")
# `huggingface_hub.errors.LocalEntryNotFoundError: ...`, `(EngineCore pid=1) ValueError: ...`, `torch.OutOfMemoryError: ...`,
# `(EngineCore pid=1) ERROR 12-07 17:55:23 [core.py:1510] RuntimeError: ...` (vLLM's logger repeating a traceback)
_EXCEPTION = re.compile(
    r"^(?:\(\w+ pid=\d+\)\s+)?(?:[A-Z]+ \d\d-\d\d [\d:]+ \[[^\]]+\]\s+)?(?:[A-Za-z_][\w.]*\.)?(?P<type>[A-Za-z_]\w*(?:Error|Exception|Exit))"
    r"(?::\s*(?P<message>.*))?$"
)
_MODEL_ERRORS = (
    "LocalEntryNotFoundError",
    "RepositoryNotFoundError",
    "GatedRepoError",
    "RevisionNotFoundError",
    "HFValidationError",
    "EntryNotFoundError",
)
_MODEL_WORDS = (
    "not a valid model identifier",
    "is not a local folder",
    "cannot find an appropriate cached snapshot",
    "no such file or directory",
    "unrecognized model",
    "model_type",
    "config.json",
    "safetensors",
    "repository not found",
)
_MEMORY_WORDS = ("out of memory", "outofmemory", "cannot allocate memory", "kv cache", "not enough memory")
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class StartupCause:
    """The last error line of a failed start, and which kind of setting it points at (None: unknown)."""

    message: str
    kind: Kind | None = None


def _kind(error_type: str, message: str) -> Kind | None:
    text = f"{error_type} {message}".lower()
    if any(word in text for word in _MEMORY_WORDS):
        return "memory"
    if error_type in _MODEL_ERRORS or any(word in text for word in _MODEL_WORDS):
        return "model"
    return None


def _detail(following: list[str]) -> str:
    """A pydantic ValidationError says what is wrong on the indented line after its own (vLLM's ModelConfig)."""
    if not following or not following[0][:1].isspace() or following[0].lstrip().startswith("File "):
        return ""
    return ": " + following[0].strip().split(" [type=")[0]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _exception(lines: list[str], index: int) -> StartupCause | None:
    """The cause an exception's line (not indented: inside a traceback the frames are) says, or None."""
    line = lines[index]
    found = None if line[:1].isspace() else _EXCEPTION.match(line)
    if found is None:
        return None
    message = f"{found['message'] or ''}{_detail(lines[index + 1 : index + 2])}"
    return StartupCause(_short(f"{found['type']}: {message}".rstrip(": ")), _kind(found["type"], message))


def startup_cause(log: str, returncode: int | None = None) -> StartupCause:
    """The cause of a failed vLLM start from its log (and exit code: a SIGKILL is the kernel's OOM killer)."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        usage = _USAGE.match(line)
        if usage:
            return StartupCause(f"vLLM refused its arguments: {_short(usage['message'])}", "arguments")
    found = [cause for index in range(len(lines)) if (cause := _exception(lines, index)) is not None]
    # vLLM's last words are often "initialization failed. See root cause above": prefer a cause of a known kind.
    if found:
        return next((cause for cause in reversed(found) if cause.kind is not None), found[-1])
    if returncode is not None and returncode in (-9, 137):
        return StartupCause("killed by SIGKILL (most often the kernel's out-of-memory killer)", "memory")
    tail = lines[-1] if lines else "its log is empty"
    return StartupCause(_short(tail), _kind("", tail))


HINTS: dict[Kind, str] = {
    "arguments": "check the vLLM arguments",
    "model": "check the model reference (a path on the storage, or a Hugging Face id the server can download)",
    "memory": "give the server more memory, or lower maxModelLen / VLLM_CPU_KVCACHE_SPACE / gpu-memory-utilization",
}
