"""The Runtime seam: the controllers, pods, probes and Service proxies run on a backend that is
not the process backend, and hand it the manifest unrewritten.

`ScriptedRuntime` plays a container engine without one: each pod gets an address of its own
(10.244.0.N), containers "run" as asyncio tasks that write their termination message and
exit with the code their env asks for, and a pod's port 8000 is served by a small HTTP
server of the test. What a container-engine backend needs from the rest of the harness is
exactly what these check: the command, args, env and mount paths as the manifest wrote them,
the pod's own address in its status and downward API, probes and Service proxies sent to
`endpoint()`, proxies listening where `proxy_address()` says, each sandbox removed once, and an
image the runtime cannot get (`ImagePullError`) shown in the pod's status as the kubelet shows it.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import socket
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    Address,
    ContainerConfig,
    ImagePullError,
    Kubelet,
    RestClient,
    ServiceKey,
    api_path,
    serve_emulator,
)
from tests.support.harness_workloads import NS, condition, finished, job, storage_mount
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


@dataclass
class Sandbox:
    name: str
    ip: str
    host_ip: str = "192.0.2.1"
    removed: int = 0


@dataclass
class ScriptedContainer:
    argv: list[str]
    code: int
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    @property
    def pid(self) -> int | None:
        return None

    async def signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGKILL) and self.running:
            self.code = 128 + sig
            self.done.set()

    async def wait(self) -> int:
        await self.done.wait()
        return self.code


class ScriptedRuntime:
    """A backend with per-pod addresses and no rewrites; `SERVE` in env keeps a container running."""

    def __init__(self, web_port: int):
        self.web_port = web_port
        self.sandboxes: list[Sandbox] = []
        self.started: list[tuple[str, ContainerConfig, dict[ServiceKey, Address]]] = []
        self.proxies: dict[ServiceKey, Address] = {}
        self.unpullable: dict[str, ImagePullError] = {}  # image -> what each pull of it raises, until removed

    async def run_sandbox(
        self, pod: Mapping[str, Any], directory: Path, dns_names: Sequence[str] = ()
    ) -> Sandbox:
        sandbox = Sandbox(pod["metadata"]["name"], f"10.244.0.{len(self.sandboxes) + 1}")
        self.sandboxes.append(sandbox)
        return sandbox

    async def start(
        self, sandbox: Sandbox, config: ContainerConfig, services: Mapping[ServiceKey, Address]
    ) -> ScriptedContainer:
        error = self.unpullable.get(config.image)
        if error is not None:
            raise error
        self.started.append((sandbox.name, config, dict(services)))
        handle = ScriptedContainer([*config.command, *config.args], int(config.env.get("EXIT", "0")))
        if "SERVE" not in config.env:
            config.termination_log.write_text(json.dumps({"podIP": config.env.get("POD_IP")}))
            handle.done.set()
        return handle

    async def exec(self, handle: ScriptedContainer, command: list[str], timeout: float) -> int:
        return 0

    def endpoint(self, sandbox: Sandbox, port: int) -> Address:
        assert sandbox.ip.startswith("10.244.0."), sandbox
        return Address("127.0.0.1", self.web_port if port == 8000 else 1)

    def proxy_address(self, service: ServiceKey) -> Address:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.proxies[service] = Address("127.0.0.1", sock.getsockname()[1])
        return self.proxies[service]

    def release_proxy(self, service: ServiceKey) -> None:
        self.proxies.pop(service, None)

    async def remove_sandbox(self, sandbox: Sandbox) -> None:
        sandbox.removed += 1


@pytest.fixture
def web() -> Iterator[tuple[int, list[str]]]:
    """A small HTTP server standing for the pods' port 8000: (its port, the paths asked)."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = f"{self.path} from the pod".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()


@pytest.fixture
def scripted(
    tmp_path: Path, web: tuple[int, list[str]]
) -> Iterator[tuple[RestClient, Kubelet, ScriptedRuntime]]:
    runtime = ScriptedRuntime(web[0])
    with serve_emulator([NS]) as (_, url):
        kubelet = Kubelet(
            url, tmp_path / "kubelet", runtime=runtime, claims={"claim-a": tmp_path}, retry_delay=0.1
        )
        kubelet.start()
        try:
            yield RestClient(url, NS), kubelet, runtime
        finally:
            kubelet.stop()


