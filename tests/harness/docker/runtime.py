"""`DockerRuntime`: the `Runtime` that runs each pod as containers of a Docker engine
(the list of what it honours is in `tests/harness/docker/__init__.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.dns import pod_hostname
from tests.harness.docker import args as translate
from tests.harness.docker.engine import Docker, DockerError, labels_filter
from tests.harness.docker.services import ServiceAddresses, dns_search
from tests.harness.errors import ConfigError, HarnessError
from tests.harness.runtime import Address, ContainerConfig, ImagePullError, ServiceKey, StartError

LABEL = "distillery.test.harness"  # every container, volume and network: the runtime's id
OWNER_LABEL = "distillery.test.owner"  # "<host>:<pid>" of the test process, for sweeping leftovers
POD_LABEL = "distillery.test.pod"  # "<namespace>/<pod>" on a pod's containers and volumes
PAUSE_USER = "65535:65535"  # the user Kubernetes' pause container runs as
STOP_WAIT_SECONDS = 10.0  # a process SIGSTOPped is stopped within this, however loaded the machine
PULL_TIMEOUT_SECONDS = 1800.0  # a cold pull of the 4.4 GB worker image


@dataclass
class DockerSandbox:
    """A pod's sandbox: a container that holds its network namespace (address, hostname, DNS)."""

    name: str
    namespace: str
    directory: Path
    container: str
    ip: str
    host_ip: str
    pod_spec: dict[str, Any]
    volumes: dict[str, dict[str, Any]]
    memory_volumes: dict[str, str]  # emptyDir (medium Memory) name -> engine tmpfs volume
    runs: dict[str, int] = field(default_factory=dict)  # container name -> runs so far
    containers: dict[str, str] = field(default_factory=dict)  # container name -> its latest engine id


@dataclass
class ContainerRecord:
    """What ran, for a test to print and check: the pod, the image, the user it was started as, the
    ids its first process really had (read from /proc; None when it had already ended), and whether
    the engine made its root filesystem read-only."""

    pod: str
    container: str
    image: str
    id: str
    user: str  # `--user` as given, else the image's USER ("" is root)
    uid: int | None
    gid: int | None
    groups: list[int]
    read_only_root: bool

    def describe(self) -> str:
        """One line: `ns/pod/container: image I, user U (uid .. gid .. groups ..), read-only root`."""
        ids = (
            f"uid {self.uid} gid {self.gid} groups {self.groups}"
            if self.uid is not None
            else "ended before it was read"
        )
        root = "read-only root" if self.read_only_root else "writable root"
        return f"{self.pod}/{self.container}: image {self.image}, user {self.user or 'root'} ({ids}), {root}"


async def container_pids(docker: Docker, container: str) -> list[int]:
    """The host pids of every process of a running container (`docker top`)."""
    out = await docker.run("top", container, "-eo", "pid")
    return [int(line) for line in out.split()[1:] if line.isdigit()]


async def signal_every_process(docker: Docker, container: str, sig: int) -> None:
    """Send `sig` to each process of the container from the host (we share the engine's pid namespace).
    A SIGSTOP returns once each is stopped, as `docker pause` does (a signal is delivered when its
    process next runs)."""
    pids = await container_pids(docker, container)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if sig != signal.SIGSTOP:
        return
    deadline = asyncio.get_running_loop().time() + STOP_WAIT_SECONDS
    while any(process_state(pid) not in ("T", None) for pid in pids):
        if asyncio.get_running_loop().time() > deadline:
            raise HarnessError(
                f"container {container}: processes {pids} not stopped {STOP_WAIT_SECONDS} s after SIGSTOP"
            )
        await asyncio.sleep(0.02)


