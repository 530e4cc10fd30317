"""Pure functions the harness's parts share: timestamps, generated names, label selectors, the Job
API's index notation, the kubelet's `$(VAR)` expansion, exit codes and log tails."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.harness.errors import HarnessError

POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server's generateName uses
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # FallbackToLogsOnError: the log tail it keeps


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(POD_NAME_ALPHABET) for _ in range(length))


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def compress_indexes(indexes: Iterable[int]) -> str:
    """The Job API's interval notation for a set of indexes: {0,1,2,4} -> "0-2,4"."""
    ordered = sorted(set(indexes))
    parts = []
    for _, run in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        values = [value for _, value in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(parts)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: defined variables are replaced, `$$` escapes, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy a selector given as plain labels or as {matchLabels: ...}."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        if selector.get("matchExpressions"):
            raise HarnessError("label selectors with matchExpressions are not emulated")
        selector = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def exit_code(returncode: int) -> int:
    """A container's exit code: a process killed by signal N reports 128 + N, as runtimes do."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(
    path: Path, offset: int = 0, lines: int = FALLBACK_LOG_LINES, limit: int = FALLBACK_LOG_BYTES
) -> str:
    """The last lines of a log written after `offset`, cut to `limit` bytes."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    text = "\n".join(data.decode(errors="replace").splitlines()[-lines:])
    return text.encode()[-limit:].decode(errors="ignore")
