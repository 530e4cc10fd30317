"""The harness's own tests (tests/harness) on hand-written Jobs, Deployments and Services.

The e2e result is only as good as the harness that plays the cluster, so these check that
it runs the manifest's command with the pod's volumes and environment, and writes back
what a kubelet and the Job/Deployment controllers would. Each workload is a tiny shell or
Python command; the whole directory takes seconds. This module holds the `cluster` fixture
(emulator + kubelet with the process runtime); the helpers the test modules share are in
tests/support/harness_workloads.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Kubelet, RestClient
from tests.support.harness_workloads import NS


@pytest.fixture
def cluster(make_cluster, tmp_path: Path) -> tuple[Any, RestClient, Kubelet, Path]:
    """The process backend, quick to retry and to stop: (emulator, API client, kubelet, the claim's directory)."""
    storage = tmp_path / "storage"
    storage.mkdir()
    c = make_cluster([NS], claims={"claim-a": storage}, retry_delay=0.1, grace_seconds=3)
    return c.emulator, c.api(NS), c.kubelet, storage
