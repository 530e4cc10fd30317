"""The release path, run here: hack/release.sh (what .github/workflows/release.yaml runs on a version tag)
pushes the images and the chart to a real OCI registry (the distribution registry on the loopback,
hack/registry.sh), and what a user then pulls from `oci://` names exactly the images that were pushed,
which run.

The CUDA worker image is left out (IMAGES): its base, the upstream vLLM CUDA image, cannot be pulled here.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.tools import helm_binary

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
# The release's version is the package's (the workflow refuses a tag that differs from pyproject.toml).
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run(*args: str, **kwargs) -> str:
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=1200, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def registry(built_images, loopback_registry: str) -> str:
    """`127.0.0.1:PORT/distillery` (the tier's registry), with this checkout's release pushed to it
    (the images already built, pinned by id)."""
    env = {**os.environ, "SKIP_BUILD": "1", "IMAGES": "operator worker-cpu", "PLAIN_HTTP": "1"}
    env |= {"OPERATOR_IMAGE": built_images.operator, "WORKER_CPU_IMAGE": built_images.worker}
    env["DISTILLERY_HELM"] = helm_binary()
    run(str(ROOT / "hack" / "release.sh"), VERSION, loopback_registry, env=env)
    return loopback_registry


def manifest_exists(registry: str, image: str) -> bool:
    """Does the registry hold `image` (REGISTRY/PATH:TAG), by the distribution API a kubelet's pull uses?"""
    host, _, rest = image.partition("/")
    path, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        method="HEAD",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def test_the_chart_from_oci_names_the_pushed_images_and_they_run(registry, tmp_path, docker_host):
    helm = helm_binary()
    chart_ref = f"oci://{registry}/charts/distillery"
    run(helm, "pull", chart_ref, "--version", VERSION, "--plain-http", "-d", str(tmp_path))
    chart = yaml.safe_load(
        subprocess.run(
            ["tar", "-xzOf", str(tmp_path / f"distillery-{VERSION}.tgz"), "distillery/Chart.yaml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    # A default install from the registry: no image value set by the user.
    rendered = run(
        helm,
        "template",
        "distillery",
        chart_ref,
        "--version",
        VERSION,
        "--plain-http",
        "--namespace",
        "distillery-system",
    )
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    named = {
        "operator": container["image"],
        "worker-cpu": env["DISTILLERY_WORKER_IMAGE"],
        "worker-cuda": env["DISTILLERY_WORKER_CUDA_IMAGE"],
    }
    for name, image in named.items():
        assert image == f"{registry}/{name}:{VERSION}", (name, image)
    for name in ("operator", "worker-cpu"):
        assert manifest_exists(registry, named[name]), f"{named[name]} is not in the registry"
    # Pulled back from the registry (the local copies removed first), each image runs this checkout's CLI.
    for name in ("operator", "worker-cpu"):
        run("docker", "rmi", named[name])
        run("docker", "pull", named[name])
        version = run(
            "docker",
            "run",
            "--rm",
            "--user",
            "65532",
            "--read-only",
            "--entrypoint",
            "distillery",
            named[name],
            "--version",
        )
        assert version.split() == ["distillery", VERSION], version
    print(json.dumps(named, indent=2))
