"""What the Job and Deployment controllers share: one asyncio task per object, woken on changes,
building the Pods it owns and writing the object's status subresource."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Any

from tests.harness.errors import HarnessError
from tests.harness.helpers import now_rfc3339
from tests.harness.pod import Pod
from tests.harness.rest import api_path

if TYPE_CHECKING:
    from tests.harness.kubelet import Kubelet


class Controller:
    """Base of the Job and Deployment controllers: one asyncio task per object, woken on changes."""

    kind = ""

    def __init__(self, kubelet: Kubelet, obj: dict[str, Any]):
        self.kubelet = kubelet
        self.obj = obj
        meta = obj["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace") or "default"
        # The API server would have set a uid; the emulator may not have.
        self.uid: str = meta.get("uid") or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{self.kind}/{self.namespace}/{self.name}")
        )
        self.pods: list[Pod] = []
        self.deleted = False
        self._wake = asyncio.Event()
        self._written: dict[str, Any] | None = None
        self.task = kubelet.spawn(self._loop(), f"{self.kind} {self.namespace}/{self.name}")

    def update(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def delete(self) -> None:
        """The object is gone: stop and delete its pods (the garbage collector's part)."""
        self.deleted = True
        self.wake()
        await asyncio.gather(*(pod.stop() for pod in self.pods if not pod.deleted))

    async def _loop(self) -> None:
        while not self.deleted:
            self._wake.clear()
            try:
                timeout = await self.reconcile()
            except HarnessError as error:
                self.kubelet.error(f"{self.kind} {self.namespace}/{self.name}: {error}")
                return
            if self.deleted:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def reconcile(self) -> float | None:
        """Act towards the spec; return when to look again at the latest (None: on the next change)."""
        raise NotImplementedError

    async def start_pod(self, obj: dict[str, Any], index: int | None = None) -> Pod:
        """Create one of this controller's Pods and run it."""
        pod = Pod(self.kubelet, await self.kubelet.admit(obj), self, index)
        self.pods.append(pod)
        self.kubelet.register(pod)
        await pod.start()
        return pod

    def pod_object(
        self,
        template: dict[str, Any],
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        meta = template.get("metadata") or {}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "labels": {**(meta.get("labels") or {}), **labels},
                "annotations": {**(meta.get("annotations") or {}), **(annotations or {})},
                "ownerReferences": [
                    {
                        "apiVersion": self.obj.get("apiVersion", ""),
                        "kind": self.kind,
                        "name": self.name,
                        "uid": self.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**json.loads(json.dumps(template.get("spec") or {})), "nodeName": "local"},
        }

    async def write_status(self, status: dict[str, Any]) -> None:
        """PATCH the status subresource when it changed; None values remove keys (omitted zeros)."""
        if status == self._written or self.deleted:
            return
        path = api_path(
            self.obj.get("apiVersion", ""), self.kind.lower() + "s", self.namespace, self.name, "status"
        )
        if await self.kubelet.api.request("PATCH", path, {"status": status}, missing_ok=True) is not None:
            self._written = status