def process_state(pid: int) -> str | None:
    """The state letter of a process (field 3 of /proc/PID/stat: T stopped), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class DockerContainer:
    """One run of a container: its engine id, the `docker create` line, its exit code once it ends."""

    def __init__(self, docker: Docker, container: str, argv: list[str], pid: int | None, logs: Any):
        self.docker = docker
        self.id = container
        self.argv = argv
        self._pid = pid
        self._logs = logs
        self.stopped_by_signal = False  # frozen by SIGSTOP rather than the cgroup freezer
        self._exit: asyncio.Task[int] = asyncio.get_running_loop().create_task(self._wait())

    @property
    def running(self) -> bool:
        return not self._exit.done()

    @property
    def pid(self) -> int | None:
        return self._pid if self.running else None

    async def signal(self, sig: int) -> None:
        """SIGSTOP/SIGCONT freeze and thaw every process (`freeze`); other signals go to its first
        process, as a runtime sends them (a SIGKILL ends them all: the pid namespace goes)."""
        if not self.running:
            return
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            await self.freeze(sig == signal.SIGSTOP)
            return
        command = ["kill", "--signal", translate.signal_name(sig), self.id]
        code, _, err = await self.docker.call(command)
        if code != 0 and self.running and "is not running" not in err:
            raise HarnessError(f"docker {' '.join(command)}: {err.strip()}")

    async def freeze(self, frozen: bool) -> None:
        """Freeze (or thaw) every process: the cgroup freezer (`docker pause`) where the engine can
        freeze; where it cannot (a nested engine without a freezer, as on CI: "unable to freeze"),
        SIGSTOP (SIGCONT) to each of the container's processes from the host."""
        if not self.stopped_by_signal:
            command = ["pause" if frozen else "unpause", self.id]
            code, _, err = await self.docker.call(command)
            if code == 0 or not self.running or "is not running" in err:
                return
            if not frozen:
                raise HarnessError(f"docker {' '.join(command)}: {err.strip()}")
        await signal_every_process(self.docker, self.id, signal.SIGSTOP if frozen else signal.SIGCONT)
        self.stopped_by_signal = frozen

    async def wait(self) -> int:
        code = await asyncio.shield(self._exit)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._logs.wait(), 10)  # the log's tail is in the file
        return code

    async def _wait(self) -> int:
        while True:
            code, out, err = await self.docker.call(["wait", self.id], timeout=10**7)
            if code == 0:
                return int(out.strip())
            if "No such container" in err:
                return 137  # removed under us (the pod was torn down)
            await asyncio.sleep(1)


