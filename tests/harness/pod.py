"""One pod as the kubelet runs it, whatever the runtime: its object in the API server, its
sandbox, init containers then containers, `restartPolicy` with back-off, and the `status` it
keeps current there (phase, conditions, containerStatuses with `state.terminated.message`),
because the operator reads outcomes from there.

Crash-loop restarts back off from the kubelet's `retry_delay` seconds, doubling, capped at
10 s (a real kubelet: 10 s to 5 min).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.container import Container, run_container
from tests.harness.helpers import now_rfc3339
from tests.harness.rest import api_path
from tests.harness.runtime import PodSandbox

if TYPE_CHECKING:
    from tests.harness.controller import Controller
    from tests.harness.kubelet import Kubelet

MAX_BACKOFF_SECONDS = 10.0


@dataclass
class PodInfo:
    """What a test can ask about a pod the harness ran (a snapshot)."""

    name: str
    namespace: str
    owner: str  # "Job/<name>", "Deployment/<name>" or "" for a bare Pod
    index: int | None
    phase: str
    ready: bool
    restarts: int
    exit_codes: list[int]
    argv: list[str]
    pid: int | None
    log: Path
    deleted: bool


class Pod:
    """One Pod: its object in the API server, its sandbox and containers in the kubelet's runtime."""

    def __init__(
        self, kubelet: Kubelet, obj: dict[str, Any], owner: Controller | None, index: int | None = None
    ):
        self.kubelet = kubelet
        self.obj = obj
        self.owner = owner
        self.index = index
        meta = obj["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace") or "default"
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.spec: dict[str, Any] = obj["spec"]
        self.dir = kubelet.root / "pods" / self.namespace / self.name
        self.phase = "Pending"
        self.message = ""
        self.reason = ""
        self.start_time: str | None = None
        self.stopping = False
        self.deleted = False  # the Pod object is gone from the API server
        self.disrupted = False  # deleted through the API while it ran
        self.sandbox: PodSandbox | None = None
        self._sandbox_removed = False
        self.containers = [self._container(c) for c in self.spec.get("containers") or []]
        self.init_containers = [self._container(c) for c in self.spec.get("initContainers") or []]
        # Port name -> container port, over every container of the pod (probes and Services name them).
        self.port_names: dict[str, int] = {
            port["name"]: int(port["containerPort"])
            for container in [*self.init_containers, *self.containers]
            for port in container.spec.get("ports") or []
            if port.get("name")
        }
        self.initialized = not self.init_containers
        # Kubernetes neither schedules nor runs a pod until its last scheduling gate is removed
        # (Kueue's `kueue.x-k8s.io/admission`, for one); `ungate` runs it then.
        self.scheduling_gates: list[str] = [g.get("name", "") for g in self.spec.get("schedulingGates") or []]
        self.task: asyncio.Task | None = None
        self._status_lock = asyncio.Lock()
        self._written: dict[str, Any] | None = None

    def _container(self, spec: dict[str, Any]) -> Container:
        name = spec["name"]
        return Container(spec, self.dir / f"{name}.log", self.dir / f"{name}.termination-log")

    # ------------------------------------------------------------ state

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def finished_in_api(self) -> bool:
        """Ended as the API server shows it (its terminal status written, or the Pod deleted): what a
        cluster's Job controller acts on. Until then it still counts as active there."""
        return self.terminal and (self.deleted or (self._written or {}).get("phase") == self.phase)

    @property
    def active(self) -> bool:
        return not self.finished_in_api and not self.stopping

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(c.ready for c in self.containers)

    def info(self) -> PodInfo:
        main = self.containers[0] if self.containers else None
        owner = f"{self.owner.kind}/{self.owner.name}" if self.owner else ""
        return PodInfo(
            name=self.name,
            namespace=self.namespace,
            owner=owner,
            index=self.index,
            phase=self.phase,
            ready=self.ready,
            restarts=sum(c.restart_count for c in self.containers),
            exit_codes=list(main.exit_codes) if main else [],
            argv=list(main.argv) if main else [],
            pid=main.handle.pid if main and main.handle else None,
            log=main.log if main else self.dir,
            deleted=self.deleted,
        )

    def status(self) -> dict[str, Any]:
        ready = "True" if self.ready else "False"
        scheduled: dict[str, Any] = {"type": "PodScheduled", "status": "True"}
        if self.scheduling_gates:  # what the scheduler writes for a gated pod
            scheduled = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }
        conditions = [
            scheduled,
            {"type": "Initialized", "status": "True" if self.initialized else "False"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        if self.disrupted:
            conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC"})
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": self.sandbox.host_ip if self.sandbox else None,
            "podIP": self.sandbox.ip if self.sandbox else None,
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def changed(self) -> None:
        """Something the API server should know happened: write the status, then wake the owner."""
        self.kubelet.spawn(self._publish(), f"status of pod {self.name}")

    async def _publish(self) -> None:
        # A cluster's Job and Deployment controllers see a pod only through the API server, so a
        # Job is never Complete before its pods' terminated states (and their termination
        # messages) are stored there. Waking the owner first let the Job's status overtake the
        # pod's, and an operator reading a finished stage's summary found none.
        try:
            await self.write_status()
        finally:
            if self.owner is not None:
                self.owner.wake()

    async def write_status(self) -> None:
        async with self._status_lock:
            if self.deleted:
                return
            status = self.status()
            if status == self._written:
                return
            path = api_path("v1", "pods", self.namespace, self.name, "status")
            if await self.kubelet.api.request("PATCH", path, {"status": status}, missing_ok=True) is None:
                return
            self._written = status

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, create: bool = True) -> None:
        """Make the pod's sandbox and run it; `create`: also create its object (a controller's pod). A pod
        with scheduling gates is only created: it stays Pending until `ungate`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.scheduling_gates:
            self.sandbox = await self.kubelet.runtime.run_sandbox(
                self.obj, self.dir, self.kubelet.dns_names(self.obj)
            )
        if create:
            self.obj.setdefault("status", {}).update(self.status())
            await self.kubelet.api.request("POST", api_path("v1", "pods", self.namespace), self.obj)
            self._written = self.status()
            self.kubelet.event(
                f"pod {self.namespace}/{self.name} created"
                + (f" (index {self.index})" if self.index is not None else "")
            )
        if self.scheduling_gates:
            self.kubelet.event(f"pod {self.namespace}/{self.name} gated: {', '.join(self.scheduling_gates)}")
            if not create:
                await self.write_status()
            return
        self.task = self.kubelet.spawn(self._run(), f"pod {self.name}")

    async def ungate(self, spec: dict[str, Any]) -> None:
        """The pod's spec as updated in the API: once no scheduling gate is left, it is scheduled and runs."""
        gates = [g.get("name", "") for g in spec.get("schedulingGates") or []]
        if not self.scheduling_gates or gates or self.stopping or self.deleted:
            return
        self.scheduling_gates = []
        self.spec.pop("schedulingGates", None)
        self.kubelet.event(f"pod {self.namespace}/{self.name} ungated: scheduled")
        self.sandbox = await self.kubelet.runtime.run_sandbox(
            self.obj, self.dir, self.kubelet.dns_names(self.obj)
        )
        self.changed()
        self.task = self.kubelet.spawn(self._run(), f"pod {self.name}")

    async def stop(self, grace: float | None = None, *, delete: bool = True) -> None:
        """Stop every container (TERM, then KILL after the grace period), remove the sandbox, delete the Pod object."""
        if grace is None:
            grace = min(float(self.spec.get("terminationGracePeriodSeconds", 30)), self.kubelet.grace_seconds)
        self.stopping = True
        if self.owner is not None:
            self.owner.wake()  # a terminating pod: a TerminatingOrFailed Job replaces it right away
        for container in self.containers + self.init_containers:
            await self.terminate_container(container, grace)
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.sandbox is not None and not self._sandbox_removed:
            self._sandbox_removed = True
            await self.kubelet.runtime.remove_sandbox(self.sandbox)
        if delete and not self.deleted:
            self.deleted = True
            await self.kubelet.api.request(
                "DELETE", api_path("v1", "pods", self.namespace, self.name), missing_ok=True
            )
            self.kubelet.event(f"pod {self.namespace}/{self.name} deleted")

    async def terminate_container(self, container: Container, grace: float) -> None:
        """TERM every process of the container, KILL what is left after `grace` seconds."""
        handle = container.handle
        if handle is None or not handle.running:
            return
        await handle.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(handle.wait(), grace)
        except asyncio.TimeoutError:
            await handle.signal(signal.SIGKILL)
            await handle.wait()

    async def kill(self, sig: int) -> bool:
        """Signal every process of the main container (a crash, an OOM kill, a freeze), as a test asks."""
        for container in self.containers:
            if container.handle is not None and container.handle.running:
                await container.handle.signal(sig)
                return True
        return False

    async def _run(self) -> None:
        try:
            self.start_time = now_rfc3339()
            if not await self._run_init_containers():
                return
            self.initialized = True
            self.phase = "Running"
            self.changed()
            codes = await asyncio.gather(*(self._supervise(c) for c in self.containers))
            self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            self.changed()
        except Exception as error:  # a harness bug: make the pod fail loudly and record it
            self.kubelet.error(f"pod {self.name}: {error!r}")
            self.phase, self.reason, self.message = "Failed", "HarnessError", repr(error)
            self.changed()
            raise

    async def _run_init_containers(self) -> bool:
        """Each init container to success, in order; False when the pod failed or is stopping."""
        for container in self.init_containers:
            while not self.stopping:
                code = await run_container(self, container, init=True)
                if code == 0:
                    break
                if self.spec.get("restartPolicy", "Always") == "Never":
                    self.phase = "Failed"
                    self.changed()
                    return False
                await self._backoff(container)
            if self.stopping:
                return False
        return True

    async def _supervise(self, container: Container) -> int:
        """Run a container until it ends for good under the pod's restartPolicy; its last exit code."""
        policy = self.spec.get("restartPolicy", "Always")
        while True:
            code = await run_container(self, container, init=False)
            if self.stopping or policy == "Never" or (policy == "OnFailure" and code == 0):
                return code
            await self._backoff(container)
            if self.stopping:
                return code

    async def _backoff(self, container: Container) -> None:
        container.restart_count += 1
        delay = min(self.kubelet.retry_delay * 2 ** (container.restart_count - 1), MAX_BACKOFF_SECONDS)
        container.last_state = container.state
        container.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.1f}s restarting failed container",
            }
        }
        self.changed()
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
