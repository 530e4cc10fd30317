"""The container tier: every pod as a container of the images this checkout builds.

`images` runs hack/build-images.sh (the engine from hack/container-engine.sh: started, and
docker.io installed with apt-get, when none answers; seconds when nothing changed since the
last build, as hack/test.sh builds them before pytest) and pins what it built by image id
(a `:tier-<id>` tag), so another checkout rebuilding `:dev` on a shared engine cannot change
what this session runs. Nothing is skipped when the engine or an image is missing: the tier
fails, saying why.

`cluster` is one emulated API server with its HTTPS front on the container network's gateway,
and a `Kubelet` whose runtime is `DockerRuntime`: pods get a service-account token, the CA and
KUBERNETES_SERVICE_HOST/PORT, as in a cluster.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Kubelet, RestClient, serve_emulator
from tests.harness.apifront import ApiFront, serve_api_front
from tests.harness.docker import ContainerRecord, Docker, DockerRuntime
from tests.tools import helm_binary

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_SECONDS = 1800  # a cold build on 2 cores is about 10 minutes


@dataclass(frozen=True)
class Images:
    operator: str
    worker: str


@pytest.fixture(scope="session")
def docker_host() -> str:
    """DOCKER_HOST of the engine hack/container-engine.sh finds or starts (set for this process too)."""
    result = subprocess.run(
        [str(ROOT / "hack" / "container-engine.sh")], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        pytest.fail(f"no container engine (hack/container-engine.sh):\n{result.stderr[-3000:]}")
    host = result.stdout.strip()
    os.environ["DOCKER_HOST"] = host
    return host


@pytest.fixture(scope="session")
def images(docker_host: str) -> Images:
    """The operator and CPU worker images of this checkout, built (or found in the layer cache) and pinned."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "hack" / "build-images.sh")], capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"hack/build-images.sh failed:\n{result.stderr[-4000:]}")
    docker = Docker(docker_host)
    pinned = {}
    for name, tag in (("operator", "distillery-operator:dev"), ("worker", "distillery-worker-cpu:dev")):
        image_id = docker.run_sync("image", "inspect", "--format", "{{.Id}}", tag).strip()
        pinned[name] = f"{tag.split(':')[0]}:tier-{image_id.split(':')[-1][:12]}"
        docker.run_sync("tag", image_id, pinned[name])
    print(f"\nimages built in {time.monotonic() - started:.0f} s: {pinned}")
    return Images(**pinned)


@pytest.fixture(scope="session")
def runtime(images: Images, docker_host: str) -> Iterator[DockerRuntime]:
    with DockerRuntime(utility_image=images.operator, host=docker_host) as runtime:
        yield runtime


def chart_objects(images: Images, namespace: str) -> list[dict[str, Any]]:
    """What `helm template` renders with the chart's defaults and only the image names set."""
    repository, tag = images.operator.split(":")
    worker_repository, worker_tag = images.worker.split(":")
    sets = {"operator.image.repository": repository, "operator.image.tag": tag,
            "workers.image.repository": worker_repository, "workers.image.tag": worker_tag}  # fmt: skip
    command = [
        helm_binary(),
        "template",
        "distillery",
        str(ROOT / "charts" / "distillery"),
        "--namespace",
        namespace,
    ]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    rendered = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@dataclass
class Cluster:
    emulator: Any
    url: str
    front: ApiFront
    kubelet: Kubelet
    runtime: DockerRuntime
    first_record: int  # the runtime (and its records) outlive a cluster: one per session

    def api(self, namespace: str) -> RestClient:
        return RestClient(self.url, namespace)

    @property
    def records(self) -> list[ContainerRecord]:
        """The containers this cluster's kubelet started, in order (not those of earlier tests)."""
        return self.runtime.records[self.first_record :]


@contextlib.contextmanager
def start_cluster(
    runtime: DockerRuntime, root: Path, namespaces: list[str], **kubelet: Any
) -> Iterator[Cluster]:
    """The emulator, its HTTPS front on the gateway and a Kubelet running pods in `runtime`."""
    with serve_emulator(namespaces) as (emulator, url), serve_api_front(url, runtime.gateway) as front:
        node = Kubelet(url, root / "kubelet", runtime=runtime, api_access=front.access, **kubelet)
        node.start()
        try:
            yield Cluster(emulator, url, front, node, runtime, len(runtime.records))
        finally:
            node.stop()


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float, details: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{details()}")
