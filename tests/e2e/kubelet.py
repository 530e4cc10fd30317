"""A kubelet for tests: runs the pods of an operator's Jobs and Deployments as local processes.

THIS IS A TEST FIXTURE, not part of Distillery. There is no container runtime on the
machines the tests run on, so the e2e tier reproduces as much of a cluster as it can
around kmock's in-memory API server: `Kubelet` talks to that server over HTTP, like a
node would, and plays these parts for the objects it sees there:

* Job controller (batch/v1 Job): Pods for `NonIndexed` and `Indexed` jobs (one per index,
  labelled `job-name`, `controller-uid`, `batch.kubernetes.io/job-completion-index`, with
  `JOB_COMPLETION_INDEX` injected as the real controller does), `parallelism`, `suspend`,
  `backoffLimit`, `backoffLimitPerIndex` + `maxFailedIndexes`, `activeDeadlineSeconds`;
  status `startTime/active/ready/succeeded/failed/completedIndexes/failedIndexes/
  conditions/completionTime`, with zero counts omitted as the API server omits them.
* Deployment controller (apps/v1 Deployment, no ReplicaSets: Pods are owned by the
  Deployment directly): `replicas` (0 stops the pods), a changed pod template replaces
  the pods (as `Recreate`); status `replicas/updatedReplicas/readyReplicas/
  availableReplicas` and the `Available`/`Progressing` conditions.
* kubelet: each container's `command` + `args` run exactly as written in the manifest
  (after `$(VAR)` expansion, as the kubelet does, and the rewrites listed below), with the
  container's `env`/`envFrom` (Secrets and ConfigMaps read from the API server, simple
  `fieldRef`s), `workingDir` and volumes; init containers; `restartPolicy`; startup,
  readiness and liveness probes (httpGet, tcpSocket, exec); termination messages from
  `terminationMessagePath` (and `FallbackToLogsOnError`). Pod objects are created in the
  API server and their `status` kept current (phase, conditions, containerStatuses with
  `state.terminated.message`), because the operator reads outcomes from there.
* kube-proxy and cluster DNS: each Service port is a TCP proxy on 127.0.0.1 that forwards
  to the ready Pods its selector matches.
* garbage collector, for the Pods it made only: deleting their Job or Deployment stops
  and deletes them.

A container runs as a process group of its own (`start_new_session`), and each of its
processes carries a marker variable (`KUBELET_HARNESS_CONTAINER`), so stopping a pod ends
every process it started, as a cgroup does, even those that left the group (a stage that
starts vLLM in a session of its own); its output goes to
`<root>/pods/<namespace>/<pod>/<container>.log`, and the exact local command line it ran
to `<container>.command.json` beside it.

The only differences between a manifest's command line and what runs here are these
rewrites, applied consistently to `command`, `args`, env values and `workingDir`:

1. Volume mount paths. A `persistentVolumeClaim` maps to the directory the test gives
   for that claim (`claims=`), else to `<root>/claims/<namespace>/<claim>`; `emptyDir`,
   `configMap` and `secret` volumes to a directory of the pod. Every occurrence of a
   `mountPath` (`/data`, `/data/x`; not `/database`) is replaced by that directory, so a
   path the operator builds from the mount path means the same file here.
2. Service addresses. `<svc>:<port>`, `<svc>.<ns>[.svc[.cluster.local]]:<port>` (and
   `http://<svc>/` for port 80) become `127.0.0.1:<proxy port>` for every Service that
   exists when the pod starts.
3. Ports. Pods share one network namespace here, so every container port gets a free
   local port: a `--<name>port N` / `--<name>port=N` argument or a `*PORT` env var holding
   N is given that port (that is how vLLM's `--port 8000` and each shard's
   `--metrics-port 9090` stay apart), and probes and Service proxies use the same map.
   A declared port that no argument or env var carries keeps its number.
4. The termination message path becomes a file of the pod; `DISTILLERY_TERMINATION_LOG`
   names it when the container does not set that variable itself.
5. An executable named by an absolute path that exists only in the image (e.g.
   `/opt/distillery/bin/distillery`) is looked up by its base name on PATH; a container
   without `command` gets its image's ENTRYPOINT from `IMAGE_ENTRYPOINTS`.

Processes get a small environment, as a container would: PATH (this interpreter's
directory first, standing in for the image's), LANG, what the test passes as `env=`
(the image's ENV, e.g. `VLLM_CPU_KVCACHE_SPACE`), then the container's own variables.

Timing: probes run at the manifest's periods once a container is ready; before that,
startup and readiness probes are tried every second, with the manifest's failure budget
(`periodSeconds * failureThreshold`) kept in seconds, so a test notices readiness
quickly but a probe that would fail in a cluster still fails here. Replacement pods and
crash-loop restarts back off from `retry_delay` seconds (doubling, capped at 10 s)
rather than the kubelet's 10 s to 5 min.

Not emulated (an object that relies on them is refused with a `HarnessError` rather
than run wrongly): Job `podFailurePolicy` and `successPolicy`. Ignored: scheduling,
resources, node selectors and tolerations, security contexts, NetworkPolicies, label
selectors other than `matchLabels`, ReplicaSets and rolling updates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# Images whose ENTRYPOINT a container without `command` runs (kept equal to images/*.Dockerfile
# by a unit test). Matched on the image name without registry path, tag or digest.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "distillery-worker-cpu": ["distillery"],
    "distillery-worker-cuda": ["distillery"],
    "distillery-operator": ["distillery", "operator"],
}

# The kinds it watches: (apiVersion, plural).
WATCHED = {
    "Job": ("batch/v1", "jobs"),
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "Pod": ("v1", "pods"),
}

TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # FallbackToLogsOnError: the log tail it keeps
FAST_PROBE_SECONDS = 1.0  # how often startup/readiness probes run until a container is ready
MAX_BACKOFF_SECONDS = 10.0
# An environment variable every container process carries, so that stopping a container ends
# every process it started, as a cgroup would (see marked_processes).
CONTAINER_MARKER = "KUBELET_HARNESS_CONTAINER"
POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server's generateName uses


class HarnessError(RuntimeError):
    """The harness met something it cannot emulate, or failed itself; the test must fail."""


class ConfigError(Exception):
    """A pod cannot start yet (missing Secret, ConfigMap...): the kubelet's CreateContainerConfigError."""


