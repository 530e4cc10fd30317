"""A pod's container as `docker create` arguments: the kubelet's translation for a container
engine, as pure functions (tests/unit/harness/test_docker_args.py checks them without an engine).

- `securityContext` (the container's over the pod's): runAsUser/runAsGroup -> `--user`,
  fsGroup and supplementalGroups -> `--group-add`, readOnlyRootFilesystem -> `--read-only`,
  capabilities -> `--cap-drop`/`--cap-add`, allowPrivilegeEscalation false ->
  `no-new-privileges`, privileged -> `--privileged`, seccompProfile Unconfined -> `seccomp=unconfined`
  (RuntimeDefault is the engine's default). runAsNonRoot is checked against the user the
  container would run as (`non_root_problem`), as the kubelet does before it starts one.
- `resources`: limits.cpu -> `--cpus`, limits.memory -> `--memory` (swap off, as on a node),
  requests.cpu -> `--cpu-shares` (the kubelet's milliCPU * 1024 / 1000). Other resources
  (GPUs, ephemeral-storage) are not the engine's here and are left out.
- `command`/`args` exactly as written: command[0] -> `--entrypoint`, the rest and args after
  the image; args alone replace the image's CMD only.
- mounts (`Mount`): bind mounts of the kubelet's host directories, read-only where the
  manifest or the volume type says; a memory-backed emptyDir is an engine tmpfs volume.
- `imagePullPolicy` (`pull_policy`, with the API server's default when absent) and the
  kubelet's decision whether to pull (`pull_decision`); `docker create` itself never pulls.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.harness.errors import HarnessError
from tests.harness.runtime import ContainerConfig

# Kubelet: cpu.shares = milliCPU * 1024 / 1000, at least 2 (MinShares).
SHARES_PER_CPU, MIN_SHARES = 1024, 2
# Volume types the kubelet always mounts read-only.
READ_ONLY_VOLUMES = ("configMap", "secret", "projected", "downwardAPI")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]i?|)$")


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1.5", "512Mi", "1e3", "2G") as a number."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise HarnessError(f"resource quantity {value!r} is not one the API server accepts")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in "eE" and suffix:
        return number * Decimal(10) ** int(suffix[1:])
    if suffix not in _DECIMAL:
        raise HarnessError(f"resource quantity {value!r} has an unknown suffix {suffix!r}")
    return number * _DECIMAL[suffix]


def security_context(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective security context: the container's fields over the pod's (for the fields both have)."""
    pod = pod_spec.get("securityContext") or {}
    shared = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions", "windowsOptions")
    return {**{k: pod[k] for k in shared if k in pod}, **(container.get("securityContext") or {})}


def non_root_problem(security: Mapping[str, Any], image_user: str, pod: str, container: str) -> str | None:
    """The kubelet's runAsNonRoot check (its CreateContainerConfigError message), or None when it passes.

    `image_user` is the image's USER ("" means root): "uid", "uid:gid", or a name.
    """
    if not security.get("runAsNonRoot"):
        return None
    where = f'(pod: "{pod}", container: {container})'
    if security.get("runAsUser") is not None:
        if int(security["runAsUser"]) == 0:
            return f"container's runAsUser breaks non-root policy {where}"
        return None
    user = image_user.split(":", 1)[0]
    if not user.isdigit() and user:
        return f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root {where}"
    if not user or int(user) == 0:
        return f"container has runAsNonRoot and image will run as root {where}"
    return None


def user_args(security: Mapping[str, Any], pod_spec: Mapping[str, Any], image_user: str = "") -> list[str]:
    """`--user` and `--group-add`: runAsUser (else the image's user) with runAsGroup, fsGroup and
    supplementalGroups."""
    args: list[str] = []
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if uid is None and gid is not None:
        uid = image_user.split(":", 1)[0] or "0"  # the image's user, in the group the pod names
    if uid is not None:
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    pod = pod_spec.get("securityContext") or {}
    groups = [pod["fsGroup"]] if pod.get("fsGroup") is not None else []
    groups += list(pod.get("supplementalGroups") or [])
    for group in dict.fromkeys(groups):
        args += ["--group-add", str(group)]
    return args


