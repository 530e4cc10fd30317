"""What the operator knows of the cluster, kept current by watch events: no API reads per reconcile.

Every DistillationJob, and every object the operator labelled as its own (children and their
pods, which carry `distillery.dev/job`), is stored as the latest body a watch delivered. A
reconcile reads its job and the job's children from here; `kube` only writes. The store is
shared by kopf's event handlers (the event loop) and the reconcile threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from distillery.manifests.common import JOB_LABEL, label_value

Key = tuple[str, str]  # (namespace, name)

# The kinds the operator watches besides its own resource, with their API coordinates
# (group, version, plural), as kopf names them.
CHILD_KINDS: dict[str, tuple[str, str, str]] = {
    "Deployment": ("apps", "v1", "deployments"),
    "Job": ("batch", "v1", "jobs"),
    "Pod": ("", "v1", "pods"),
    "Service": ("", "v1", "services"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
}


def key_of(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Key, dict[str, Any]] = {}
        self._by_label: dict[Key, str] = {}  # (namespace, job label value) -> job name
        # (namespace, job label value) -> (kind, name) -> body
        self._children: dict[Key, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)

    # ---- DistillationJobs

    def put_job(self, body: dict[str, Any]) -> None:
        namespace, name = key_of(body)
        with self._lock:
            self._jobs[(namespace, name)] = body
            self._by_label[(namespace, label_value(name))] = name

    def drop_job(self, key: Key) -> None:
        with self._lock:
            self._jobs.pop(key, None)
            self._by_label.pop((key[0], label_value(key[1])), None)

    def job(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self) -> list[Key]:
        with self._lock:
            return list(self._jobs)

    # ---- children

    def put_child(self, kind: str, body: dict[str, Any], deleted: bool = False) -> Key | None:
        """Store (or forget) a child; returns the key of the job it belongs to, if that job is known."""
        meta = body.get("metadata") or {}
        label = (meta.get("labels") or {}).get(JOB_LABEL)
        if not label:
            return None
        namespace = meta.get("namespace") or ""
        with self._lock:
            children = self._children[(namespace, label)]
            if deleted:
                children.pop((kind, meta.get("name") or ""), None)
            else:
                children[(kind, meta.get("name") or "")] = body
            name = self._by_label.get((namespace, label))
        return (namespace, name) if name else None

    def children(self, key: Key) -> dict[str, list[dict[str, Any]]]:
        """kind -> the job's objects of that kind (children and their pods)."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        with self._lock:
            for (kind, _), body in self._children.get((key[0], label_value(key[1])), {}).items():
                out[kind].append(body)
        return out

    def forget_children(self, key: Key) -> None:
        with self._lock:
            self._children.pop((key[0], label_value(key[1])), None)
