"""The krew manifest of `kubectl distillery` matches what the release ships: the archive hack/krew_package.py
builds (its sha256), the package version, and a launcher that runs the package's plugin."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tomllib
import yaml

import krew_package  # hack/krew_package.py (tests/conftest.py puts hack/ on the path)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "plugins" / "krew" / "distillery.yaml"


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_names_the_archive_the_release_builds():
    plugin = manifest()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (plugin["apiVersion"], plugin["kind"]) == (
        "krew.googlecontainertools.github.com/v1alpha2",
        "Plugin",
    )
    assert plugin["spec"]["version"] == f"v{version}"
    (platform,) = plugin["spec"]["platforms"]
    assert platform["uri"].endswith(f"/v{version}/{krew_package.ARCHIVE}")
    data = krew_package.archive_bytes()
    assert platform["sha256"] == hashlib.sha256(data).hexdigest(), "run: python hack/krew_package.py DIR"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [platform["bin"]] == [f["from"] for f in platform["files"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[platform["bin"]] == "distillery.client.cli:main"


def test_launcher_runs_the_plugin_or_says_what_to_install(tmp_path: Path):
    launcher = ROOT / "plugins" / "krew" / "kubectl-distillery"
    env = {"PATH": "/usr/bin:/bin", "DISTILLERY_PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "operator")}
    helped = subprocess.run([str(launcher), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "usage: kubectl distillery" in helped.stdout
    bare = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no python at all
    os.symlink("/bin/sh", tmp_path / "sh")
    missing = subprocess.run(
        ["/bin/sh", str(launcher), "get"], env=bare, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1
    assert "pip install 'distillery-operator[operator]'" in missing.stderr