# ---------------------------------------------------------------- pure helpers


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or an object: `/api/v1/...` for the core group, `/apis/g/v/...` else."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class RestClient:
    """Blocking REST calls to the emulator in one namespace, as kubectl makes them (for the tests that drive it)."""

    def __init__(self, url: str, namespace: str):
        self.url = url.rstrip("/")
        self.namespace = namespace

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded response, or None for a 404."""
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def create(self, obj: dict[str, Any]) -> None:
        plural = obj["kind"].lower() + "s"
        self.call("POST", api_path(obj["apiVersion"], plural, self.namespace), obj)

    def get(self, api_version: str, plural: str, name: str) -> dict[str, Any] | None:
        return self.call("GET", api_path(api_version, plural, self.namespace, name))

    def items(self, api_version: str, plural: str) -> list[dict[str, Any]]:
        return self.call("GET", api_path(api_version, plural, self.namespace))["items"]

    def pods(self, **labels: str) -> list[dict[str, Any]]:
        # The emulator ignores labelSelector; filter here, as a real API server would.
        items = self.items("v1", "pods")
        return [p for p in items if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]


def compress_indexes(indexes: Iterable[int]) -> str:
    """The Job API's interval notation for a set of indexes: {0,1,2,4} -> "0-2,4"."""
    ordered = sorted(set(indexes))
    parts = []
    for _, run in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        values = [value for _, value in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(parts)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: defined variables are replaced, `$$` escapes, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def path_rewriter(mounts: Mapping[str, str]) -> Callable[[str], str]:
    """Replace each container path prefix (a mount path) by its local directory, on path boundaries only."""
    if not mounts:
        return lambda text: text
    ordered = sorted(mounts, key=len, reverse=True)  # /data/cache before /data
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p.rstrip("/") or "/") for p in ordered) + r")(?=/|$|[^\w.-])"
    )
    table = {p.rstrip("/") or "/": local for p, local in mounts.items()}
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)


def service_rewriter(addresses: Mapping[tuple[str, str, int], int], namespace: str) -> Callable[[str], str]:
    """Replace Service addresses by their local proxies.

    `addresses` maps (service, namespace, port) to the local port of its proxy. Within the
    pod's own namespace the short name works, as cluster DNS search paths make it work.
    """
    table: dict[str, str] = {}
    for (service, svc_namespace, port), local in addresses.items():
        hosts = [
            f"{service}.{svc_namespace}.svc.cluster.local",
            f"{service}.{svc_namespace}.svc",
            f"{service}.{svc_namespace}",
        ]
        if svc_namespace == namespace:
            hosts.append(service)
        for host in hosts:
            table[f"{host}:{port}"] = f"127.0.0.1:{local}"
            if port == 80:  # http://svc/path
                table[f"//{host}"] = f"//127.0.0.1:{local}"
    if not table:
        return lambda text: text
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.:-])")
    return lambda text: pattern.sub(lambda m: table[m.group(1)], text)


_PORT_FLAG = re.compile(r"^--[\w-]*port$")
_PORT_FLAG_INLINE = re.compile(r"^(--[\w-]*port)=(\d+)$")
_PORT_ENV = re.compile(r"(^|_)PORT$")


def remap_ports(
    argv: list[str], env: dict[str, str], ports: dict[int, int], allocate: Callable[[], int]
) -> tuple[list[str], dict[str, str]]:
    """Give every port a process listens on a free local port (see the module docstring, rewrite 3).

    `ports` maps container port -> local port; it is filled in for ports met here that the
    container did not declare, so probes and proxies agree with the process.
    """

    def local(value: str) -> str:
        number = int(value)
        if number == 0:
            return value
        if number not in ports:
            ports[number] = allocate()
        return str(ports[number])

    out = list(argv)
    for i, arg in enumerate(out):
        inline = _PORT_FLAG_INLINE.match(arg)
        if inline:
            out[i] = f"{inline.group(1)}={local(inline.group(2))}"
        elif _PORT_FLAG.match(arg) and i + 1 < len(out) and out[i + 1].isdigit():
            out[i + 1] = local(out[i + 1])
    new_env = {k: (local(v) if _PORT_ENV.search(k) and v.isdigit() else v) for k, v in env.items()}
    return out, new_env


def image_entrypoint(image: str, table: Mapping[str, list[str]]) -> list[str] | None:
    """The ENTRYPOINT of a known image, matched on its name without registry, tag or digest."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    base = name.rsplit("/", 1)[-1]
    return table.get(name) or table.get(base)


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy a selector given as plain labels or as {matchLabels: ...}."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        if selector.get("matchExpressions"):
            raise HarnessError("label selectors with matchExpressions are not emulated")
        selector = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(POD_NAME_ALPHABET) for _ in range(length))


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def exit_code(returncode: int) -> int:
    """A container's exit code: a process killed by signal N reports 128 + N, as runtimes do."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(
    path: Path, offset: int = 0, lines: int = FALLBACK_LOG_LINES, limit: int = FALLBACK_LOG_BYTES
) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    text = "\n".join(data.decode(errors="replace").splitlines()[-lines:])
    return text.encode()[-limit:].decode(errors="ignore")


# ---------------------------------------------------------------- pods


@dataclass
class Container:
    """One container of a LocalPod: its spec, process and the state the kubelet reports."""

    spec: dict[str, Any]
    log: Path
    termination_log: Path
    process: asyncio.subprocess.Process | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    marker: str = ""  # the CONTAINER_MARKER value its processes carry

    @property
    def name(self) -> str:
        return self.spec["name"]

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


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


