"""The seam between the kubelet and what actually runs containers: the `Runtime` protocol.

Everything above this seam is shared by every backend: the Job and Deployment controllers,
the Service proxies, a pod's lifecycle (init containers, `restartPolicy`, back-off), probe
timing, the status written to the API server, and what the kubelet resolves from the API
before a container starts (env and envFrom, fieldRefs, `$(VAR)` expansion, volumes as host
directories). A backend runs what it is handed and reports how it went. Its shape is the
CRI's, the interface a real kubelet drives: a pod sandbox (the pod's network address and
whatever its containers share), containers started in it, exec for probes.

What a backend must do:

- `run_sandbox(pod, directory, dns_names)`: make the pod's sandbox before its first container. Its
  `ip` is the pod's `status.podIP` (and `fieldRef: status.podIP`). The process backend gives every
  pod 127.0.0.1 and a port map; a container engine gives each pod a network namespace and an
  address of its own, with the pod's hostname (`dns.pod_hostname`). `directory` is the pod's
  directory on the host (logs, emptyDirs). `dns_names` are the pod's own names in cluster DNS
  (`dns.pod_dns_names`: hostname + subdomain + a headless Service), which a backend that resolves
  names answers with the pod's address; the process backend has none to give.
- `start(sandbox, config, services)`: start one container as `config` says, and return its
  handle. `config.command` (empty: the image's ENTRYPOINT) and `config.args` are as the
  manifest wrote them after `$(VAR)` expansion; `config.env` holds the container's own
  variables (the image's ENV is the backend's to add); each `config.mounts` host directory
  is seen at its mountPath; `config.termination_log` is seen at
  `config.termination_message_path`; stdout and stderr are appended to `config.log`.
  `config.spec` is the whole container spec, for what a backend can honour beyond that
  (securityContext, resources). `services` maps every Service port that exists now to the
  address of its proxy: a backend that cannot resolve names rewrites them (the process
  backend); one that can points the Service's DNS names at the proxies. Raise `StartError`
  when the container cannot start (the pod reports a StartError, exit code 128), and
  `ConfigError` when the kubelet would refuse to create it yet (CreateContainerConfigError,
  retried: e.g. runAsNonRoot with an image that runs as root). A backend that has images
  gets the container's image as its `imagePullPolicy` says, as the kubelet does, and raises
  `ImagePullError` when it cannot: reason ErrImagePull (the pull failed: the pod shows it,
  then ImagePullBackOff, and the pull is retried after a back-off) or ErrImageNeverPull
  (policy Never and the image is absent: retried, as the kubelet retries each sync).
- `exec(handle, command, timeout)`: an exec probe's command, run in the container with its
  environment; its exit code, or `asyncio.TimeoutError` (the command killed) after `timeout`.
- `endpoint(sandbox, port)`: where the harness reaches a container port of the pod, for
  httpGet/tcpSocket probes and as a Service endpoint.
- `proxy_address(service)`: where the proxy of one Service port listens (port 0: any free one).
  It is called once for each Service port as it appears, so a backend with real name
  resolution also learns here of Services made after a pod started.
- `release_proxy(service)`: that Service port is gone (its proxy closed); a backend that
  resolves names stops answering for it.
- `remove_sandbox(sandbox)`: the pod is stopped (every container has ended) or deleted;
  release what `run_sandbox` made. Called at most once per sandbox.

A `ContainerHandle` is one run of a container (a restart is a new handle): `signal` reaches
every process the container started, and `wait` returns once the whole container is gone
(the runtime tears it down when its first process ends), with the exit code a runtime
reports: 128 + N for a process killed by signal N.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol


class Address(NamedTuple):
    """A host and port the harness can connect to (or a proxy listens on)."""

    host: str
    port: int


class ServiceKey(NamedTuple):
    """One port of a Service."""

    name: str
    namespace: str
    port: int


@dataclass(frozen=True)
class ContainerConfig:
    """One container, resolved by the kubelet and ready for a runtime to start."""

    name: str
    image: str
    command: list[str]  # after $(VAR) expansion; empty: the image's ENTRYPOINT
    args: list[str]  # after $(VAR) expansion
    env: dict[str, str]  # the container's own variables (env, envFrom), resolved
    working_dir: str  # as written; "": the image's
    mounts: dict[str, Path]  # mountPath -> host directory (subPath applied)
    ports: list[dict[str, Any]]  # the declared ports, as in the spec
    termination_message_path: str  # where the container writes its termination message
    termination_log: Path  # the host file the kubelet reads that message from
    log: Path  # the host file its stdout and stderr are appended to
    spec: dict[str, Any]  # the whole container spec


class PodSandbox(Protocol):
    """What the kubelet reads of a pod's sandbox; each backend keeps its own state beside it."""

    ip: str  # status.podIP
    host_ip: str  # status.hostIP


class ContainerHandle(Protocol):
    """One run of one container."""

    argv: list[str]  # the command line as the runtime ran it (for events and tests)

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None:
        """The host pid of its first process while it runs, else None."""
        ...

    async def signal(self, sig: int) -> None:
        """Send `sig` to every process of the container (SIGSTOP freezes it, SIGKILL kills it)."""
        ...

    async def wait(self) -> int:
        """Its exit code once every process of it has ended (128 + N when killed by signal N)."""
        ...


class Runtime(Protocol):
    """Runs a pod's containers (see the module docstring for the contract)."""

    async def run_sandbox(
        self, pod: Mapping[str, Any], directory: Path, dns_names: Sequence[str] = ()
    ) -> PodSandbox: ...

    async def start(
        self, sandbox: PodSandbox, config: ContainerConfig, services: Mapping[ServiceKey, Address]
    ) -> ContainerHandle: ...

    async def exec(self, handle: ContainerHandle, command: list[str], timeout: float) -> int: ...

    def endpoint(self, sandbox: PodSandbox, port: int) -> Address: ...

    def proxy_address(self, service: ServiceKey) -> Address: ...

    def release_proxy(self, service: ServiceKey) -> None: ...

    async def remove_sandbox(self, sandbox: PodSandbox) -> None: ...


class StartError(Exception):
    """The runtime could not start a container: the pod spec names something that cannot run."""

    def __init__(self, message: str, argv: list[str]):
        super().__init__(message)
        self.argv = argv


class ImagePullError(Exception):
    """The runtime could not get the container's image: `reason` is the kubelet's waiting reason
    (ErrImagePull: the pull failed; ErrImageNeverPull: policy Never and the image is absent), the
    message what the kubelet shows with it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
