#!/usr/bin/env python3
"""A minimal Kubernetes API server whose cost per request stays flat as objects grow (benchmarks only).

    python hack/flat_apiserver.py [--port 0] [--namespace ml]      # prints "listening on URL"

Why not kmock's emulator: it keeps every request and re-filters that whole history on each
new request, so its cost grows with the square of the traffic (1000 creates ~60 s on their
own); an operator benchmark on it measures the emulator. This server keeps one dict per
resource ((namespace, name) -> object) and one bounded event log per resource for watches,
so a get / create / patch / delete is O(1) and a list is O(objects of that resource).

It implements the subset an operator built on kopf and the official client uses:
discovery (/api, /apis, /api/v1, /apis/G/V), list (with `labelSelector` equality terms),
watch (`watch=true` from a `resourceVersion`, `timeoutSeconds`), get, create (uid,
resourceVersion, creationTimestamp, generateName), merge patch (also used for strategic
merge patches: the operator's patches are plain dicts), the `status` subresource, delete.
Nothing is validated; no garbage collection; no admission; no controllers, except that
`--complete-jobs-ending SUFFIX` plays the Job controller and the kubelet for Jobs so named: at
creation, one pod of the Job's template that succeeded (its termination message
`--completed-pod-message`), then the Job Complete, in that order, as a cluster shows them.

GET /_bench/stats returns the server's own bookkeeping: requests by (verb, resource), and the
time (server clock, time.time()) each object was created, by resource.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import copy
import itertools
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

# (group/version, plural) -> (kind, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("distillery.dev/v1alpha1", "distillationjobs"): ("DistillationJob", True),
    ("apps/v1", "deployments"): ("Deployment", True),
    ("batch/v1", "jobs"): ("Job", True),
    ("v1", "services"): ("Service", True),
    ("v1", "pods"): ("Pod", True),
    ("v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("v1", "events"): ("Event", True),
    ("v1", "namespaces"): ("Namespace", False),
    ("networking.k8s.io/v1", "networkpolicies"): ("NetworkPolicy", True),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions"): ("CustomResourceDefinition", False),
}
EVENT_LOG = 100_000  # watch events kept per resource, for watches that start from an older version
KEEP_EVENTS = False  # Event objects are counted, not stored: nothing reads them back


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, operations: list[dict]) -> dict:
    """RFC 6902 JSON patch: add, replace, remove and test (what kopf sends)."""
    result = copy.deepcopy(target)
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        op = operation["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, operation["value"])
            elif op == "replace":
                node[index] = operation["value"]
            elif op == "remove":
                del node[index]
            elif op == "test" and node[index] != operation["value"]:
                raise ValueError(f"test failed at {operation['path']}")
        elif op in ("add", "replace"):
            node[last] = operation["value"]
        elif op == "remove":
            del node[last]
        elif op == "test" and node.get(last) != operation["value"]:
            raise ValueError(f"test failed at {operation['path']}")
    return result


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.lstrip("=").strip():
            return False
    return True


class Store:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[tuple[str | None, str], dict]] = collections.defaultdict(
            dict
        )
        self.events: dict[tuple[str, str], collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=EVENT_LOG)
        )
        self.watchers: dict[tuple[str, str], set[asyncio.Queue]] = collections.defaultdict(set)
        self.versions = itertools.count(1)
        self.version = 0
        self.created_at: dict[str, dict[str, float]] = collections.defaultdict(dict)
        self.requests: collections.Counter = collections.Counter()
        self.complete_jobs_ending: str | None = None  # see --complete-jobs-ending
        self.completed_pod_message = ""  # the termination message of their pods

    def next_version(self) -> str:
        self.version = next(self.versions)
        return str(self.version)

    def add(self, resource: tuple[str, str], obj: dict) -> None:
        """Store an object the server itself makes (a controller's), stamped as a create would be."""
        meta = obj["metadata"]
        meta.update(
            uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), resourceVersion=self.next_version()
        )
        self.objects[resource][meta.get("namespace"), meta["name"]] = obj
        self.created_at[f"{resource[0]}/{resource[1]}"][f"{meta.get('namespace')}/{meta['name']}"] = (
            time.time()
        )
        self.publish(resource, "ADDED", obj)

    def publish(self, resource: tuple[str, str], kind: str, obj: dict) -> None:
        event = (int(obj["metadata"]["resourceVersion"]), {"type": kind, "object": obj})
        self.events[resource].append(event)
        for queue in self.watchers[resource]:
            queue.put_nowait(event[1])


