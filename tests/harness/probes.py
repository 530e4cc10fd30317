"""A container's startup, readiness and liveness probes (httpGet, tcpSocket, exec), whatever the runtime.

Timing: probes run at the manifest's periods once a container is ready; before that,
startup and readiness probes are tried every second, with the manifest's failure budget
(`periodSeconds * failureThreshold`) kept in seconds, so a test notices readiness quickly
but a probe that would fail in a cluster still fails here. HTTP and TCP probes connect to
the address the runtime gives for the port (`Runtime.endpoint`); exec probes run through
the runtime (`Runtime.exec`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.harness.errors import HarnessError

if TYPE_CHECKING:
    from tests.harness.container import Container
    from tests.harness.pod import Pod

FAST_PROBE_SECONDS = 1.0  # how often startup/readiness probes run until a container is ready


def timing(probe: dict[str, Any]) -> tuple[float, float, int]:
    """(initialDelaySeconds, periodSeconds, failureThreshold) with the API's defaults."""
    return (
        float(probe.get("initialDelaySeconds", 0)),
        float(probe.get("periodSeconds", 10)),
        int(probe.get("failureThreshold", 3)),
    )


async def run_probes(pod: Pod, container: Container) -> None:
    """Probe one run of a container until it ends (the caller cancels this when it exits)."""
    began = time.monotonic()
    startup = container.spec.get("startupProbe")
    if startup is not None:
        if not await _startup(pod, container, startup, began):
            return
        container.started = True
        pod.changed()
    await asyncio.gather(_readiness(pod, container, began), _liveness(pod, container))


async def _startup(pod: Pod, container: Container, probe: dict[str, Any], began: float) -> bool:
    """Whether the startup probe passed in its budget; when not, the container is restarted."""
    delay, period, threshold = timing(probe)
    await asyncio.sleep(delay)
    while not await probe_once(pod, container, probe):
        if time.monotonic() - began - delay >= period * threshold:
            pod.kubelet.event(
                f"pod {pod.name}/{container.name}: startup probe failed {threshold} times; restarting"
            )
            await pod.terminate_container(container, pod.kubelet.grace_seconds)
            return False
        await asyncio.sleep(FAST_PROBE_SECONDS)
    return True


async def _readiness(pod: Pod, container: Container, began: float) -> None:
    probe = container.spec.get("readinessProbe")
    if probe is None:
        container.ready = True
        pod.changed()
        return
    delay, period, threshold = timing(probe)
    await asyncio.sleep(max(0.0, delay - (time.monotonic() - began)))
    failures = 0
    while True:
        ok = await probe_once(pod, container, probe)
        failures = 0 if ok else failures + 1
        if ok != container.ready and (ok or failures >= threshold):
            container.ready = ok
            pod.changed()
        await asyncio.sleep(period if container.ready else FAST_PROBE_SECONDS)


async def _liveness(pod: Pod, container: Container) -> None:
    probe = container.spec.get("livenessProbe")
    if probe is None:
        return
    delay, period, threshold = timing(probe)
    await asyncio.sleep(delay)
    failures = 0
    while True:
        failures = 0 if await probe_once(pod, container, probe) else failures + 1
        if failures >= threshold:
            pod.kubelet.event(
                f"pod {pod.name}/{container.name}: liveness probe failed {threshold} times; restarting"
            )
            await pod.terminate_container(container, pod.kubelet.grace_seconds)
            return
        await asyncio.sleep(period)


async def probe_once(pod: Pod, container: Container, probe: dict[str, Any]) -> bool:
    """One try of a probe: whether it succeeded."""
    timeout = float(probe.get("timeoutSeconds", 1))
    runtime = pod.kubelet.runtime
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            host, port = runtime.endpoint(pod.sandbox, probe_port(pod, get.get("port")))
            scheme = get.get("scheme", "HTTP").lower()
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            async with pod.kubelet.api.session.get(
                f"{scheme}://{host}:{port}{get.get('path', '/')}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=False,
            ) as response:
                return 200 <= response.status < 400
        if "tcpSocket" in probe:
            host, port = runtime.endpoint(pod.sandbox, probe_port(pod, probe["tcpSocket"].get("port")))
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            return True
        if "exec" in probe:
            assert container.handle is not None
            return await runtime.exec(container.handle, probe["exec"]["command"], timeout) == 0
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
        return False
    raise HarnessError(f"probe {sorted(probe)} is not emulated (httpGet, tcpSocket and exec are)")


def probe_port(pod: Pod, port: int | str | None) -> int:
    """The container port a probe names, by number or by name."""
    number = pod.port_names.get(port) if isinstance(port, str) and not port.isdigit() else int(port or 0)
    if number is None:
        raise HarnessError(f"pod {pod.name}: probe names port {port!r}, which no container declares")
    return number
