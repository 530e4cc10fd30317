"""The container tier: every pod as a container of the images this checkout builds.

`images` runs hack/build-images.sh (the engine from hack/container-engine.sh: started, and
docker.io installed with apt-get, when none answers; seconds when nothing changed since the
last build, as hack/test.sh builds them before pytest) and pins what it built by image id
(a `:tier-<id>` tag), so another checkout rebuilding `:dev` on a shared engine cannot change
what this session runs. It then publishes them as a release does (hack/release.sh: images and
chart) to the loopback registry of hack/registry.sh, under a version of their own (the package
version plus a hash of the image ids and the chart), removes those registry names from the engine,
and names the images there: every pod pulls its image from the registry, as a kubelet does
(`DockerRuntime.pulls`). Pushing the 4.4 GB worker image takes a minute or three when the
registry lacks its layers, seconds when it has them. Nothing is skipped when the engine, the
registry or an image is missing: the tier fails, saying why.

`runtime` is the session's `DockerRuntime`; a test's cluster is `start_cluster` / `make_cluster`
(tests/support/cluster.py) with that runtime: one emulated API server with its HTTPS front on
the container network's gateway, and a `Kubelet` running pods as containers; pods get a
service-account token, the CA and KUBERNETES_SERVICE_HOST/PORT, as in a cluster.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from tests.harness.docker import Docker, DockerRuntime
from tests.support.chart import Images
from tests.tools import helm_binary

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
def built_images(docker_host: str) -> Images:
    """The operator and CPU worker images of this checkout, built (or found in the layer cache) and
    pinned by id, under local names only."""
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
    return Images(**pinned, local_operator=pinned["operator"], local_worker=pinned["worker"])


@pytest.fixture(scope="session")
def loopback_registry(docker_host: str) -> str:
    """`127.0.0.1:PORT/distillery`: the registry path on hack/registry.sh's distribution registry."""
    result = subprocess.run(
        [str(ROOT / "hack" / "registry.sh")], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if result.returncode != 0:
        pytest.fail(f"no registry (hack/registry.sh):\n{result.stderr[-3000:]}")
    return f"{result.stdout.strip()}/distillery"


def build_version(docker: Docker, built: Images) -> str:
    """The package version plus a hash of the built images' ids and the chart (SemVer, as a chart's
    version must be): one build of one checkout, so concurrent checkouts never push the same tag."""
    digest = hashlib.sha256()
    for image in (built.operator, built.worker):
        digest.update(docker.run_sync("image", "inspect", "--format", "{{.Id}}", image).encode())
    for path in sorted(p for p in (ROOT / "charts" / "distillery").rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"{version}-tier-{digest.hexdigest()[:12]}"


@pytest.fixture(scope="session")
def images(built_images: Images, loopback_registry: str, docker_host: str) -> Images:
    """What this checkout built, published to the loopback registry by the release's own script
    (hack/release.sh: images and chart) under a per-build version, and named there. The
    registry-named tags are then removed from the engine, so the first pod of each image pulls it
    (`DockerRuntime.pulls`); the images stay under their local names (`local_*`)."""
    started = time.monotonic()
    docker = Docker(docker_host)
    version = build_version(docker, built_images)
    env = {
        **os.environ,
        "SKIP_BUILD": "1",
        "IMAGES": "operator worker-cpu",
        "PLAIN_HTTP": "1",
        "OPERATOR_IMAGE": built_images.operator,  # the pinned ids, whatever rebuilt `:dev` since
        "WORKER_CPU_IMAGE": built_images.worker,
        "DISTILLERY_HELM": helm_binary(),
    }
    result = subprocess.run(
        [str(ROOT / "hack" / "release.sh"), version, loopback_registry],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        cwd=ROOT,
        env=env,
    )
    if result.returncode != 0:
        pytest.fail(f"hack/release.sh {version} {loopback_registry} failed:\n{result.stderr[-4000:]}")
    published = Images(
        operator=f"{loopback_registry}/operator:{version}",
        worker=f"{loopback_registry}/worker-cpu:{version}",
        local_operator=built_images.operator,
        local_worker=built_images.worker,
    )
    for image in (published.operator, published.worker):
        docker.run_sync("rmi", image)  # the tag only: the local names keep the image
    print(f"\nimages published in {time.monotonic() - started:.0f} s: {published}")
    return published


@pytest.fixture(scope="session")
def runtime(images: Images, docker_host: str) -> Iterator[DockerRuntime]:
    with DockerRuntime(utility_image=images.local_operator, host=docker_host) as runtime:
        yield runtime
