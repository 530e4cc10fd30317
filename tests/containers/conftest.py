"""The container tier: every pod as a container of the images this checkout builds.

`images` runs hack/build-images.sh (the engine from hack/container-engine.sh: started, and
docker.io installed with apt-get, when none answers; seconds when nothing changed since the
last build, as hack/test.sh builds them before pytest) and pins what it built by image id
(a `:tier-<id>` tag), so another checkout rebuilding `:dev` on a shared engine cannot change
what this session runs. Nothing is skipped when the engine or an image is missing: the tier
fails, saying why.

`runtime` is the session's `DockerRuntime`; a test's cluster is `start_cluster` / `make_cluster`
(tests/support/cluster.py) with that runtime: one emulated API server with its HTTPS front on
the container network's gateway, and a `Kubelet` running pods as containers; pods get a
service-account token, the CA and KUBERNETES_SERVICE_HOST/PORT, as in a cluster.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.docker import Docker, DockerRuntime
from tests.support.chart import Images

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_SECONDS = 1800  # a cold build on 2 cores is about 10 minutes


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
        [str(ROOT / "hack" / "build-images.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        cwd=ROOT,
    )
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
