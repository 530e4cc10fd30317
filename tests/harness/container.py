"""One container of a pod: the state the kubelet reports for it, and one run of it in the
runtime (config resolved, started, probed, its exit and termination message recorded).

Termination messages come from the file at `terminationMessagePath` (`FallbackToLogsOnError`:
the log's tail when that is empty and the container failed), cut to 4 KiB as the kubelet does.

An image the runtime cannot get (`ImagePullError`) shows as the kubelet shows it: waiting in
ErrImagePull with the pull's error for a sync, then ImagePullBackOff (`Back-off pulling image
"IMAGE": ErrImagePull: ...`) for a back-off that doubles from the kubelet's `retry_delay`
(capped), then the pull again; ErrImageNeverPull (policy Never, image absent) is shown and
retried each sync, with no back-off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.errors import ConfigError
from tests.harness.helpers import log_tail, now_rfc3339
from tests.harness.podconfig import container_config
from tests.harness.probes import run_probes
from tests.harness.runtime import ContainerConfig, ContainerHandle, ImagePullError, StartError

if TYPE_CHECKING:
    from tests.harness.pod import Pod

TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
CONFIG_RETRY_SECONDS = 1.0  # how often a CreateContainerConfigError is retried
IMAGE_PULL_SYNC_SECONDS = 1.0  # ErrImagePull shows this long before ImagePullBackOff (the next sync)
IMAGE_BACKOFF_MAX_SECONDS = 10.0  # the pull back-off's cap (the kubelet's: 300 s)


@dataclass
class Container:
    """One container of a Pod: its spec, its current run and the state the kubelet reports."""

    spec: dict[str, Any]
    log: Path
    termination_log: Path
    handle: ContainerHandle | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running

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


async def run_container(pod: Pod, container: Container, init: bool) -> int:
    """Start the container once, probe it (not init containers), wait for its exit code."""
    pull_failures = 0
    while True:
        config = await _config(pod, container)
        if config is None:
            return 137
        container.termination_log.unlink(missing_ok=True)
        offset = container.log.stat().st_size if container.log.exists() else 0
        started_at = now_rfc3339()
        assert pod.sandbox is not None
        try:
            handle = await pod.kubelet.runtime.start(pod.sandbox, config, pod.kubelet.service_addresses())
            break
        except StartError as error:
            _start_failed(pod, container, error, started_at)
            return 128
        except ConfigError as error:  # the runtime refuses it for now (e.g. runAsNonRoot): retried
            _config_error(pod, container, error)
            await asyncio.sleep(CONFIG_RETRY_SECONDS)
        except ImagePullError as error:
            if error.reason == "ErrImagePull":  # each failed pull doubles the back-off
                pull_failures += 1
            await _image_pull_failed(pod, container, error, pull_failures)
            if pod.stopping:
                return 137
    container.handle, container.argv = handle, list(handle.argv)
    pod.kubelet.event(
        f"pod {pod.name}/{container.name} started pid {handle.pid}: {' '.join(handle.argv)[:300]}"
    )
    container.state = {"running": {"startedAt": started_at}}
    container.ready = False
    container.started = container.spec.get("startupProbe") is None
    pod.changed()
    probes = None if init else pod.kubelet.spawn(run_probes(pod, container), f"probes of {pod.name}")
    code = await handle.wait()
    if probes is not None:
        probes.cancel()
    _exited(pod, container, code, offset, started_at)
    return code


async def _config(pod: Pod, container: Container) -> ContainerConfig | None:
    """The container's config, retried while a Secret or ConfigMap is missing; None when stopping."""
    while not pod.stopping:
        try:
            return await container_config(pod.kubelet.api, pod, container, pod.kubelet.claim_dir)
        except ConfigError as error:
            _config_error(pod, container, error)
            await asyncio.sleep(CONFIG_RETRY_SECONDS)
    return None


def _config_error(pod: Pod, container: Container, error: ConfigError) -> None:
    if container.state.get("waiting", {}).get("message") != str(error):
        pod.kubelet.event(f"pod {pod.name}/{container.name}: CreateContainerConfigError: {error}")
    container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
    pod.changed()


async def _image_pull_failed(pod: Pod, container: Container, error: ImagePullError, failures: int) -> None:
    """Show the failed pull as the kubelet does and wait until the next try (see the module docstring)."""
    image = container.spec.get("image", "")
    _waiting(pod, container, error.reason, str(error))
    if error.reason != "ErrImagePull":
        await _pause(pod, CONFIG_RETRY_SECONDS)
        return
    await _pause(pod, IMAGE_PULL_SYNC_SECONDS)
    delay = min(pod.kubelet.retry_delay * 2 ** (failures - 1), IMAGE_BACKOFF_MAX_SECONDS)
    _waiting(pod, container, "ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}')
    await _pause(pod, delay)


def _waiting(pod: Pod, container: Container, reason: str, message: str) -> None:
    if container.state.get("waiting", {}).get("reason") != reason:
        pod.kubelet.event(f"pod {pod.name}/{container.name}: {reason}: {message}")
    container.state = {"waiting": {"reason": reason, "message": message}}
    pod.changed()


async def _pause(pod: Pod, seconds: float) -> None:
    """Sleep `seconds`, or less once the pod is stopping."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not pod.stopping and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(min(0.1, seconds))


def _start_failed(pod: Pod, container: Container, error: StartError, started_at: str) -> None:
    """The runtime's StartError: the pod spec names something that cannot run."""
    container.argv = list(error.argv)
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
    pod.kubelet.event(f"pod {pod.name}/{container.name}: cannot start: {error}")
    pod.changed()


def _exited(pod: Pod, container: Container, code: int, log_offset: int, started_at: str) -> None:
    """Record a run's end: exit code, termination message (or the log's tail), state."""
    container.exit_codes.append(code)
    container.ready = False
    message = ""
    if container.termination_log.exists():
        message = container.termination_log.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    if (
        not message
        and code != 0
        and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
    ):
        message = log_tail(container.log, log_offset)
    container.state = {
        "terminated": {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
        }
    }
    pod.kubelet.event(f"pod {pod.name}/{container.name} exited {code}")
    pod.changed()
