"""`Kubelet`: the node and the controllers in one object, in a thread of its own.

It watches Jobs, Deployments, Services and Pods on the API server, like a node would, and
hands each to its part: a `JobController` or `DeploymentController` per object, a
`ServiceProxy` per Service port, a `Pod` for each bare Pod someone else created (no
controller replaces it). As the garbage collector, for the Pods it made only: deleting their
Job or Deployment stops and deletes them; a Pod deleted through the API is stopped. Containers
run in its `runtime` (default: `ProcessRuntime()`, local processes). With `api_access`, the pods
it creates get their API access as in a cluster (`tests/harness/serviceaccount.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.controller import Controller
from tests.harness.deployment import DeploymentController
from tests.harness.dns import pod_dns_names
from tests.harness.errors import HarnessError
from tests.harness.helpers import log_tail
from tests.harness.job import JobController
from tests.harness.kueue import gate_pod, suspend_job
from tests.harness.pod import Pod, PodInfo
from tests.harness.process import ProcessRuntime
from tests.harness.rest import ApiClient, api_path
from tests.harness.runtime import Address, Runtime, ServiceKey
from tests.harness.service_proxy import ServiceProxy
from tests.harness.serviceaccount import ApiAccess, admit, publish_root_ca

# The kinds it watches: (apiVersion, plural).
WATCHED = {
    "Job": ("batch/v1", "jobs"),
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "Pod": ("v1", "pods"),
}
WATCH_RETRY_SECONDS = 0.5


class Kubelet:
    """Plays node and controllers against an API server URL, in a thread of its own.

    Use as a context manager; every method a test calls is thread-safe:

        with Kubelet(emulator_url, tmp_path, claims={"data": storage}) as kubelet:
            ...                        # the operator creates Jobs; their pods run here
            kubelet.kill(pod_name)     # a node crash / OOM kill of one pod
            kubelet.pods()             # snapshots of every pod it ran

    `claims` maps a PVC name to the host directory that stands for it (else
    `<root>/claims/<namespace>/<claim>`); `namespace` limits the watches to one namespace;
    `retry_delay` is where back-offs start; `grace_seconds` caps terminationGracePeriodSeconds;
    `api_access`: where pods reach the API server, for their service-account token and env;
    `kueue`: play Kueue's webhooks (`tests/harness/kueue.py`): pods labelled with a queue are gated and
    Jobs labelled with one are kept suspended until a test admits them (`kueue.Kueue`).
    """

    def __init__(
        self,
        api_url: str,
        root: Path,
        *,
        runtime: Runtime | None = None,
        claims: Mapping[str, Path] | None = None,
        namespace: str | None = None,
        retry_delay: float = 0.5,
        grace_seconds: float = 10.0,
        api_access: ApiAccess | None = None,
        kueue: bool = False,
    ):
        self.api = ApiClient(api_url)
        self.root = Path(root)
        self.runtime: Runtime = runtime if runtime is not None else ProcessRuntime()
        self.claims = {name: Path(path) for name, path in (claims or {}).items()}
        self.namespace = namespace
        self.retry_delay = retry_delay
        self.grace_seconds = grace_seconds
        self.api_access = api_access
        self.kueue = kueue
        self._root_ca: set[str] = set()  # namespaces where kube-root-ca.crt was published
        self.errors: list[str] = []
        self.events: list[str] = []
        self._controllers: dict[tuple[str, str, str], Controller] = {}
        self._pods: dict[tuple[str, str], Pod] = {}
        self._history: list[Pod] = []
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._proxies: dict[tuple[str, str, int], ServiceProxy] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
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
        """Run `fn` in the kubelet's loop (awaiting what it returns, if awaitable); its result."""

        async def run() -> Any:
            result = fn()
            return await result if inspect.isawaitable(result) else result

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

        async def act() -> bool:
            for pod in self._pods.values():
                if pod.name == pod_name:
                    return await pod.kill(sig)
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

    # ------------------------------------------------------------ what its parts call

    def read_log(self, namespace: str, name: str, container: str | None = None) -> str | None:
        """A container's log (the first container's without `container`), as `kubectl logs` reads it;
        None for a pod or container this kubelet never ran. Read from any thread."""
        for pod in reversed(list(self._history)):
            if pod.namespace == namespace and pod.name == name:
                for candidate in [*pod.containers, *pod.init_containers]:
                    if container in (None, candidate.name):
                        log = candidate.log
                        return log.read_text(errors="replace") if log.is_file() else ""
        return None

    def claim_dir(self, namespace: str, claim: str) -> Path:
        return self.claims.get(claim) or self.root / "claims" / namespace / claim

    def register(self, pod: Pod) -> None:
        self._pods[(pod.namespace, pod.name)] = pod
        self._history.append(pod)

    async def admit(self, pod: dict[str, Any]) -> dict[str, Any]:
        """A Pod as the API server's admission stores it (its service-account token, with `api_access`;
        Kueue's scheduling gate, with `kueue`)."""
        if self.kueue:
            pod = gate_pod(pod)
        if self.api_access is None:
            return pod
        namespace = pod["metadata"].get("namespace") or "default"
        if namespace not in self._root_ca:
            self._root_ca.add(namespace)
            await publish_root_ca(self.api, namespace, self.api_access)
        return admit(pod)

    def local_pods(self) -> list[Pod]:
        return [pod for pod in self._pods.values() if not pod.deleted]

    def dns_names(self, pod: dict[str, Any]) -> list[str]:
        """The pod's own names in cluster DNS, by the Services that exist now (`dns.pod_dns_names`)."""
        return pod_dns_names(pod, self._services.values())

    def service_addresses(self) -> dict[ServiceKey, Address]:
        """Every Service port that exists now, and where its proxy listens."""
        return {proxy.key: proxy.address for proxy in self._proxies.values()}

    # ------------------------------------------------------------ watches

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        async with self.api:
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
            try:
                async for event in self.api.watch(path, started):
                    await self._dispatch(kind, event)
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.event(f"watch {plural} interrupted ({error!r}); watching again")
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _dispatch(self, kind: str, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        if obj.get("kind") == "Status":
            self.error(f"watch of {kind} returned an error: {obj.get('message')}")
            return
        meta = obj.get("metadata") or {}
        key = (kind, meta.get("namespace") or "default", meta.get("name", ""))
        deleted = event.get("type") == "DELETED"
        if kind == "Job" and self.kueue and not deleted and key not in self._controllers:
            obj = await self._kueue_job_webhook(obj)
        if kind in ("Job", "Deployment"):
            self._controller_event(key, obj, deleted)
        elif kind == "Service":
            await self._service_event(key[1], key[2], None if deleted else obj)
        elif kind == "Pod":
            await self._pod_event(key[1], key[2], obj, deleted)

    async def _kueue_job_webhook(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Kueue's Job webhook suspends a new Job that names a queue; the emulator has no webhooks, so the
        harness does it when it first sees the Job, before its controller can start a pod."""
        held = suspend_job(obj)
        if held is not obj:
            meta = obj["metadata"]
            path = api_path("batch/v1", "jobs", meta.get("namespace") or "default", meta["name"])
            await self.api.request("PATCH", path, {"spec": {"suspend": True}}, missing_ok=True)
            self.event(f"Job {meta['name']} names a Kueue queue: suspended until admitted")
        return held

    def _controller_event(self, key: tuple[str, str, str], obj: dict[str, Any], deleted: bool) -> None:
        kind, namespace, name = key
        controller = self._controllers.get(key)
        if deleted:
            if controller is not None:
                del self._controllers[key]
                self.event(f"{kind} {namespace}/{name} deleted: stopping its pods")
                self.spawn(controller.delete(), f"delete {kind} {name}")
        elif controller is None:
            cls = JobController if kind == "Job" else DeploymentController
            self.event(f"{kind} {namespace}/{name} seen")
            self._controllers[key] = cls(self, obj)
        else:
            controller.update(obj)

    async def _service_event(self, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self._services.pop((namespace, name), None)
            for key in [k for k in self._proxies if k[:2] == (namespace, name)]:
                proxy = self._proxies.pop(key)
                await proxy.close()
                self.runtime.release_proxy(proxy.key)
            return
        self._services[(namespace, name)] = obj
        spec = obj.get("spec") or {}
        for port in spec.get("ports") or []:
            key = (namespace, name, int(port["port"]))
            proxy = self._proxies.get(key)
            if proxy is None:
                proxy = self._proxies[key] = ServiceProxy(self, namespace, name, port)
                await proxy.start()
                self.event(
                    f"Service {namespace}/{name}:{port['port']} -> {proxy.address.host}:{proxy.address.port}"
                )
            proxy.port = port
            proxy.selector = spec.get("selector") or {}

    async def _pod_event(self, namespace: str, name: str, obj: dict[str, Any], deleted: bool) -> None:
        pod = self._pods.get((namespace, name))
        if pod is not None and not deleted and pod.scheduling_gates:
            await pod.ungate(obj.get("spec") or {})  # runs it once its last gate was removed
            return
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
            # A bare Pod someone else created: run it too (no controller will replace it), as
            # admission would have stored it (the emulator has no admission plugins).
            admitted = await self.admit(obj)
            if admitted["spec"] != obj["spec"]:
                path = api_path("v1", "pods", namespace, name)
                await self.api.request("PATCH", path, {"spec": admitted["spec"]}, missing_ok=True)
            pod = Pod(self, admitted, None)
            self.register(pod)
            self.event(f"bare pod {namespace}/{name} seen")
            await pod.start(create=False)
