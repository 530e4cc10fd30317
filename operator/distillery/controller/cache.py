"""What the operator knows of the cluster, kept current by watch events: no API reads per reconcile.

Every DistillationJob, and every object the operator labelled as its own (children and their
pods, which carry `distillery.dev/job`), is stored as the latest body a watch delivered, cut to
what the operator reads of it (`essentials`). A
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
    "StatefulSet": ("apps", "v1", "statefulsets"),  # a teacher of several replicas behind a queue
    "Job": ("batch", "v1", "jobs"),
    # Training with `launcher: jobset`; unwatched (kopf warns, nothing fails) where the CRD is absent.
    "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
    "Pod": ("", "v1", "pods"),
    "Service": ("", "v1", "services"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
}


# What the operator reads of a child (controller/observe.py, progress.py, kube.py): its metadata, its
# status, and these fields of its spec. The rest (a pod template, a pod's containers) is dropped as it
# arrives: most of a child's size, and the cache holds several children per job.
SPEC_READ: dict[str, tuple[str, ...]] = {
    "Job": ("suspend",),
    "Deployment": ("replicas",),
    "StatefulSet": ("replicas",),
    "JobSet": ("suspend", "replicatedJobs"),  # cut to each one's pods per Job (`_replicated_jobs`)
    "Pod": ("schedulingGates",),
}
# Bookkeeping of the API server's that no part of the operator reads (and the largest part of metadata).
METADATA_UNREAD = frozenset({"managedFields"})


def essentials(kind: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object the operator reads: for a child, `SPEC_READ` of its spec; for a
    DistillationJob (`kind` None), its whole spec. Metadata without `METADATA_UNREAD`; status whole."""
    out = {k: v for k, v in body.items() if k in ("apiVersion", "kind", "status")}
    out["metadata"] = {k: v for k, v in (body.get("metadata") or {}).items() if k not in METADATA_UNREAD}
    spec = body.get("spec")
    if kind is None:
        if spec is not None:
            out["spec"] = spec
    elif isinstance(spec, dict):
        kept = {name: spec[name] for name in SPEC_READ.get(kind, ()) if name in spec}
        if "replicatedJobs" in kept:
            kept["replicatedJobs"] = _replicated_jobs(kept["replicatedJobs"])
        if kept:
            out["spec"] = kept
    return out


def _replicated_jobs(items: Any) -> list[dict[str, Any]]:
    """A JobSet's replicated Jobs as controller.jobsets reads them: name and each Job's parallelism (their pod
    templates, with the job's whole spec in the arguments, are most of a JobSet's size)."""
    return [
        {
            "name": item.get("name"),
            "template": {
                "spec": {"parallelism": ((item.get("template") or {}).get("spec") or {}).get("parallelism")}
            },
        }
        for item in items or ()
        if isinstance(item, dict)
    ]


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
        body = essentials(None, body)
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
                children[(kind, meta.get("name") or "")] = essentials(kind, body)
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