class LocalPod:
    """One Pod: its object in the API server and its containers as local process groups."""

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
        self.ports: dict[int, int] = {}  # container port -> local port
        self.port_names: dict[str, int] = {}  # port name -> container port
        self.containers = [self._container(c) for c in self.spec.get("containers") or []]
        self.init_containers = [self._container(c) for c in self.spec.get("initContainers") or []]
        self.initialized = not self.init_containers
        self.task: asyncio.Task | None = None
        self._status_lock = asyncio.Lock()
        self._written: dict[str, Any] | None = None

    def _container(self, spec: dict[str, Any]) -> Container:
        name = spec["name"]
        container = Container(spec, self.dir / f"{name}.log", self.dir / f"{name}.termination-log")
        container.marker = f"{self.namespace}/{self.name}/{name}/{uuid.uuid4().hex[:8]}"
        return container

    # ------------------------------------------------------------ state

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def active(self) -> bool:
        return not self.terminal and not self.stopping

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
            pid=main.process.pid if main and main.process and main.process.returncode is None else None,
            log=main.log if main else self.dir,
            deleted=self.deleted,
        )

    def status(self) -> dict[str, Any]:
        ready = "True" if self.ready else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True" if self.initialized else "False"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        if self.disrupted:
            conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC"})
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
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
        """Something the API server should know happened: write the status, wake the owner."""
        self.kubelet.spawn(self.write_status(), f"status of pod {self.name}")
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
            if await self.kubelet.api("PATCH", path, {"status": status}, missing_ok=True) is None:
                return
            self._written = status

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.obj.setdefault("status", {}).update(self.status())
        await self.kubelet.api("POST", api_path("v1", "pods", self.namespace), self.obj)
        self._written = self.status()
        self.kubelet.event(
            f"pod {self.namespace}/{self.name} created"
            + (f" (index {self.index})" if self.index is not None else "")
        )
        self.task = self.kubelet.spawn(self._run(), f"pod {self.name}")

    async def stop(self, grace: float | None = None, *, delete: bool = True) -> None:
        """Stop every container (TERM, then KILL after the grace period) and delete the Pod object."""
        if grace is None:
            grace = min(float(self.spec.get("terminationGracePeriodSeconds", 30)), self.kubelet.grace_seconds)
        self.stopping = True
        for container in self.containers + self.init_containers:
            await self._terminate(container, grace)
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if delete and not self.deleted:
            self.deleted = True
            await self.kubelet.api(
                "DELETE", api_path("v1", "pods", self.namespace, self.name), missing_ok=True
            )
            self.kubelet.event(f"pod {self.namespace}/{self.name} deleted")

    async def _terminate(self, container: Container, grace: float) -> None:
        process = container.process
        if process is None or process.returncode is not None:
            return
        signal_container(container, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            signal_container(container, signal.SIGKILL)
            await process.wait()

    def kill(self, sig: int) -> bool:
        """Signal every process of the main container (a crash, an OOM kill, a freeze), as a test asks."""
        for container in self.containers:
            if container.process is not None and container.process.returncode is None:
                signal_container(container, sig)
                return True
        return False

    async def _run(self) -> None:
        try:
            self.start_time = now_rfc3339()
            for container in self.init_containers:
                while not self.stopping:
                    code = await self._run_container(container, init=True)
                    if code == 0:
                        break
                    if self.spec.get("restartPolicy", "Always") == "Never":
                        self.phase = "Failed"
                        self.changed()
                        return
                    await self._backoff(container)
                if self.stopping:
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

    async def _supervise(self, container: Container) -> int:
        """Run a container until it ends for good under the pod's restartPolicy; its last exit code."""
        policy = self.spec.get("restartPolicy", "Always")
        while True:
            code = await self._run_container(container, init=False)
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

    async def _run_container(self, container: Container, init: bool) -> int:
        while True:  # CreateContainerConfigError is retried, as the kubelet does
            if self.stopping:
                return 137
            try:
                argv, env, cwd = await self.kubelet.plan(self, container)
                break
            except ConfigError as error:
                container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
                self.changed()
                await asyncio.sleep(1.0)
        container.argv = argv
        container.termination_log.unlink(missing_ok=True)
        (self.dir / f"{container.name}.command.json").write_text(
            json.dumps({"argv": argv, "cwd": cwd, "env": env}, indent=2)
        )
        offset = container.log.stat().st_size if container.log.exists() else 0
        started_at = now_rfc3339()
        try:
            with container.log.open("ab") as log:
                container.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            # The runtime's StartError: the pod spec names something that cannot run.
            container.exit_codes.append(128)
            container.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(error),
                    "startedAt": started_at,
                    "finishedAt": now_rfc3339(),
                }
            }
            self.kubelet.event(f"pod {self.name}/{container.name}: cannot start: {error}")
            self.changed()
            return 128
        process = container.process
        self.kubelet.event(
            f"pod {self.name}/{container.name} started pid {process.pid}: {' '.join(argv)[:300]}"
        )
        container.state = {"running": {"startedAt": started_at}}
        container.ready = False
        container.started = container.spec.get("startupProbe") is None
        self.changed()
        probes = (
            None if init else self.kubelet.spawn(self._probe(container, process), f"probes of {self.name}")
        )
        returncode = await process.wait()
        if probes is not None:
            probes.cancel()
        # The runtime tears the whole container down when its first process ends.
        signal_container(container, signal.SIGKILL)
        code = exit_code(returncode)
        container.exit_codes.append(code)
        container.ready = False
        message = ""
        if container.termination_log.exists():
            message = container.termination_log.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(
                errors="replace"
            )
        if (
            not message
            and code != 0
            and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = log_tail(container.log, offset)
        reason = "Completed" if code == 0 else "Error"
        container.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "message": message,
                "startedAt": started_at,
                "finishedAt": now_rfc3339(),
            }
        }
        self.kubelet.event(f"pod {self.name}/{container.name} exited {code}")
        self.changed()
        return code

    # ------------------------------------------------------------ probes

    async def _probe(self, container: Container, process: asyncio.subprocess.Process) -> None:
        spec = container.spec
        began = time.monotonic()
        startup, readiness, liveness = (
            spec.get("startupProbe"),
            spec.get("readinessProbe"),
            spec.get("livenessProbe"),
        )

        def timing(probe: dict[str, Any]) -> tuple[float, float, int]:
            return (
                float(probe.get("initialDelaySeconds", 0)),
                float(probe.get("periodSeconds", 10)),
                int(probe.get("failureThreshold", 3)),
            )

        if startup is not None:
            delay, period, threshold = timing(startup)
            await asyncio.sleep(delay)
            while not await self.kubelet.run_probe(self, container, startup):
                if time.monotonic() - began - delay >= period * threshold:
                    self.kubelet.event(
                        f"pod {self.name}/{container.name}: startup probe failed {threshold} times; restarting"
                    )
                    await self._terminate(container, self.kubelet.grace_seconds)
                    return
                await asyncio.sleep(FAST_PROBE_SECONDS)
            container.started = True
            self.changed()

        async def readiness_loop() -> None:
            if readiness is None:
                container.ready = True
                self.changed()
                return
            delay, period, threshold = timing(readiness)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - began)))
            failures = 0
            while True:
                ok = await self.kubelet.run_probe(self, container, readiness)
                failures = 0 if ok else failures + 1
                if ok != container.ready and (ok or failures >= threshold):
                    container.ready = ok
                    self.changed()
                await asyncio.sleep(period if container.ready else FAST_PROBE_SECONDS)

        async def liveness_loop() -> None:
            if liveness is None:
                return
            delay, period, threshold = timing(liveness)
            await asyncio.sleep(delay)
            failures = 0
            while True:
                failures = 0 if await self.kubelet.run_probe(self, container, liveness) else failures + 1
                if failures >= threshold:
                    self.kubelet.event(
                        f"pod {self.name}/{container.name}: liveness probe failed {threshold} times; restarting"
                    )
                    await self._terminate(container, self.kubelet.grace_seconds)
                    return
                await asyncio.sleep(period)

        await asyncio.gather(readiness_loop(), liveness_loop())


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries this container's marker: everything it started,
    including processes that left its process group (vLLM servers a stage starts with a
    session of their own). It stands in for the container's cgroup."""
    needle = f"{CONTAINER_MARKER}={marker}\0".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if needle in environ.read_bytes():
                found.append(int(environ.parent.name))
    return found