class DockerRuntime:
    """Runs pods as Docker containers: a sandbox per pod on a network of the runtime's own.

    Use as a context manager around the `Kubelet` (it makes and removes the network):

        with DockerRuntime(utility_image="distillery-operator:dev") as runtime:
            with Kubelet(url, tmp_path, runtime=runtime, api_access=...):
                ...

    `utility_image`: an image with python3 and coreutils, for the Service forwarders and (when
    `pause_image` is not given) the pods' sandboxes, as a node has its pause image: present in
    the engine, never pulled; `host`: DOCKER_HOST (default: the environment's).

    A container's own image is got as its `imagePullPolicy` says (`args.pull_decision`), one pull
    at a time (the kubelet's serialized pulls), with `docker pull`; `pulls` lists each image
    pulled, in order.
    """

    def __init__(self, *, utility_image: str, pause_image: str | None = None, host: str | None = None):
        self.docker = Docker(host)
        self.utility_image = utility_image
        self.pause_image = pause_image or utility_image
        self.id = uuid.uuid4().hex[:8]
        self.prefix = f"dh-{self.id}"
        self.network = self.prefix
        self.labels = {LABEL: self.id, OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"}
        self.gateway = ""
        self.records: list[ContainerRecord] = []
        self.pulls: list[str] = []  # each image `docker pull`ed for a container, in order
        self._pull_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )  # one per kubelet loop: a session's runtime outlives each cluster's loop
        self.services: ServiceAddresses | None = None
        self._image_users: dict[str, str] = {}
        self._fs_groups: set[tuple[str, int]] = set()

    # ------------------------------------------------------------ set-up and tear-down (test thread)

    def __enter__(self) -> DockerRuntime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        sweep_leftovers(self.docker)
        label_args = [f"--label={k}={v}" for k, v in self.labels.items()]
        self.docker.run_sync("network", "create", *label_args, self.network)
        self.gateway = self.docker.run_sync(
            "network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", self.network
        ).strip()
        self.services = ServiceAddresses(
            self.docker,
            network=self.network,
            gateway=self.gateway,
            image=lambda: self.utility_image,
            labels=self.labels,
            prefix=self.prefix,
        )

    def close(self) -> None:
        remove_labelled(self.docker, {LABEL: self.id})

    # ------------------------------------------------------------ the Runtime protocol

    async def run_sandbox(
        self, pod: Mapping[str, Any], directory: Path, dns_names: Sequence[str] = ()
    ) -> DockerSandbox:
        meta, spec = pod["metadata"], pod["spec"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            raise HarnessError(f"pod {namespace}/{name}: host namespaces are not emulated")
        directory.mkdir(parents=True, exist_ok=True)
        labels = {**self.labels, POD_LABEL: f"{namespace}/{name}"}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        memory_volumes = {}
        for volume_name, volume in volumes.items():
            empty = volume.get("emptyDir")
            if empty is not None and empty.get("medium") == "Memory":
                memory_volumes[volume_name] = await self._tmpfs_volume(
                    namespace, name, volume_name, empty, labels
                )
        container = f"{self.prefix}-{namespace}-{name}"
        args = [
            "run",
            "--detach",
            "--name",
            container,
            "--pull",
            "never",
            "--network",
            self.network,
            "--hostname",
            pod_hostname(pod),
        ]
        for alias in dns_names:  # the pod's own names (hostname.subdomain): Docker's DNS answers them
            args += ["--network-alias", alias]
        for domain in dns_search(namespace):
            args += ["--dns-search", domain]
        args += ["--dns-option", "ndots:5"]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        args += [
            "--user",
            PAUSE_USER,
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "32m",
            "--entrypoint",
            "sleep",
            self.pause_image,
            "infinity",
        ]
        await self.docker.run(*args)
        ip = await self._ip(container)
        return DockerSandbox(
            name, namespace, directory, container, ip, self.gateway, dict(spec), volumes, memory_volumes
        )

    async def start(
        self, sandbox: Any, config: ContainerConfig, services: Mapping[ServiceKey, Address]
    ) -> DockerContainer:
        assert self.services is not None
        await self.services.settle()  # the Service names this container may look up answer
        await self._get_image(config.image, translate.pull_policy(config.spec))
        image_user = await self._image_user(config.image)
        security = translate.security_context(sandbox.pod_spec, config.spec)
        problem = translate.non_root_problem(security, image_user, sandbox.name, config.name)
        if problem:
            raise ConfigError(problem)  # the kubelet's CreateContainerConfigError
        await self._prepare_volumes(sandbox, config)
        run = sandbox.runs[config.name] = sandbox.runs.get(config.name, 0) + 1
        name = f"{sandbox.container}-{config.name}-{run}"
        labels = {**self.labels, POD_LABEL: f"{sandbox.namespace}/{sandbox.name}"}
        args = translate.create_args(
            name=name,
            config=config,
            pod_spec=sandbox.pod_spec,
            sandbox=sandbox.container,
            labels=labels,
            mounts=translate.mounts(config, sandbox.volumes, sandbox.memory_volumes),
            env=config.env,
            image_user=image_user,
        )
        argv = self.docker.argv(args)
        (sandbox.directory / f"{config.name}.command.json").write_text(json.dumps({"argv": argv}, indent=2))
        previous = sandbox.containers.get(config.name)
        if previous is not None:  # the kubelet keeps one dead container; here its log file is enough
            await self.docker.call(["rm", "--force", previous])
        code, out, err = await self.docker.call(args)
        if code != 0:
            raise StartError(err.strip() or f"docker create exited {code}", argv)
        container = out.strip()
        sandbox.containers[config.name] = container
        code, _, err = await self.docker.call(["start", container])
        if code != 0:
            raise StartError(err.strip(), argv)
        logs = await self.docker.follow_logs(container, config.log)
        pid, read_only = await self._inspect(container)
        user = args[args.index("--user") + 1] if "--user" in args else image_user
        self.records.append(_record(sandbox, config, container, user, pid, read_only))
        return DockerContainer(self.docker, container, argv, pid, logs)

    async def exec(self, handle: Any, command: list[str], timeout: float) -> int:
        code, _, _ = await self.docker.call(["exec", handle.id, *command], timeout=timeout)
        return code

    def endpoint(self, sandbox: Any, port: int) -> Address:
        return Address(sandbox.ip, port)

    def proxy_address(self, service: ServiceKey) -> Address:
        assert self.services is not None
        return self.services.proxy_address(service)

    def release_proxy(self, service: ServiceKey) -> None:
        assert self.services is not None
        self.services.release(service)

    async def remove_sandbox(self, sandbox: Any) -> None:
        pod = {POD_LABEL: f"{sandbox.namespace}/{sandbox.name}", LABEL: self.id}
        ids = (await self.docker.run("ps", "--all", "--quiet", *labels_filter(pod))).split()
        if ids:
            await self.docker.run("rm", "--force", "--volumes", *ids)
        for volume in sandbox.memory_volumes.values():
            await self.docker.call(["volume", "rm", "--force", volume])

    # ------------------------------------------------------------ helpers

    async def _ip(self, container: str) -> str:
        template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return (await self.docker.run("inspect", "--format", template, container)).strip()

    async def _inspect(self, container: str) -> tuple[int | None, bool]:
        """The container's first process (None once it has ended) and whether its root is read-only."""
        out = await self.docker.run(
            "inspect", "--format", "{{.State.Pid}} {{.HostConfig.ReadonlyRootfs}}", container
        )
        pid, read_only = out.split()
        return int(pid) or None, read_only == "true"

    async def _get_image(self, image: str, policy: str) -> None:
        """Pull the image when the policy says so (ImagePullError when the pull fails, or when the
        policy is Never and the engine lacks it)."""
        loop = asyncio.get_running_loop()
        lock = self._pull_locks.setdefault(loop, asyncio.Lock())
        async with lock:  # a second container of the same image waits, then finds it present
            present, _, _ = await self.docker.call(["image", "inspect", "--format", "{{.Id}}", image])
            decision = translate.pull_decision(policy, present == 0)
            if decision == translate.NEVER_PULL:
                raise ImagePullError("ErrImageNeverPull", translate.never_pull_message(image))
            if decision != translate.PULL:
                return
            code, _, err = await self.docker.call(["pull", "--quiet", image], timeout=PULL_TIMEOUT_SECONDS)
            if code != 0:
                raise ImagePullError("ErrImagePull", translate.pull_error_message(image, err))
            self.pulls.append(image)
            self._image_users.pop(image, None)  # a pull may have changed what the name points at

    async def _image_user(self, image: str) -> str:
        if image not in self._image_users:
            code, out, err = await self.docker.call(
                ["image", "inspect", "--format", "{{.Config.User}}", image]
            )
            if code != 0:
                # `_get_image` made it present: it went away since (removed by someone else).
                raise StartError(f"image {image!r} is not present in the engine: {err.strip()}", [])
            self._image_users[image] = out.strip()
        return self._image_users[image]

    async def _tmpfs_volume(
        self, namespace: str, pod: str, volume: str, empty: Mapping[str, Any], labels: Mapping[str, str]
    ) -> str:
        """An emptyDir in memory: an engine tmpfs volume (sizeLimit, else tmpfs's default of half the RAM)."""
        name = f"{self.prefix}-{namespace}-{pod}-{volume}"
        options = "mode=0777" + (
            f",size={int(translate.quantity(empty['sizeLimit']))}" if empty.get("sizeLimit") else ""
        )
        label_args = [f"--label={k}={v}" for k, v in labels.items()]
        await self.docker.run(
            "volume",
            "create",
            *label_args,
            "--driver",
            "local",
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
            "--opt",
            f"o={options}",
            name,
        )
        return name

    async def _prepare_volumes(self, sandbox: DockerSandbox, config: ContainerConfig) -> None:
        """What the kubelet does to volumes before a container starts: the termination-message file
        (0666), emptyDirs world-writable, fsGroup ownership of claims and emptyDirs."""
        config.termination_log.parent.mkdir(parents=True, exist_ok=True)
        config.termination_log.touch()
        config.termination_log.chmod(0o666)
        fs_group = (sandbox.pod_spec.get("securityContext") or {}).get("fsGroup")
        for item in config.spec.get("volumeMounts") or []:
            volume = sandbox.volumes.get(item["name"]) or {}
            host = config.mounts.get(item["mountPath"])
            if host is None or item["name"] in sandbox.memory_volumes:
                continue
            if "emptyDir" in volume:
                host.chmod(0o777)
            if fs_group is not None and ("emptyDir" in volume or "persistentVolumeClaim" in volume):
                await self._fs_group(host, int(fs_group))

    async def _fs_group(self, path: Path, gid: int) -> None:
        """The volume group-owned by fsGroup, group-writable, setgid directories (the kubelet's
        SetVolumeOwnership), once per directory: as root here, else through a container."""
        key = (str(path), gid)
        if key in self._fs_groups:
            return
        self._fs_groups.add(key)
        if os.geteuid() == 0:
            await asyncio.get_running_loop().run_in_executor(None, set_volume_ownership, path, gid)
            return
        script = f"chgrp -R {gid} /v && chmod -R g+rwX /v && find /v -type d -exec chmod g+s {{}} +"
        await self.docker.run(
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "--user",
            "0:0",
            "--mount",
            f"type=bind,source={path},target=/v",
            "--entrypoint",
            "sh",
            self.utility_image,
            "-c",
            script,
        )


def set_volume_ownership(path: Path, gid: int) -> None:
    """chgrp -R gid, g+rw (g+x where the owner has x), g+s on directories; symlinks left alone."""
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            target = Path(root) / name
            if target.is_symlink():
                continue
            info = target.stat()
            os.chown(target, -1, gid)
            mode = info.st_mode | 0o060 | (0o010 if info.st_mode & 0o100 else 0)
            if target.is_dir():
                mode |= 0o2070
            os.chmod(target, mode & 0o7777)


def _record(
    sandbox: DockerSandbox,
    config: ContainerConfig,
    container: str,
    user: str,
    pid: int | None,
    read_only: bool,
) -> ContainerRecord:
    """The user a container's first process really runs as, read from /proc on the host."""
    uid = gid = None
    groups: list[int] = []
    with contextlib.suppress(OSError, ValueError, TypeError):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in status if ":" in line}
        uid, gid = int(fields["Uid"][1]), int(fields["Gid"][1])  # effective ids
        groups = [int(g) for g in fields.get("Groups", [])]
    return ContainerRecord(
        f"{sandbox.namespace}/{sandbox.name}",
        config.name,
        config.image,
        container,
        user,
        uid,
        gid,
        groups,
        read_only,
    )


