"""The API server the harness plays around: kmock's in-memory emulator, served on a local port."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp.web

from tests.harness.errors import HarnessError
from tests.harness.helpers import now_rfc3339, random_suffix
from tests.support.watch_stream import ResumableWatch

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
    # What the chart installs beside the operator (`helm template | kubectl apply` in tests/e2e/test_quickstart.py).
    "v1/serviceaccounts": ("ServiceAccount", True),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
}


@contextlib.contextmanager
def serve_emulator(namespaces: Iterable[str] = ()) -> Iterator[tuple[Any, str]]:
    """kmock's in-memory API server on a local port, in a thread of its own: (emulator, URL).

    Like an API server (and unlike the bare emulator) it gives every created object a uid,
    a resourceVersion, a creationTimestamp and a name from generateName (kopf posts Events
    that way). The namespaces given exist from the start.

    A real kubectl can talk to it: discovery with short names, OpenAPI v3, the Table form,
    label and field selectors, and `pods/<name>/log` from the emulator's `pod_logs` (a callable
    (namespace, pod, container) -> text or None; tests/support/cluster.py sets the kubelet's);
    see tests/harness/kubectl_api.py.
    """
    import kmock

    from tests.harness import kubectl_api

    versions = itertools.count(1)

    # ResumableWatch: kmock's own watch joins the event stream after replaying its snapshot, and drops a
    # change made in between (an operator then waits forever for a pod status it never sees).
    class Emulator(ResumableWatch, kmock.KubernetesEmulator):
        pod_logs: Any = None

        async def _handle(self, request: Any) -> Any:
            served = await _serve_for_kubectl(self, request)
            if served is not None:
                return served
            if request.action == kmock.action.WATCH and request.headers.get("User-Agent", "").startswith(
                "kubectl"
            ):
                # kmock streams as application/octet-stream, which kubectl refuses to decode; the
                # same events, as the API server sends them (other clients read kmock's as is).
                return await _stream_json(request, self._serve_watch(request))
            stale = _stale_replace(self, request)
            if stale:
                return aiohttp.web.json_response(stale, status=409)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + random_suffix()
                meta.setdefault("uid", str(uuid.uuid4()))
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace  # as the API server stores it (kubectl omits it)
                meta["creationTimestamp"] = (
                    meta.get("creationTimestamp") or now_rfc3339()
                )  # kubectl sends null
                meta.setdefault("generation", 1)
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(
                request.data, dict
            ):
                request.data.setdefault("metadata", {})["resourceVersion"] = str(next(versions))
            return await super()._handle(request)

        async def _serve_version(self, request: Any) -> Any:
            document = await super()._serve_version(request)
            for entry in document["resources"]:
                if "/" in entry["name"]:  # kmock gives a subresource its resource's names: kubectl warns
                    entry.update(
                        singularName="", shortNames=[], categories=[], verbs=["get", "patch", "update"]
                    )
            if request.resource.group == "":
                document["groupVersion"] = "v1"  # kmock writes "/v1", which kubectl cannot place
                document["resources"].append(
                    {"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]}
                )
            return document

        async def _serve_list(self, request: Any) -> Any:
            listed = await super()._serve_list(request)
            items = [obj for obj in listed["items"] if kubectl_api.selected(obj, request.params)]
            # An API server lists in its storage's key order (/registry/<resource>/<namespace>/<name>),
            # so clients such as `kubectl logs -l` see pods by name; kmock's order is its store's.
            items.sort(key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
            if kubectl_api.wants_table(request.headers):
                return kubectl_api.table(request.resource.plural, items, str(next(versions)))
            kind = self.resources[request.resource].kind
            group_version = f"{request.resource.group}/{request.resource.version}".lstrip("/")
            return {**listed, "apiVersion": group_version, "kind": f"{kind}List", "items": items}

        async def _serve_fetch(self, request: Any) -> Any:
            obj = await super()._serve_fetch(request)
            if kubectl_api.wants_table(request.headers):
                return kubectl_api.table(request.resource.plural, [obj])
            return obj

        async def _serve_watch(self, request: Any) -> Any:
            table = kubectl_api.wants_table(request.headers)
            async for event in super()._serve_watch(request):
                if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                    yield event
                elif kubectl_api.selected(event["object"], request.params):
                    if table:
                        event = {
                            **event,
                            "object": kubectl_api.table(request.resource.plural, [event["object"]]),
                        }
                    yield event

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        emulator = Emulator()
        for resource, (kind, namespaced) in RESOURCES.items():
            singular, short_names, categories = kubectl_api.names(resource.rsplit("/", 1)[1])
            emulator.resources[resource] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                singular=singular,
                shortnames=short_names,
                categories=categories,
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


async def _stream_json(request: Any, events: Any) -> aiohttp.web.StreamResponse:
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request._raw_request)
    with contextlib.suppress(ConnectionError):
        async for event in events:
            if isinstance(event, dict):
                await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
    return response


_POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


async def _serve_for_kubectl(emulator: Any, request: Any) -> aiohttp.web.StreamResponse | None:
    """OpenAPI v3, a pod's log, and a DistillationJob's schema check: what kubectl asks beyond kmock."""
    from tests.harness import kubectl_api

    path = request.url.path.rstrip("/")
    method = str(getattr(request.method, "value", request.method)).upper()
    if path.startswith("/openapi/v3"):
        kinds: dict[str, list[tuple[str, str, bool]]] = {}
        for resource, (kind, namespaced) in RESOURCES.items():
            group_version, _, plural = resource.rpartition("/")
            kinds.setdefault(group_version, []).append((plural, kind, namespaced))
        if path == "/openapi/v3":
            return aiohttp.web.json_response(kubectl_api.openapi_root(sorted(kinds)))
        wanted = path.removeprefix("/openapi/v3/").removeprefix("api/").removeprefix("apis/")
        if wanted not in kinds:
            return aiohttp.web.json_response({"kind": "Status", "code": 404}, status=404)
        group, _, version = wanted.rpartition("/")
        return aiohttp.web.json_response(kubectl_api.openapi_document(group, version, kinds[wanted]))
    resource = request.resource
    pod_log = _POD_LOG.match(path)
    if pod_log and method == "GET":
        namespace, name = pod_log.groups()
        container = request.params.get("container")
        reader = emulator.pod_logs
        text = None if reader is None else await asyncio.to_thread(reader, namespace, name, container)
        if text is None:
            message = f'pods "{name}" not found, or it has no log (yet)'
            return aiohttp.web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "message": message,
                },
                status=404,
            )
        tail = request.params.get("tailLines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-int(tail) :]) if int(tail) else ""
        return aiohttp.web.Response(text=text, content_type="text/plain")
    if (
        resource is not None
        and resource.plural == kubectl_api.crd()["spec"]["names"]["plural"]
        and method in ("POST", "PUT")
        and request.params.get("fieldValidation") == "Strict"
        and isinstance(request.data, dict)
    ):
        errors = kubectl_api.validate(request.data)
        if errors:
            name = (request.data.get("metadata") or {}).get("name")
            return aiohttp.web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 422,
                    "reason": "Invalid",
                    "message": f'DistillationJob.distillery.dev "{name}" is invalid: ' + "; ".join(errors),
                },
                status=422,
            )
    return None


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
