"""Small helpers every stage worker shares: termination message and metrics server."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

# Kubernetes reads at most 4096 bytes of a termination message.
TERMINATION_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def termination_message(summary: dict[str, Any]) -> str:
    """The summary as compact JSON that fits the kubelet's 4 KiB limit (long lists are cut, not the JSON)."""
    text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    trimmed = {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}
    trimmed["truncated"] = True
    return json.dumps(trimmed, separators=(",", ":"), sort_keys=True)[:TERMINATION_LIMIT]


def write_termination_message(summary: dict[str, Any]) -> None:
    """Write where the kubelet looks (DISTILLERY_TERMINATION_LOG overrides); silently skip when absent."""
    path = Path(os.environ.get("DISTILLERY_TERMINATION_LOG", DEFAULT_TERMINATION_PATH))
    if not path.parent.exists():
        return
    # Outside a pod /dev/termination-log may not be writable; the summary is on stdout too.
    with contextlib.suppress(OSError):
        path.write_text(termination_message(summary))


def start_metrics_server(port: int | None) -> None:
    """Serve /metrics on `port` (0 or None: don't). Workers call this once at start."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port)