def signal_container(container: Container, sig: int) -> None:
    """Signal every process of a container: its process group and every marked process."""
    if container.process is not None:
        signal_group(container.process.pid, sig)
    for pid in marked_processes(container.marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---------------------------------------------------------------- controllers


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
        self.pods: list[LocalPod] = []
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
        if await self.kubelet.api("PATCH", path, {"status": status}, missing_ok=True) is not None:
            self._written = status


class JobController(Controller):
    """The batch/v1 Job controller for one Job (see the module docstring for what is covered)."""

    kind = "Job"

    def __init__(self, kubelet: Kubelet, obj: dict[str, Any]):
        self.counted: set[str] = set()
        self.succeeded_indexes: set[int] = set()
        self.failed_indexes: set[int] = set()
        self.index_failures: dict[int, int] = {}
        self.retry_at: dict[int | None, float] = {}
        self.succeeded = 0
        self.failed = 0
        self.start_time: str | None = None
        self.started_at = 0.0
        self.conditions: list[dict[str, Any]] = []
        self.completion_time: str | None = None
        super().__init__(kubelet, obj)

    @property
    def finished(self) -> bool:
        return any(c["type"] in ("Complete", "Failed") for c in self.conditions)

    async def reconcile(self) -> float | None:
        spec = self.obj.get("spec") or {}
        for unsupported in ("podFailurePolicy", "successPolicy"):
            if spec.get(unsupported):
                raise HarnessError(
                    f"spec.{unsupported} is not emulated; the harness cannot run this Job faithfully"
                )
        indexed = spec.get("completionMode", "NonIndexed") == "Indexed"
        completions = spec.get("completions")
        parallelism = spec.get("parallelism", 1)
        per_index = spec.get("backoffLimitPerIndex")
        backoff_limit = spec.get("backoffLimit", 2**31 - 1 if per_index is not None else 6)
        restart_policy = (spec.get("template", {}).get("spec") or {}).get("restartPolicy")
        if restart_policy not in ("Never", "OnFailure"):
            raise HarnessError(
                f"spec.template.spec.restartPolicy is {restart_policy!r}; a Job needs Never or OnFailure"
            )
        if indexed and completions is None:
            raise HarnessError("spec.completions: an Indexed Job needs it")

        self._count_terminated(indexed, per_index)
        active = [pod for pod in self.pods if pod.active]
        # With restartPolicy OnFailure, container restarts count as failures.
        restarts = sum(c.restart_count for pod in self.pods for c in pod.containers)

        if not self.finished:
            if spec.get("suspend"):
                await asyncio.gather(*(pod.stop() for pod in active))
                self.pods = [pod for pod in self.pods if not pod.deleted]
                self.start_time = None
                self._set_condition("Suspended", "JobSuspended", "Job suspended")
                await self._write(indexed, per_index)
                return None
            self.conditions = [c for c in self.conditions if c["type"] != "Suspended"]
            if self.start_time is None:
                self.start_time, self.started_at = now_rfc3339(), time.monotonic()
            failure = self._failure(spec, indexed, completions, per_index, backoff_limit, restarts)
            if failure is not None:
                reason, message = failure
                self._set_condition("FailureTarget", reason, message)
                self._set_condition("Failed", reason, message)
                self.kubelet.event(f"Job {self.namespace}/{self.name} failed: {reason}: {message}")
            elif self._complete(indexed, completions, active):
                self._set_condition(
                    "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
                )
                self._set_condition(
                    "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                )
                self.completion_time = now_rfc3339()
                self.kubelet.event(f"Job {self.namespace}/{self.name} complete")
        if self.finished:  # the controller deletes what still runs of a finished Job
            await asyncio.gather(*(pod.stop() for pod in active))
            await self._write(indexed, per_index)
            return None
        wait = await self._create_pods(spec, indexed, completions, parallelism)
        await self._write(indexed, per_index)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            left = self.started_at + deadline - time.monotonic()
            wait = left if wait is None else min(wait, left)
        return None if wait is None else max(wait, 0.05)

    def _count_terminated(self, indexed: bool, per_index: int | None) -> None:
        for pod in self.pods:
            if not pod.terminal or pod.name in self.counted:
                continue
            self.counted.add(pod.name)
            if pod.stopping and not pod.disrupted:
                continue  # removed by this controller (suspend, finished Job): not a pod failure
            if pod.phase == "Succeeded":
                self.succeeded += 1
                if pod.index is not None:
                    self.succeeded_indexes.add(pod.index)
                continue
            self.failed += 1
            delay = min(self.kubelet.retry_delay * 2 ** (self.failed - 1), MAX_BACKOFF_SECONDS)
            self.retry_at[pod.index] = time.monotonic() + delay
            if pod.index is not None:
                self.index_failures[pod.index] = self.index_failures.get(pod.index, 0) + 1
                if per_index is not None and self.index_failures[pod.index] > per_index:
                    self.failed_indexes.add(pod.index)

    def _failure(
        self,
        spec: dict[str, Any],
        indexed: bool,
        completions: int | None,
        per_index: int | None,
        backoff_limit: int,
        restarts: int,
    ) -> tuple[str, str] | None:
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self.started_at >= deadline:
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        if per_index is not None:
            max_failed = spec.get("maxFailedIndexes")
            if max_failed is not None and len(self.failed_indexes) > max_failed:
                return (
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes",
                )
            done = self.succeeded_indexes | self.failed_indexes
            if indexed and self.failed_indexes and len(done) >= (completions or 0):
                return "FailedIndexes", "Job has failed indexes"
            return None
        if self.failed + restarts > backoff_limit:
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        return None

    def _complete(self, indexed: bool, completions: int | None, active: list[LocalPod]) -> bool:
        if indexed:
            return len(self.succeeded_indexes) >= (completions or 0)
        if completions is None:  # work-queue Job: done when one pod succeeded and none runs
            return self.succeeded > 0 and not active
        return self.succeeded >= completions

    async def _create_pods(
        self, spec: dict[str, Any], indexed: bool, completions: int | None, parallelism: int
    ) -> float | None:
        active = [pod for pod in self.pods if pod.active]
        now = time.monotonic()
        wait: float | None = None
        if indexed:
            running = {pod.index for pod in active}
            wanted = [
                i
                for i in range(completions or 0)
                if i not in self.succeeded_indexes and i not in self.failed_indexes and i not in running
            ]
        else:
            remaining = (completions if completions is not None else parallelism) - self.succeeded
            if completions is None and self.succeeded:
                remaining = 0
            wanted = [None] * max(0, min(parallelism, remaining) - len(active))
        for index in wanted[: max(0, parallelism - len(active))]:
            due = self.retry_at.get(index, 0.0)
            if due > now:  # a failed pod's replacement waits its backoff
                wait = due - now if wait is None else min(wait, due - now)
                continue
            await self._create_pod(spec, index)
        return wait

    async def _create_pod(self, spec: dict[str, Any], index: int | None) -> None:
        template = spec.get("template") or {}
        labels = {
            "job-name": self.name,
            "batch.kubernetes.io/job-name": self.name,
            "controller-uid": self.uid,
            "batch.kubernetes.io/controller-uid": self.uid,
        }
        annotations = {}
        prefix = self.name
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
            prefix = f"{self.name}-{index}"
        obj = self.pod_object(template, f"{prefix}-{random_suffix()}", labels, annotations)
        if index is not None:
            # The Job controller injects the index into every container, from the annotation.
            for container in obj["spec"].get("containers", []) + obj["spec"].get("initContainers", []):
                container["env"] = [
                    *(container.get("env") or []),
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                            }
                        },
                    },
                ]
        pod = LocalPod(self.kubelet, obj, self, index)
        self.pods.append(pod)
        self.kubelet.register(pod)
        await pod.start()

    def _set_condition(self, kind: str, reason: str, message: str) -> None:
        if any(c["type"] == kind for c in self.conditions):
            return
        now = now_rfc3339()
        self.conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        )

    async def _write(self, indexed: bool, per_index: int | None) -> None:
        active = [pod for pod in self.pods if pod.active]
        status: dict[str, Any] = {
            "startTime": self.start_time,
            "active": len(active) or None,
            "ready": sum(1 for pod in active if pod.ready),
            "terminating": 0,
            "succeeded": self.succeeded or None,
            "failed": self.failed or None,
            "conditions": self.conditions or None,
            "completionTime": self.completion_time,
            "uncountedTerminatedPods": {},
        }
        if indexed:
            status["completedIndexes"] = compress_indexes(self.succeeded_indexes) or None
            if per_index is not None:
                status["failedIndexes"] = compress_indexes(self.failed_indexes) or None
        await self.write_status(status)