def succeeded_pod(job: dict, message: str) -> dict:
    """The pod a Job's one completion leaves: the Job's template, every container exited 0 with `message`."""
    meta, template = job["metadata"], (job.get("spec") or {}).get("template") or {}
    labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": meta["name"]}
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    containers = (template.get("spec") or {}).get("containers") or [{"name": "main"}]
    terminated = {"exitCode": 0, "reason": "Completed", "message": message}
    statuses = [
        {"name": c.get("name"), "ready": False, "state": {"terminated": terminated}} for c in containers
    ]
    name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": template.get("spec") or {},
        "status": {"phase": "Succeeded", "containerStatuses": statuses},
    }


def parse_path(path: str) -> tuple[tuple[str, str], str | None, str | None, str | None] | None:
    """URL path -> ((group/version, plural), namespace, name, subresource), or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group_version, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/NS/PLURAL...; /namespaces/NS is a Namespace
        namespace, rest = rest[1], rest[2:]
    if not rest or (group_version, rest[0]) not in RESOURCES:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return (group_version, rest[0]), namespace, name, sub


def discovery(path: str) -> dict | None:
    parts = [p for p in path.split("/") if p]
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    groups = sorted({gv.split("/")[0] for gv, _ in RESOURCES if "/" in gv})
    if parts == ["apis"]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [
                        {"groupVersion": gv, "version": gv.split("/")[1]}
                        for gv in sorted({gv for gv, _ in RESOURCES if gv.startswith(g + "/")})
                    ],
                    "preferredVersion": {
                        "groupVersion": next(gv for gv, _ in RESOURCES if gv.startswith(g + "/")),
                        "version": next(gv for gv, _ in RESOURCES if gv.startswith(g + "/")).split("/")[1],
                    },
                }
                for g in groups
            ],
        }
    if parts == ["api", "v1"]:
        group_version = "v1"
    elif len(parts) == 3 and parts[0] == "apis":
        group_version = f"{parts[1]}/{parts[2]}"
    else:
        return None
    resources = []
    for (gv, plural), (kind, namespaced) in RESOURCES.items():
        if gv != group_version:
            continue
        verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
        resources.append(
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }
        )
        resources.append(
            {
                "name": f"{plural}/status",
                "singularName": "",
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def status_error(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def make_app(store: Store) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_bench/stats":
            requests = {f"{v} {r}": n for (v, r), n in store.requests.items()}
            if request.query.get("only") == "requests":  # cheap at 10,000 jobs: sampled while they settle
                return web.json_response({"requests": requests})
            return web.json_response(
                {
                    "requests": requests,
                    "created": store.created_at,
                    "objects": {f"{gv}/{p}": len(objs) for (gv, p), objs in store.objects.items()},
                }
            )
        if request.method == "GET":
            found = discovery(path)
            if found is not None:
                return web.json_response(found)
        parsed = parse_path(path)
        if parsed is None:
            return status_error(404, "NotFound", f"no such path {path}")
        resource, namespace, name, sub = parsed
        kind, namespaced = RESOURCES[resource]
        objects = store.objects[resource]
        method = request.method
        label = f"{resource[0]}/{resource[1]}" + (f"/{sub}" if sub else "")

        if method == "GET" and name is None:
            watch = request.query.get("watch") in ("true", "1")
            store.requests["watch" if watch else "list", label] += 1
            if watch:
                return await watch_stream(request, resource, namespace)
            selector = request.query.get("labelSelector")
            items = [
                o
                for (ns, _), o in objects.items()
                if (namespace is None or ns == namespace)
                and selector_matches(selector, o["metadata"].get("labels") or {})
            ]
            return web.json_response(
                {
                    "kind": f"{kind}List",
                    "apiVersion": resource[0],
                    "metadata": {"resourceVersion": str(store.version)},
                    "items": items,
                }
            )
        key = (namespace if namespaced else None, name)
        if method == "GET":
            store.requests["get", label] += 1
            obj = objects.get(key)
            return (
                web.json_response(obj) if obj else status_error(404, "NotFound", f"{kind} {name} not found")
            )
        if method == "POST" and name is None:
            store.requests["create", label] += 1
            body = await request.json()
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            key = (namespace if namespaced else None, meta.get("name"))
            if key in objects:
                return status_error(409, "AlreadyExists", f"{kind} {key[1]} already exists")
            if namespaced:
                meta["namespace"] = namespace
            meta.update(
                uid=str(uuid.uuid4()),
                creationTimestamp=now_rfc3339(),
                generation=1,
                resourceVersion=store.next_version(),
            )
            body.setdefault("apiVersion", resource[0])
            body.setdefault("kind", kind)
            store.created_at[label][f"{namespace}/{meta['name']}"] = time.time()
            if (
                kind == "Job"
                and store.complete_jobs_ending
                and meta["name"].endswith(store.complete_jobs_ending)
            ):
                store.add(("v1", "pods"), succeeded_pod(body, store.completed_pod_message))
                stamp = now_rfc3339()
                body["status"] = {
                    "succeeded": 1,
                    "startTime": stamp,
                    "completionTime": stamp,
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            if kind == "Event" and not KEEP_EVENTS:
                return web.json_response(body, status=201)
            objects[key] = body
            store.publish(resource, "ADDED", body)
            return web.json_response(body, status=201)
        obj = objects.get(key)
        if obj is None:
            store.requests[method.lower(), label] += 1
            return status_error(404, "NotFound", f"{kind} {name} not found")
        if method in ("PATCH", "PUT"):
            store.requests["patch" if method == "PATCH" else "update", label] += 1
            patch = await request.json()
            if isinstance(patch, list):
                try:
                    new = json_patch(obj, patch)
                except (KeyError, IndexError, ValueError) as error:
                    return status_error(422, "Invalid", f"JSON patch: {error}")
            elif method == "PUT":
                new = patch
            elif sub == "status":
                new = merge_patch(obj, {"status": patch.get("status")})
            else:
                new = merge_patch(
                    obj,
                    {k: v for k, v in patch.items() if k != "status"}
                    if namespaced and resource[1] == "distillationjobs"
                    else patch,
                )
            new["metadata"]["resourceVersion"] = store.next_version()
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            objects[key] = new
            store.publish(resource, "MODIFIED", new)
            return web.json_response(new)
        if method == "DELETE":
            store.requests["delete", label] += 1
            del objects[key]
            obj["metadata"]["resourceVersion"] = store.next_version()
            store.publish(resource, "DELETED", obj)
            return web.json_response(obj)
        return status_error(405, "MethodNotAllowed", f"{method} {path}")

    async def watch_stream(request: web.Request, resource: tuple[str, str], namespace: str | None):
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        queue: asyncio.Queue = asyncio.Queue()
        log = store.events[resource]
        start = bisect.bisect_right([v for v, _ in log], since) if since else len(log)
        for _, event in list(log)[start:]:
            queue.put_nowait(event)
        store.watchers[resource].add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if namespace is not None and event["object"]["metadata"].get("namespace") != namespace:
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            store.watchers[resource].discard(queue)
        return response

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--namespace", action="append", default=[], help="a namespace that exists from the start"
    )
    parser.add_argument(
        "--complete-jobs-ending",
        metavar="SUFFIX",
        help="play the Job controller for Jobs whose name ends so: complete at creation (e.g. `-check`, "
        "so that an operator goes on past its input check as after a pod that found the inputs)",
    )
    parser.add_argument(
        "--completed-pod-message",
        default="",
        metavar="TEXT",
        help="the termination message of the pods of those Jobs (the stage's summary)",
    )
    args = parser.parse_args(argv)
    store = Store()
    store.complete_jobs_ending = args.complete_jobs_ending
    store.completed_pod_message = args.completed_pod_message
    for name in args.namespace:
        store.objects["v1", "namespaces"][None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": store.next_version()},
        }

    async def run() -> None:
        runner = web.AppRunner(make_app(store), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