def remove_labelled(docker: Docker, labels: Mapping[str, str]) -> None:
    """Remove the containers, volumes and networks that carry these labels (and nothing else)."""
    selector = labels_filter(labels)
    ids = docker.run_sync("ps", "--all", "--quiet", *selector).split()
    if ids:
        docker.run_sync("rm", "--force", "--volumes", *ids, check=False)
    volumes = docker.run_sync("volume", "ls", "--quiet", *selector).split()
    if volumes:
        docker.run_sync("volume", "rm", "--force", *volumes, check=False)
    networks = docker.run_sync("network", "ls", "--quiet", *selector).split()
    if networks:
        docker.run_sync("network", "rm", *networks, check=False)


def sweep_leftovers(docker: Docker) -> None:
    """Remove what runtimes of dead test processes on this host left behind (a killed pytest)."""
    host = socket.gethostname()
    owners = set()
    for kind in (["ps", "--all"], ["network", "ls"], ["volume", "ls"]):
        out = docker.run_sync(
            *kind, "--filter", f"label={LABEL}", "--format", f'{{{{.Label "{OWNER_LABEL}"}}}}'
        )
        owners.update(line.strip() for line in out.splitlines() if line.strip())
    for owner in owners:
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(DockerError):
                remove_labelled(docker, {OWNER_LABEL: owner})