def test_a_job_reaches_the_runtime_as_written_and_its_outcome_comes_back(scripted, tmp_path):
    api, kubelet, runtime = scripted
    container = {
        "command": ["/opt/distillery/bin/distillery", "generate"],
        "args": ["--storage=/data/jobs/$(POD_NAME)", "--teacher=http://teacher:8000/v1", "--port", "9090"],
        **storage_mount(),
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
    }
    api.create(job("seam", container, backoffLimit=0))
    status = wait_for(lambda: finished(api, "seam"), "the Job to finish", 30, details=kubelet.diagnostics)

    assert condition(status, "Complete") is not None, status
    [(pod_name, config, _)] = runtime.started
    # No rewrites: paths, Service names and ports as the manifest wrote them; $(VAR) expanded.
    assert config.command == ["/opt/distillery/bin/distillery", "generate"]
    assert config.args == [
        f"--storage=/data/jobs/{pod_name}",
        "--teacher=http://teacher:8000/v1",
        "--port",
        "9090",
    ]
    assert config.mounts == {"/data": tmp_path} and config.working_dir == "/data"
    assert config.termination_message_path == "/dev/termination-log"
    assert "DISTILLERY_TERMINATION_LOG" not in config.env and "PATH" not in config.env
    pod = api.pods(**{"job-name": "seam"})[0]
    assert pod["status"]["podIP"] == "10.244.0.1" and pod["status"]["hostIP"] == "192.0.2.1"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert json.loads(terminated["message"]) == {"podIP": "10.244.0.1"}  # the downward API saw it too
    assert [p.argv for p in kubelet.pods()] == [config.command + config.args]

    api.call("DELETE", api_path("batch/v1", "jobs", NS, "seam"))
    wait_for(
        lambda: runtime.sandboxes[0].removed,
        "the pod's sandbox to be removed",
        30,
        details=kubelet.diagnostics,
    )
    assert runtime.sandboxes[0].removed == 1


def test_probes_and_service_proxies_go_where_the_runtime_says(scripted, web):
    api, kubelet, runtime = scripted
    _, paths = web
    labels = {"app": "web"}
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        }
    )
    server = {
        "name": "server",
        "image": "web",
        "command": ["serve"],
        "env": [{"name": "SERVE", "value": "1"}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    }
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [server]}},
            },
        }
    )
    wait_for(
        lambda: ((api.get("apps/v1", "deployments", "web") or {}).get("status") or {}).get("readyReplicas"),
        "the Deployment to be ready through the runtime's endpoint",
        30,
        details=kubelet.diagnostics,
    )
    assert "/ready" in paths
    proxy = runtime.proxies[ServiceKey("web", NS, 80)]
    with urllib.request.urlopen(f"http://{proxy.host}:{proxy.port}/hello", timeout=10) as response:
        assert response.read() == b"/hello from the pod"

    api.create(job("client", {"command": ["fetch", "http://web/hello"]}))
    wait_for(lambda: finished(api, "client"), "the client Job", 30, details=kubelet.diagnostics)
    services = next(services for name, _, services in runtime.started if name.startswith("client-"))
    assert services == {ServiceKey("web", NS, 80): proxy}


def waiting_states(api: RestClient, name: str) -> tuple[str, str] | None:
    statuses = (api.get("v1", "pods", name) or {}).get("status", {}).get("containerStatuses") or [{}]
    waiting = statuses[0].get("state", {}).get("waiting")
    return (waiting["reason"], waiting.get("message", "")) if waiting else None


def bare_pod(name: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "command": ["run"], **container}],
        },
    }


def test_a_failed_pull_shows_err_image_pull_then_image_pull_back_off_until_it_pulls(scripted):
    api, kubelet, runtime = scripted
    image = "registry.test/distillery/worker-cpu:1"
    said = f'failed to pull image "{image}": manifest unknown'
    runtime.unpullable[image] = ImagePullError("ErrImagePull", said)
    never = "registry.test/distillery/absent:1"
    runtime.unpullable[never] = ImagePullError(
        "ErrImageNeverPull", f'Container image "{never}" is not present with pull policy of Never'
    )
    api.create(bare_pod("pulled", image))
    api.create(bare_pod("never", never, imagePullPolicy="Never"))
    seen: set[tuple[str, str]] = set()

    def both_shown() -> bool:
        state = waiting_states(api, "pulled")
        if state:
            seen.add(state)
        return {reason for reason, _ in seen} >= {"ErrImagePull", "ImagePullBackOff"}

    wait_for(
        both_shown, "ErrImagePull, then ImagePullBackOff", 30, interval=0.05, details=kubelet.diagnostics
    )
    assert ("ErrImagePull", said) in seen, seen
    assert ("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {said}') in seen, seen
    assert waiting_states(api, "never") == (
        "ErrImageNeverPull",
        f'Container image "{never}" is not present with pull policy of Never',
    )
    assert not runtime.started, "a container started without its image"

    del runtime.unpullable[image]  # the registry has it now: the next try after the back-off pulls it
    wait_for(
        lambda: api.get("v1", "pods", "pulled")["status"].get("phase") == "Succeeded",
        "the pod to run once its image pulls",
        30,
        details=kubelet.diagnostics,
    )
    assert [name for name, _, _ in runtime.started] == ["pulled"]
    assert waiting_states(api, "never")[0] == "ErrImageNeverPull"  # retried, never pulled