class DeploymentController(Controller):
    """The apps/v1 Deployment (and ReplicaSet) controller for one Deployment."""

    kind = "Deployment"

    def __init__(self, kubelet: Kubelet, obj: dict[str, Any]):
        self.progress_started = time.monotonic()
        super().__init__(kubelet, obj)

    async def reconcile(self) -> float | None:
        spec = self.obj.get("spec") or {}
        template = spec.get("template") or {}
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
        replicas = spec.get("replicas", 1)
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
            pod = LocalPod(self.kubelet, obj, self)
            self.pods.append(pod)
            self.kubelet.register(pod)
            await pod.start()
        ready = sum(1 for pod in self.pods if pod.ready)
        available = ready >= replicas
        deadline = spec.get("progressDeadlineSeconds", 600)
        stalled = not available and time.monotonic() - self.progress_started > deadline
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
            conditions = self._written["conditions"]  # unchanged: keep the transition times
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


# ---------------------------------------------------------------- services


class ServiceProxy:
    """kube-proxy for one Service port: a local TCP listener forwarding to a ready endpoint."""

    def __init__(self, kubelet: Kubelet, namespace: str, service: str, port: dict[str, Any]):
        self.kubelet = kubelet
        self.namespace = namespace
        self.service = service
        self.port = port
        self.selector: dict[str, str] = {}
        self.server: asyncio.AbstractServer | None = None
        self.local_port = 0
        self._turn = itertools.count()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.local_port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    def endpoints(self) -> list[int]:
        """Local ports of the ready pods behind this Service port."""
        target = self.port.get("targetPort", self.port["port"])
        out = []
        for pod in self.kubelet.local_pods():
            if (
                pod.namespace != self.namespace
                or not pod.ready
                or not labels_match(self.selector, pod.labels)
            ):
                continue
            number = pod.port_names.get(target) if isinstance(target, str) else int(target)
            if number is not None:
                out.append(pod.ports.get(number, number))
        return out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoints = self.endpoints()
        if not endpoints:  # no ready endpoint: the connection is refused
            writer.close()
            return
        port = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


