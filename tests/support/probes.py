"""What tests read back from a cluster and its processes: a job's status, what the API server saw, HTTP."""

from __future__ import annotations

import urllib.request
from collections import Counter
from typing import Any

from tests.harness import RestClient

DJ = ("distillery.dev/v1alpha1", "distillationjobs")


def job_status(api: RestClient, name: str = "tiny") -> dict[str, Any]:
    """A DistillationJob's status ({} while it has none)."""
    return (api.get(*DJ, name) or {}).get("status") or {}


def creations(emulator: Any, resource: str, namespace: str, name: str) -> int:
    """How many times an object was created (its history restarts after each deletion)."""
    history = emulator.objects[resource, namespace, name].history
    return sum(1 for i, v in enumerate(history) if v is not None and (i == 0 or history[i - 1] is None))


def operator_posts(emulator: Any) -> Counter:
    """(resource, name) of every object the operator POSTed (aside from Events, and the Lease, which
    replicas may each try to create at start: the API server lets one win and answers the other 409)."""
    return Counter(
        (r.resource.plural, r.data["metadata"]["name"])
        for r in list(emulator)
        if str(getattr(r.method, "value", r.method)).upper() == "POST"
        and r.resource is not None
        and r.resource.plural not in ("events", "leases")
        and r.headers.get("User-Agent", "").startswith("distillery-operator")
    )


def http_get(url: str, timeout: float = 5.0) -> bytes:
    """The body of a GET (a /metrics scrape, a readiness probe); an HTTP error status raises."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()
