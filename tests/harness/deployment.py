"""The apps/v1 Deployment controller, without ReplicaSets: Pods are owned by the Deployment
directly. `replicas` (0 stops the pods); a changed pod template replaces the pods (as
`Recreate`); crashed pods restart in place (the kubelet's part); status
`replicas/updatedReplicas/readyReplicas/availableReplicas` and the `Available`/`Progressing`
conditions. Rolling updates are not emulated."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from tests.harness.controller import Controller
from tests.harness.errors import HarnessError
from tests.harness.helpers import labels_match, now_rfc3339, random_suffix, template_hash

if TYPE_CHECKING:
    from tests.harness.kubelet import Kubelet


class DeploymentController(Controller):
    """The apps/v1 Deployment (and ReplicaSet) controller for one Deployment."""

    kind = "Deployment"

    def __init__(self, kubelet: Kubelet, obj: dict[str, Any]):
        self.progress_started = time.monotonic()
        super().__init__(kubelet, obj)

    async def reconcile(self) -> float | None:
        spec = self.obj.get("spec") or {}
        template = spec.get("template") or {}
        self._check(spec, template)
        replicas = spec.get("replicas", 1)
        await self._scale(template, replicas)
        ready = sum(1 for pod in self.pods if pod.ready)
        available = ready >= replicas
        deadline = spec.get("progressDeadlineSeconds", 600)
        stalled = not available and time.monotonic() - self.progress_started > deadline
        conditions = self._conditions(available, stalled)
        generation = (self.obj.get("metadata") or {}).get("generation")
        await self.write_status(
            {
                "observedGeneration": generation,
                "replicas": len(self.pods) or None,
                "updatedReplicas": len(self.pods) or None,
                "readyReplicas": ready or None,
                "availableReplicas": ready or None,
                "unavailableReplicas": (replicas - ready) or None if replicas > ready else None,
                "conditions": conditions,
            }
        )
        return (
            None if available or stalled else max(0.5, deadline - (time.monotonic() - self.progress_started))
        )

    @staticmethod
    def _check(spec: dict[str, Any], template: dict[str, Any]) -> None:
        """Refuse what the API server would refuse."""
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not labels_match(spec.get("selector"), labels):
            raise HarnessError(
                "spec.selector does not match spec.template.metadata.labels (the API server refuses that)"
            )
        restart_policy = (template.get("spec") or {}).get("restartPolicy", "Always")
        if restart_policy != "Always":
            raise HarnessError(
                f"spec.template.spec.restartPolicy is {restart_policy!r}; a Deployment needs Always"
            )

    async def _scale(self, template: dict[str, Any], replicas: int) -> None:
        """Replace pods of an old template, then stop or start pods until `replicas` run."""
        current = template_hash(template)
        old = [pod for pod in self.pods if pod.labels.get("pod-template-hash") != current]
        if old:  # a new template replaces every pod (Recreate)
            await asyncio.gather(*(pod.stop() for pod in old))
            self.progress_started = time.monotonic()
        self.pods = [pod for pod in self.pods if not pod.deleted]
        # Crashed pods are restarted in place by the kubelet; only scale changes add or remove pods.
        extra = self.pods[replicas:]
        await asyncio.gather(*(pod.stop() for pod in extra))
        self.pods = [pod for pod in self.pods if not pod.deleted]
        for _ in range(replicas - len(self.pods)):
            obj = self.pod_object(
                template, f"{self.name}-{current}-{random_suffix()}", {"pod-template-hash": current}
            )
            await self.start_pod(obj)

    def _conditions(self, available: bool, stalled: bool) -> list[dict[str, Any]]:
        """The Available and Progressing conditions; the written ones when no status changed (their times stay)."""
        now = now_rfc3339()
        conditions = [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            },
            {
                "type": "Progressing",
                "status": "False" if stalled else "True",
                "reason": "ProgressDeadlineExceeded"
                if stalled
                else ("NewReplicaSetAvailable" if available else "ReplicaSetUpdated"),
                "message": f"Deployment {self.name} "
                + ("has timed out progressing." if stalled else "is progressing."),
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            },
        ]
        if self._written and [c["status"] for c in self._written.get("conditions") or []] == [
            c["status"] for c in conditions
        ]:
            return self._written["conditions"]
        return conditions