# ---------------------------------------------------------------- the API server

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
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False),
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


# ---------------------------------------------------------------- the kubelet


class Kubelet:
    """Plays node and controllers against an API server URL, in a thread of its own (see module docstring).

    Use as a context manager; every method a test calls is thread-safe:

        with Kubelet(emulator_url, tmp_path, claims={"data": storage}) as kubelet:
            ...                        # the operator creates Jobs; their pods run here
            kubelet.kill(pod_name)     # a node crash / OOM kill of one pod
            kubelet.pods()             # snapshots of every pod it ran
    """

    def __init__(
        self,
        api_url: str,
        root: Path,
        *,
        claims: Mapping[str, Path] | None = None,
        env: Mapping[str, str] | None = None,
        entrypoints: Mapping[str, list[str]] | None = None,
        namespace: str | None = None,
        retry_delay: float = 0.5,
        grace_seconds: float = 10.0,
    ):
        self.api_url = api_url.rstrip("/")
        self.root = Path(root)
        self.claims = {name: Path(path) for name, path in (claims or {}).items()}
        self.base_env = dict(env or {})
        self.entrypoints = dict(IMAGE_ENTRYPOINTS if entrypoints is None else entrypoints)
        self.namespace = namespace
        self.retry_delay = retry_delay
        self.grace_seconds = grace_seconds
        self.errors: list[str] = []
        self.events: list[str] = []
        self._controllers: dict[tuple[str, str, str], Controller] = {}
        self._pods: dict[tuple[str, str], LocalPod] = {}
        self._history: list[LocalPod] = []
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._proxies: dict[tuple[str, str, int], ServiceProxy] = {}
        self._allocated: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._event_log = self.root / "kubelet.log"

    # ------------------------------------------------------------ thread plumbing

    def __enter__(self) -> Kubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._thread_main, name="kubelet", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.errors:
            self.stop()
            raise HarnessError(
                "kubelet did not start: " + "; ".join(self.errors or ["watches not established"])
            )

    def stop(self) -> None:
        """Stop every pod and proxy and the thread; raise HarnessError if the harness itself failed."""
        if self._loop is not None and self._stopped is not None and self._thread and self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(60)
            self._thread.join(30)
        self.check()

    def check(self) -> None:
        if self.errors:
            raise HarnessError("the kubelet harness failed:\n" + "\n".join(self.errors))

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    def _call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        async def run() -> Any:
            return fn()

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def spawn(self, coro: Any, what: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.error(f"{what}: {t.exception()!r}")

        task.add_done_callback(done)
        return task

    def event(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        self.events.append(line)
        with contextlib.suppress(OSError), self._event_log.open("a") as handle:
            handle.write(line + "\n")

    def error(self, message: str) -> None:
        self.errors.append(message)
        self.event(f"ERROR {message}")

    # ------------------------------------------------------------ what tests call

    def pods(self) -> list[PodInfo]:
        """Every pod the harness created or ran, in creation order, including deleted ones."""
        return self._call(lambda: [pod.info() for pod in self._history])

    def kill(self, pod_name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a running pod's main container (SIGKILL reads as exit code 137, like an OOM kill or crash)."""

        def act() -> bool:
            for pod in self._pods.values():
                if pod.name == pod_name:
                    return pod.kill(sig)
            return False

        if not self._call(act):
            raise HarnessError(f"pod {pod_name} has no running container to kill")
        self.event(f"test killed pod {pod_name} with signal {sig}")

    def diagnostics(self, lines: int = 30) -> str:
        """The harness's own event log and the log tails of failed or running pods, for a test's failure message."""

        def collect() -> str:
            parts = ["kubelet events:", *self.events[-80:]]
            for pod in self._history:
                for container in pod.containers:
                    if container.exit_codes and container.exit_codes[-1] == 0 and pod.terminal:
                        continue
                    parts.append(
                        f"--- {pod.name}/{container.name} ({pod.phase}, exits {container.exit_codes}):"
                    )
                    parts.append(log_tail(container.log, lines=lines, limit=4000))
            return "\n".join(parts)

        return self._call(collect)

    def claim_dir(self, namespace: str, claim: str) -> Path:
        return self.claims.get(claim) or self.root / "claims" / namespace / claim

    # ------------------------------------------------------------ API access

    async def api(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        assert self._session is not None
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        data = json.dumps(body) if body is not None else None
        async with self._session.request(
            method, self.api_url + path, data=data, headers=headers or None
        ) as response:
            if response.status == 404 and missing_ok:
                return None
            text = await response.text()
            if response.status >= 400:
                raise HarnessError(f"{method} {path}: HTTP {response.status}: {text[:500]}")
            return json.loads(text) if text else {}

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=2**22) as session:
            self._session = session
            ready = []
            for kind, (api_version, plural) in WATCHED.items():
                started = asyncio.Event()
                ready.append(started)
                self.spawn(self._watch(kind, api_version, plural, started), f"watch {plural}")
            waiting = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in ready)))
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait([waiting, stopped], return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                self._ready.set()
            await stopped
            waiting.cancel()

    async def _shutdown(self) -> None:
        await asyncio.gather(
            *(pod.stop(grace=5.0, delete=False) for pod in list(self._pods.values())), return_exceptions=True
        )
        for proxy in self._proxies.values():
            await proxy.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self._stopped is not None
        self._stopped.set()

    async def _watch(self, kind: str, api_version: str, plural: str, started: asyncio.Event) -> None:
        path = api_path(api_version, plural, self.namespace)
        while True:
            assert self._session is not None
            try:
                async with self._session.get(self.api_url + path, params={"watch": "true"}) as response:
                    if response.status >= 400:
                        raise HarnessError(
                            f"cannot watch {api_version}/{plural} (HTTP {response.status}); the API server must "
                            f"serve it (register it in the emulator)"
                        )
                    started.set()
                    async for line in response.content:
                        if line.strip():
                            await self._dispatch(kind, json.loads(line))
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.event(f"watch {plural} interrupted ({error!r}); watching again")
                await asyncio.sleep(0.5)

    async def _dispatch(self, kind: str, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        if obj.get("kind") == "Status":
            self.error(f"watch of {kind} returned an error: {obj.get('message')}")
            return
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace") or "default", meta.get("name", ""))
        deleted = event.get("type") == "DELETED"
        if kind in ("Job", "Deployment"):
            controller = self._controllers.get(key)
            if deleted:
                if controller is not None:
                    del self._controllers[key]
                    self.event(f"{kind} {key[1]}/{key[2]} deleted: stopping its pods")
                    self.spawn(controller.delete(), f"delete {kind} {key[2]}")
            elif controller is None:
                cls = JobController if kind == "Job" else DeploymentController
                self.event(f"{kind} {key[1]}/{key[2]} seen")
                self._controllers[key] = cls(self, obj)
            else:
                controller.update(obj)
        elif kind == "Service":
            await self._service_event(key[1], key[2], None if deleted else obj)
        elif kind == "Pod":
            await self._pod_event(key[1], key[2], obj, deleted)

    async def _service_event(self, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self._services.pop((namespace, name), None)
            for key in [k for k in self._proxies if k[:2] == (namespace, name)]:
                await self._proxies.pop(key).close()
            return
        self._services[(namespace, name)] = obj
        spec = obj.get("spec") or {}
        for port in spec.get("ports") or []:
            key = (namespace, name, int(port["port"]))
            proxy = self._proxies.get(key)
            if proxy is None:
                proxy = self._proxies[key] = ServiceProxy(self, namespace, name, port)
                await proxy.start()
                self.event(f"Service {namespace}/{name}:{port['port']} -> 127.0.0.1:{proxy.local_port}")
            proxy.port = port
            proxy.selector = spec.get("selector") or {}

    async def _pod_event(self, namespace: str, name: str, obj: dict[str, Any], deleted: bool) -> None:
        pod = self._pods.get((namespace, name))
        if deleted:
            if pod is not None and not pod.deleted:
                # Deleted through the API (kubectl delete pod, eviction): the kubelet stops it.
                pod.deleted = True
                pod.disrupted = True
                self.event(f"pod {namespace}/{name} deleted through the API: stopping it")
                self.spawn(pod.stop(delete=False), f"stop pod {name}")
            return
        if (
            pod is None
            and obj.get("spec", {}).get("nodeName") in (None, "local")
            and not (obj.get("status") or {}).get("phase")
        ):
            # A bare Pod someone else created: run it too (no controller will replace it).
            pod = LocalPod(self, obj, None)
            self.register(pod)
            pod.dir.mkdir(parents=True, exist_ok=True)
            self.event(f"bare pod {namespace}/{name} seen")
            pod.task = self.spawn(pod._run(), f"pod {name}")

    def register(self, pod: LocalPod) -> None:
        self._pods[(pod.namespace, pod.name)] = pod
        self._history.append(pod)

    def local_pods(self) -> list[LocalPod]:
        return [pod for pod in self._pods.values() if not pod.deleted]

    def allocate_port(self) -> int:
        for _ in range(100):
            port = free_port()
            if port not in self._allocated:
                self._allocated.add(port)
                return port
        raise HarnessError("no free local port")

    # ------------------------------------------------------------ the container's command line

    async def plan(self, pod: LocalPod, container: Container) -> tuple[list[str], dict[str, str], str]:
        """The local argv, environment and working directory of a container (see the module docstring)."""
        spec = container.spec
        mounts = await self._volumes(pod, spec)
        termination_path = spec.get("terminationMessagePath", "/dev/termination-log")
        mounts[termination_path] = str(container.termination_log)
        env = await self._environment(pod, spec)
        if "DISTILLERY_TERMINATION_LOG" not in env:
            env["DISTILLERY_TERMINATION_LOG"] = termination_path
        command = spec.get("command") or []
        if not command:
            command = image_entrypoint(spec.get("image", ""), self.entrypoints) or []
            if not command:
                raise HarnessError(
                    f"container {spec['name']} has no command and image {spec.get('image')!r} is not in "
                    "IMAGE_ENTRYPOINTS; the harness does not know what it would run"
                )
        argv = [expand_references(a, env) for a in [*command, *(spec.get("args") or [])]]
        addresses = {(name, ns, port): proxy.local_port for (ns, name, port), proxy in self._proxies.items()}
        rewrite_paths = path_rewriter(mounts)
        rewrite_services = service_rewriter(addresses, pod.namespace)

        def rewrite(text: str) -> str:
            return rewrite_services(rewrite_paths(text))

        argv = [rewrite(a) for a in argv]
        env = {k: rewrite(v) for k, v in env.items()}
        for port in spec.get("ports") or []:
            number = int(port["containerPort"])
            if port.get("name"):
                pod.port_names[port["name"]] = number
        declared = {int(p["containerPort"]) for p in spec.get("ports") or []}
        # pod.ports persists, so a restarted container listens where probes and proxies look.
        argv, env = remap_ports(argv, env, pod.ports, self.allocate_port)
        for number in declared - set(pod.ports):
            # A declared port no argument carries: the process binds it as is.
            pod.ports.setdefault(number, number)
        argv[0] = self._executable(argv[0])
        workdir = rewrite(spec.get("workingDir") or "") or str(pod.dir / "workdir")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return argv, {**self._image_env(pod), **env, CONTAINER_MARKER: container.marker}, workdir

    def _executable(self, name: str) -> str:
        if os.sep in name and os.access(name, os.X_OK):
            return name
        found = shutil.which(os.path.basename(name), path=self._path())
        return found or name  # not found: exec fails and the pod reports StartError

    def _path(self) -> str:
        return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])

    def _image_env(self, pod: LocalPod) -> dict[str, str]:
        return {
            "PATH": self._path(),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod.name,
            "HOME": str(pod.dir / "home"),
            **self.base_env,
        }

    async def _volumes(self, pod: LocalPod, spec: dict[str, Any]) -> dict[str, str]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
        mounts: dict[str, str] = {}
        for mount in spec.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise HarnessError(
                    f"container {spec['name']} mounts volume {mount['name']!r}, which the pod does not define"
                )
            local = await self._volume_dir(pod, volume)
            if mount.get("subPath"):
                local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = str(local)
        return mounts

    async def _volume_dir(self, pod: LocalPod, volume: dict[str, Any]) -> Path:
        if "persistentVolumeClaim" in volume:
            local = self.claim_dir(pod.namespace, volume["persistentVolumeClaim"]["claimName"])
        elif "emptyDir" in volume:
            local = pod.dir / "volumes" / volume["name"]
        elif "configMap" in volume or "secret" in volume:
            local = pod.dir / "volumes" / volume["name"]
            source = volume.get("configMap") or volume.get("secret") or {}
            name = source.get("name") or source.get("secretName")
            kind = "configmaps" if "configMap" in volume else "secrets"
            data = await self._data(pod.namespace, kind, name, source.get("optional", False))
            local.mkdir(parents=True, exist_ok=True)
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] in data:
                    (local / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                    (local / item["path"]).write_bytes(data[item["key"]])
        else:
            raise HarnessError(
                f"volume {volume['name']!r}: only persistentVolumeClaim, emptyDir, configMap and "
                "secret volumes are emulated"
            )
        local.mkdir(parents=True, exist_ok=True)
        return local

    async def _data(self, namespace: str, plural: str, name: str, optional: bool) -> dict[str, bytes]:
        """A Secret's or ConfigMap's data as bytes; ConfigError (retried) when it is missing."""
        obj = await self.api("GET", api_path("v1", plural, namespace, name), missing_ok=True)
        if obj is None:
            if optional:
                return {}
            raise ConfigError(f'{plural[:-1]} "{name}" not found')
        out: dict[str, bytes] = {}
        if plural == "secrets":
            out.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        else:
            out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            out.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        # The emulator does not fold stringData into data as the API server does.
        out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return out

    async def _environment(self, pod: LocalPod, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            ref = source.get("secretRef") or source.get("configMapRef") or {}
            plural = "secrets" if "secretRef" in source else "configmaps"
            data = await self._data(pod.namespace, plural, ref["name"], ref.get("optional", False))
            env.update({source.get("prefix", "") + k: v.decode() for k, v in data.items()})
        for item in spec.get("env") or []:
            name = item["name"]
            if "value" in item or "valueFrom" not in item:
                env[name] = expand_references(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
                plural = "secrets" if "secretKeyRef" in source else "configmaps"
                data = await self._data(pod.namespace, plural, ref["name"], ref.get("optional", False))
                if ref["key"] in data:
                    env[name] = data[ref["key"]].decode()
                elif not ref.get("optional", False):
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {plural[:-1]} {pod.namespace}/{ref['name']}"
                    )
            elif "fieldRef" in source:
                env[name] = self._field(pod, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                resources = spec.get("resources") or {}
                resource = source["resourceFieldRef"]["resource"]
                group, _, key = resource.partition(".")
                env[name] = str((resources.get(group) or {}).get(key, "0"))
            else:
                raise HarnessError(f"env {name}: valueFrom {sorted(source)} is not emulated")
        return env

    def _field(self, pod: LocalPod, path: str) -> str:
        meta = pod.obj["metadata"]
        simple = {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": "local",
            "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        raise HarnessError(f"fieldRef {path!r} is not emulated")

    async def run_probe(self, pod: LocalPod, container: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = self._probe_port(pod, get.get("port"))
                scheme = get.get("scheme", "HTTP").lower()
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                assert self._session is not None
                async with self._session.get(
                    f"{scheme}://127.0.0.1:{port}{get.get('path', '/')}",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    ssl=False,
                ) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                port = self._probe_port(pod, probe["tcpSocket"].get("port"))
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                writer.close()
                return True
            if "exec" in probe:
                _, env, cwd = await self.plan(pod, container)
                process = await asyncio.create_subprocess_exec(
                    *probe["exec"]["command"],
                    env=env,
                    cwd=cwd,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    return await asyncio.wait_for(process.wait(), timeout) == 0
                except asyncio.TimeoutError:
                    signal_group(process.pid, signal.SIGKILL)
                    return False
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
            return False
        raise HarnessError(f"probe {sorted(probe)} is not emulated (httpGet, tcpSocket and exec are)")

    def _probe_port(self, pod: LocalPod, port: int | str | None) -> int:
        number = pod.port_names.get(port) if isinstance(port, str) and not port.isdigit() else int(port or 0)
        if number is None:
            raise HarnessError(f"pod {pod.name}: probe names port {port!r}, which no container declares")
        return pod.ports.get(number, number)
