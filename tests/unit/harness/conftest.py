"""The harness's own tests (tests/harness) on hand-written Jobs, Deployments and Services.

The e2e result is only as good as the harness that plays the cluster, so these check that
it runs the manifest's command with the pod's volumes and environment, and writes back
what a kubelet and the Job/Deployment controllers would. Each workload is a tiny shell or
Python command; the whole directory takes seconds. This module holds the `cluster` fixture
(emulator + kubelet with the process runtime) and the helpers the test modules share.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Kubelet, RestClient

NS = "ns1"


@pytest.fixture
def cluster(make_cluster, tmp_path: Path) -> tuple[Any, RestClient, Kubelet, Path]:
    """The process backend, quick to retry and to stop: (emulator, API client, kubelet, the claim's directory)."""
    storage = tmp_path / "storage"
    storage.mkdir()
    c = make_cluster([NS], claims={"claim-a": storage}, retry_delay=0.1, grace_seconds=3)
    return c.emulator, c.api(NS), c.kubelet, storage


def job(name: str, container: dict[str, Any], *, uid: str = "", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}"},
        "spec": {
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", **container}],
                    "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": "claim-a"}}],
                },
            },
        },
    }


def storage_mount() -> dict[str, Any]:
    return {"volumeMounts": [{"name": "storage", "mountPath": "/data"}], "workingDir": "/data"}


def finished(api: RestClient, name: str) -> dict[str, Any] | None:
    obj = api.get("batch/v1", "jobs", name)
    status = (obj or {}).get("status") or {}
    if any(c["type"] in ("Complete", "Failed") for c in status.get("conditions") or []):
        return status
    return None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until reaped; read its state.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(stat.parent.name))
    return out