def security_args(security: Mapping[str, Any]) -> list[str]:
    """Read-only root, capabilities, no-new-privileges, privileged, seccomp."""
    args: list[str] = []
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    capabilities = security.get("capabilities") or {}
    for name in capabilities.get("drop") or []:
        args += ["--cap-drop", name]
    for name in capabilities.get("add") or []:
        args += ["--cap-add", name]
    if security.get("privileged"):
        args.append("--privileged")
    # The kubelet's default is no_new_privs unless privileged or given CAP_SYS_ADMIN; Kubernetes
    # only sets it when asked (allowPrivilegeEscalation: false), as here.
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = (security.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp == "Localhost":
        raise HarnessError("seccompProfile Localhost is not emulated")
    return args


def resource_args(resources: Mapping[str, Any]) -> list[str]:
    """CPU and memory limits (and the CPU request as shares), as the kubelet sets the cgroup."""
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    args: list[str] = []
    if "cpu" in limits:
        args += ["--cpus", _plain(quantity(limits["cpu"]))]
    if "memory" in limits:
        memory = str(int(quantity(limits["memory"])))
        args += ["--memory", memory, "--memory-swap", memory]
    cpu_request = requests.get("cpu", limits.get("cpu"))
    if cpu_request is not None:
        shares = max(int(quantity(cpu_request) * 1000) * SHARES_PER_CPU // 1000, MIN_SHARES)
        args += ["--cpu-shares", str(shares)]
    return args


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Mount:
    """One `--mount`: a host path (bind) or an engine volume at `target`."""

    type: str  # "bind" | "volume"
    source: str
    target: str
    readonly: bool = False

    def arg(self) -> str:
        if "," in self.source + self.target:
            raise HarnessError(f"mount {self.source} -> {self.target}: a comma cannot pass through --mount")
        parts = [f"type={self.type}", f"source={self.source}", f"target={self.target}"]
        if self.readonly:
            parts.append("readonly")
        if self.type == "volume":
            parts.append("volume-nocopy")  # an emptyDir starts empty, whatever the image has there
        return ",".join(parts)


def mounts(
    config: ContainerConfig, volumes: Mapping[str, Mapping[str, Any]], memory_volume: Mapping[str, str]
) -> list[Mount]:
    """The container's mounts: each volumeMount (the kubelet's host directory, or the engine
    volume of a memory-backed emptyDir from `memory_volume`), then its termination-message file."""
    out: list[Mount] = []
    for item in config.spec.get("volumeMounts") or []:
        volume = volumes.get(item["name"]) or {}
        readonly = bool(item.get("readOnly")) or any(kind in volume for kind in READ_ONLY_VOLUMES)
        if item["name"] in memory_volume:
            if item.get("subPath"):
                raise HarnessError(f"volume {item['name']}: subPath of a memory emptyDir is not emulated")
            out.append(Mount("volume", memory_volume[item["name"]], item["mountPath"], readonly))
        else:
            out.append(Mount("bind", str(config.mounts[item["mountPath"]]), item["mountPath"], readonly))
    out.append(Mount("bind", str(config.termination_log), config.termination_message_path))
    return out


def command_args(config: ContainerConfig) -> tuple[list[str], list[str]]:
    """(options before the image, words after it): command replaces ENTRYPOINT (and CMD), args replace CMD."""
    if config.command:
        return ["--entrypoint", config.command[0]], [*config.command[1:], *config.args]
    return [], list(config.args)


def create_args(
    *,
    name: str,
    config: ContainerConfig,
    pod_spec: Mapping[str, Any],
    sandbox: str,
    labels: Mapping[str, str],
    mounts: list[Mount],
    env: Mapping[str, str],
    image_user: str = "",
) -> list[str]:
    """`docker create` arguments (after `docker`) for one container of a pod, joined to its sandbox."""
    security = security_context(pod_spec, config.spec)
    entrypoint, tail = command_args(config)
    args = ["create", "--name", name, "--pull", "never", "--network", f"container:{sandbox}"]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    args += user_args(security, pod_spec, image_user) + security_args(security)
    args += resource_args(config.spec.get("resources") or {})
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for mount in mounts:
        args += ["--mount", mount.arg()]
    if config.working_dir:
        args += ["--workdir", config.working_dir]
    return [*args, *entrypoint, config.image, *tail]


PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PULL, PRESENT, NEVER_PULL = "pull", "present", "ErrImageNeverPull"  # what `pull_decision` says


def pull_policy(container: Mapping[str, Any]) -> str:
    """The container's imagePullPolicy; absent, the API server's default: Always for an image
    tagged `latest` or not tagged at all, IfNotPresent for any other tag or a digest."""
    policy = container.get("imagePullPolicy")
    if policy:
        if policy not in PULL_POLICIES:
            raise HarnessError(f"imagePullPolicy {policy!r} is not one the API server accepts")
        return str(policy)
    image = str(container.get("image", ""))
    if "@" in image:
        return "IfNotPresent"
    tag = image.rsplit("/", 1)[-1].partition(":")[2]  # a registry's port is not a tag
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def pull_decision(policy: str, present: bool) -> str:
    """The kubelet's decision before a container starts: PULL (Always: every start; IfNotPresent:
    only when the engine lacks the image), PRESENT (use the engine's copy), or NEVER_PULL (policy
    Never and the image absent: the container waits in ErrImageNeverPull)."""
    if policy == "Always" or (policy == "IfNotPresent" and not present):
        return PULL
    if policy == "Never" and not present:
        return NEVER_PULL
    return PRESENT


def never_pull_message(image: str) -> str:
    """The kubelet's ErrImageNeverPull message."""
    return f'Container image "{image}" is not present with pull policy of Never'


def pull_error_message(image: str, stderr: str) -> str:
    """ErrImagePull's message: the image and what the engine said about the failed pull."""
    said = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())
    return f'failed to pull image "{image}": {said or "docker pull failed"}'


def signal_name(sig: int) -> str:
    """The name `docker kill --signal` takes."""
    return signal.Signals(sig).name
