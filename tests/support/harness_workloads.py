"""Hand-written workloads and process probes for the harness's own tests (tests/unit/harness): a Job
in namespace `NS` on claim-a, its storage mount, when it finished, a condition, and whether a
process (or a process group) is alive."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from tests.harness import RestClient

NS = "ns1"


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
