"""The API server the harness plays around: kmock's in-memory emulator, served on a local port."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp.web

from tests.harness.errors import HarnessError
from tests.harness.helpers import now_rfc3339, random_suffix

# What the operator and the harness touch, for `serve_emulator`: resource -> (kind, namespaced).
RESOURCES: dict[str, tuple[str, bool]] = {
    "distillery.dev/v1alpha1/distillationjobs": ("DistillationJob", True),
    "apps/v1/deployments": ("Deployment", True),
    "batch/v1/jobs": ("Job", True),
    "v1/services": ("Service", True),
    "v1/pods": ("Pod", True),
    "v1/secrets": ("Secret", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True),
    "v1/events": ("Event", True),
    "v1/namespaces": ("Namespace", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "coordination.k8s.io/v1/leases": ("Lease", True),
}


@contextlib.contextmanager
def serve_emulator(namespaces: Iterable[str] = ()) -> Iterator[tuple[Any, str]]:
    """kmock's in-memory API server on a local port, in a thread of its own: (emulator, URL).

    Like an API server (and unlike the bare emulator) it gives every created object a uid,
    a resourceVersion, a creationTimestamp and a name from generateName (kopf posts Events
    that way). The namespaces given exist from the start.
    """
    import kmock

    versions = itertools.count(1)

    class Emulator(kmock.KubernetesEmulator):
        async def _handle(self, request: Any) -> Any:
            stale = _stale_replace(self, request)
            if stale:
                return aiohttp.web.json_response(stale, status=409)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + random_suffix()
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_rfc3339())
                meta.setdefault("generation", 1)
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(
                request.data, dict
            ):
                request.data.setdefault("metadata", {})["resourceVersion"] = str(next(versions))
            return await super()._handle(request)

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        emulator = Emulator()
        for resource, (kind, namespaced) in RESOURCES.items():
            emulator.resources[resource] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                subresources={"status"},
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )
        for name in namespaces:
            # kmock reads POST /api/v1/namespaces as a namespaced path; store them directly.
            emulator.objects["v1/namespaces", None, name] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "uid": str(uuid.uuid4())},
            }
        async with emulator, kmock.Server(emulator) as server:
            box.update(emulator=emulator, url=str(server.url).rstrip("/"), loop=asyncio.get_running_loop())
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="emulator", daemon=True)
    thread.start()
    if not ready.wait(15):
        raise HarnessError("the emulator did not start")
    try:
        yield box["emulator"], box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(15)


def _stale_replace(emulator: Any, request: Any) -> dict[str, Any] | None:
    """A PUT or PATCH carrying an older resourceVersion than the stored object's: the API server's 409 Conflict.

    Optimistic concurrency, which leader election relies on (of two replicas replacing a Lease
    read at the same version, one wins). No await between this check and the store's update,
    so on the emulator's single event loop nothing can change in between.
    """
    method = str(getattr(request.method, "value", request.method)).upper()
    if method not in ("PUT", "PATCH") or request.resource is None or not isinstance(request.data, dict):
        return None
    sent = (request.data.get("metadata") or {}).get("resourceVersion")
    key = (request.resource, request.namespace, request.name)
    stored = emulator._objects[key] if key in emulator._objects else None  # noqa: SIM401 - kmock has no .get
    if not sent or stored is None or stored.deleted:
        return None
    current = (stored.raw.get("metadata") or {}).get("resourceVersion")
    if current is None or str(current) == str(sent):
        return None
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": 409,
        "reason": "Conflict",
        "message": f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": '
        "the object has been modified; please apply your changes to the latest version and try again",
    }


def kubeconfig(url: str) -> str:
    """A kubeconfig that points a client (kopf, kubectl, the official client) at the emulator."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}],
            "current-context": "emulator",
        }
    )
