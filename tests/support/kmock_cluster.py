"""The integration tier's cluster: kmock's in-memory API server, with the test playing the cluster's
controllers (`Cluster`), and the record of every request the operator made for the RBAC test.

The `cluster` fixture (tests/integration/conftest.py) runs one per test; `spec` is a small valid
job spec. The harness-backed tiers' cluster is another kind (tests/support/cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from typing import Any

import kmock
from kopf.testing import KopfRunner

from distillery.contract.summaries import CheckSummary, InputSummary, StageSummary, termination_message
from distillery.controller import handlers
from tests.support.api_faults import ApiFaults
from tests.support.waiting import wait_for_async

NAMESPACE = "ml"


DJ = "distillery.dev/v1alpha1/distillationjobs"


# Every resource the operator (or kopf for it) may touch; the emulator refuses others.
RESOURCES: dict[str, dict[str, Any]] = {
    DJ: {"namespaced": True, "kind": "DistillationJob", "subresources": ["status"]},
    "apps/v1/deployments": {"namespaced": True, "kind": "Deployment"},
    "apps/v1/statefulsets": {"namespaced": True, "kind": "StatefulSet"},
    "batch/v1/jobs": {"namespaced": True, "kind": "Job", "subresources": ["status"]},
    "v1/services": {"namespaced": True, "kind": "Service"},
    "v1/persistentvolumeclaims": {"namespaced": True, "kind": "PersistentVolumeClaim"},
    "networking.k8s.io/v1/networkpolicies": {"namespaced": True, "kind": "NetworkPolicy"},
    "v1/pods": {"namespaced": True, "kind": "Pod"},
    "v1/events": {"namespaced": True, "kind": "Event"},
    "v1/secrets": {"namespaced": True, "kind": "Secret"},
    "v1/namespaces": {"namespaced": False, "kind": "Namespace"},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "namespaced": False,
        "kind": "CustomResourceDefinition",
    },
    "coordination.k8s.io/v1/leases": {"namespaced": True, "kind": "Lease"},
}


# The JobSet CRD: registered only by a scenario that asks for it (tests/support/scale_out.py), as on a cluster
# where JobSet is installed; elsewhere the emulator, like most clusters, does not serve it.
JOBSET = "jobset.x-k8s.io/v1alpha2/jobsets"
JOBSET_RESOURCE = {"namespaced": True, "kind": "JobSet", "subresources": ["status"]}


VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


# (apiGroup, resource[/subresource], verb) of every operator request, across the session,
# and the tests whose requests are in it.
SEEN_REQUESTS: dict[str, set[tuple[str, str, str]]] = {}  # test name -> (apiGroup, resource, verb)


_versions = itertools.count(1)


def verb_of(request: kmock.Request) -> str | None:
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)


class Cluster:
    """The emulator plus helpers to play the cluster's side."""

    def __init__(self, server: kmock.KubernetesEmulator):
        self.server = server

    # ---------------------------------------------------------------- raw API
    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.server.request(method, path, json=body) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    @staticmethod
    def path(resource: str, name: str | None = None, namespace: str | None = NAMESPACE, sub: str = "") -> str:
        group_version, plural = resource.rsplit("/", 1)
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{plural}"
        if name:
            base += f"/{name}"
        return base + (f"/{sub}" if sub else "")

    async def get(self, resource: str, name: str, namespace: str | None = NAMESPACE) -> dict | None:
        status, body = await self.request("GET", self.path(resource, name, namespace))
        return body if status == 200 else None

    async def list(self, resource: str, namespace: str | None = NAMESPACE) -> list[dict]:
        status, body = await self.request("GET", self.path(resource, None, namespace))
        assert status == 200, body
        return body["items"]

    async def create(self, resource: str, obj: dict, namespace: str | None = NAMESPACE) -> dict:
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta.setdefault("namespace", namespace)
        # The emulator fills in nothing; a real API server would set these.
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("resourceVersion", str(next(_versions)))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        status, body = await self.request("POST", self.path(resource, None, namespace), obj)
        assert status in (200, 201), body
        return body

    async def patch(self, resource: str, name: str, patch: dict, sub: str = "") -> dict:
        patch.setdefault("metadata", {})["resourceVersion"] = str(next(_versions))
        status, body = await self.request("PATCH", self.path(resource, name, NAMESPACE, sub), patch)
        assert status == 200, body
        return body

    async def delete(self, resource: str, name: str) -> None:
        status, body = await self.request("DELETE", self.path(resource, name))
        assert status == 200, body

    # ---------------------------------------------------------------- waiting

    def refuse(
        self, method: str, plural: str, code: int, reason: str, message: str, times: int = 1, **more: Any
    ) -> dict[str, Any]:
        """Answer the next `times` such requests with this error instead of serving them (`more`: the
        answer's `headers`, or a `delay` after which the request is served; tests/support/api_faults.py).
        Returns the fault, whose `served` lists when each was given."""
        faults = getattr(self.server, "faults", None)
        if faults is None:
            faults = self.server.faults = []
        fault = {"method": method, "plural": plural, "code": code, "reason": reason, "message": message}
        faults.append({**fault, "times": times, "served": [], **more})
        return faults[-1]

    async def job_status(self, name: str) -> dict:
        body = await self.get(DJ, name)
        return (body or {}).get("status") or {}

    async def wait_phase(self, name: str, phase: str, timeout: float = 20.0) -> dict:
        async def probe():
            status = await self.job_status(name)
            return status if status.get("phase") == phase else None

        return await wait_for_async(probe, f"{name} to reach phase {phase}", timeout)

    async def wait_child(self, resource: str, name: str, timeout: float = 20.0) -> dict:
        return await wait_for_async(lambda: self.get(resource, name), f"{resource} {name}", timeout)

    # ---------------------------------------------------------------- playing the cluster
    async def create_job(self, name: str, spec: dict) -> dict:
        return await self.create(
            DJ,
            {
                "apiVersion": "distillery.dev/v1alpha1",
                "kind": "DistillationJob",
                "metadata": {"name": name, "generation": 1},
                "spec": spec,
            },
        )

    async def inputs_ready(self, job_name: str) -> None:
        """The check Job appears before anything else, and its pod finds the inputs readable."""
        check = await self.wait_child("batch/v1/jobs", f"{job_name}-check")
        summary = CheckSummary(
            inputs={"spec.data.train": InputSummary(location="/data/d/train.jsonl", checked=3)}
        )
        await self.finish_pod(check, "check", summary)
        await self.job_done(f"{job_name}-check")

    async def teacher_ready(self, name: str) -> None:
        await self.patch(
            "apps/v1/deployments", name, {"status": {"readyReplicas": 1, "replicas": 1}}, "status"
        )

    async def finish_pod(
        self, job: dict, stage: str, summary: StageSummary | str, exit_code: int = 0, index: int = 0
    ) -> None:
        """A pod of `job` that ran and ended, with `summary` (a stage's typed summary, or a log tail
        when a stage crashed before writing one) as its termination message."""
        labels = job["spec"]["template"]["metadata"]["labels"]
        message = summary if isinstance(summary, str) else termination_message(summary)
        await self.create(
            "v1/pods",
            {
                "metadata": {
                    "name": f"{job['metadata']['name']}-{index}-{uuid.uuid4().hex[:5]}",
                    "labels": {**labels, "job-name": job["metadata"]["name"]},
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                },
                "spec": job["spec"]["template"]["spec"],
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            "name": stage,
                            "ready": False,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "x",
                            "state": {
                                "terminated": {
                                    "exitCode": exit_code,
                                    "message": message,
                                    "reason": "Completed" if exit_code == 0 else "Error",
                                }
                            },
                        }
                    ],
                },
            },
        )

    async def waiting_pod(self, owner: dict, name: str, status: dict) -> dict:
        """A pod of `owner` (a Job or Deployment, from its pod template) that has not started, with
        the scheduler's or the kubelet's `status` (PodScheduled False, a container's waiting state)."""
        template = owner["spec"]["template"]
        return await self.create(
            "v1/pods",
            {
                "metadata": {"name": name, "labels": {**template["metadata"]["labels"]}},
                "spec": template["spec"],
                "status": {"phase": "Pending", **status},
            },
        )

    async def job_done(self, name: str, succeeded: int = 1) -> None:
        await self.patch(
            "batch/v1/jobs",
            name,
            {
                "status": {
                    "succeeded": succeeded,
                    "startTime": "2026-11-28T10:00:00Z",
                    "completionTime": "2026-11-28T10:10:00Z",
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            },
            "status",
        )

    async def job_failed(self, name: str, reason: str, message: str, **status: Any) -> None:
        await self.patch(
            "batch/v1/jobs",
            name,
            {
                "status": {
                    **status,
                    "conditions": [
                        {"type": "Failed", "status": "True", "reason": reason, "message": message}
                    ],
                }
            },
            "status",
        )

    def operator_requests(self) -> list[kmock.Request]:
        """The API requests the operator made (not discovery, not the test playing the cluster)."""
        return [
            r
            for r in list(self.server)
            if r.resource is not None
            and r.resource.plural
            and not r.headers.get("User-Agent", "").startswith("kmock/")
        ]

    def record_requests(self, test: str) -> None:
        seen = SEEN_REQUESTS.setdefault(test, set())
        for request in self.operator_requests():
            if _blocks_owner_deletion(request):
                # The API server's OwnerReferencesPermissionEnforcement admission: setting
                # blockOwnerDeletion needs update on the owner's finalizers subresource.
                seen.add(("distillery.dev", "distillationjobs/finalizers", "update"))
            verb = verb_of(request)
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            if verb:
                seen.add((request.resource.group or "", resource, verb))

    # ---------------------------------------------------------------- the operator
    @contextlib.asynccontextmanager
    async def operator(self, namespace: str | None = None):
        """Run the operator in this process until the block ends: cluster-wide, or in one namespace.

        (Leader election between replicas is tested with real operator processes: test_ha.py.)
        """
        scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        runner = KopfRunner(
            ["run", *scope, "--standalone", "--verbose"],
            registry=handlers.registry,
            timeout=30,
        )
        watches = self._watches()
        runner.__enter__()
        try:
            await wait_for_async(
                lambda: self._watches() > watches, "the operator's watch on DistillationJobs", 30
            )
            yield runner
        finally:
            await asyncio.to_thread(runner.__exit__, None, None, None)

    def _watches(self) -> int:
        return sum(
            1
            for r in list(self.server)
            if verb_of(r) == "watch" and r.resource is not None and r.resource.plural == "distillationjobs"
        )


def _blocks_owner_deletion(request: kmock.Request) -> bool:
    body = request.data if isinstance(request.data, dict) else {}
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return verb_of(request) == "create" and any(o.get("blockOwnerDeletion") for o in owners)


class Emulator(ApiFaults, kmock.KubernetesEmulator):
    """kmock's emulator plus what every API server does on create: a name from generateName, a uid.

    kopf posts Events with generateName only; without this, every Event after the first
    would collide on the empty name. `faults` and `end_watches` (tests/support/api_faults.py and
    watch_stream.py) make it fail as a real API server can: a quota's 403, an invalid object's 422,
    an overloaded server's 429 or 503, a hung request, a watch that ends.
    """

    faults: list[dict[str, Any]]

    async def _handle(self, request):
        answer = await self._faulted(request)
        if answer is not None:
            return answer
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", str(next(_versions)))
        return await super()._handle(request)


def spec(**changes: Any) -> dict:
    """A small valid spec: served teacher, 2 shards, a created claim, a retention gate."""
    base = {
        "teacher": {"model": "models/teacher", "gpus": 0, "startupTimeoutSeconds": 600},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
        "generation": {"shards": 2},
        "training": {"gpus": 0},
        "evaluation": {"gpus": 0, "gate": {"minRetention": 0.5}},
        "storage": {"pvc": {"size": "1Gi"}},
    }
    base.update(changes)
    return base
