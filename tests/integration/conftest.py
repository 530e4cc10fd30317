"""The operator against kmock's in-memory Kubernetes API server.

The test plays the cluster's controllers: it marks the teacher Deployment ready, writes
Job status and adds the pods (with their termination messages) that the Job controller
and the kubelet would. Every request the operator makes is recorded for the RBAC test.
The cluster, its helpers and the record: tests/support/kmock_cluster.py.
"""

from __future__ import annotations

import kmock
import kmock._internal.parsing as kmock_parsing
import kubernetes
import pytest
import pytest_asyncio

from distillery.controller import handlers
from distillery.controller.settings import OperatorSettings
from tests.support.kmock_cluster import NAMESPACE, RESOURCES, VERBS, Cluster, Emulator


def _parse_path(path: str, _original=kmock_parsing.parse_path) -> kmock_parsing.ParsedPath:
    """kmock 0.8 reads `/api/v1/namespaces` as "namespace <missing>" and fails; it is the namespaces list."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None)
    return _original(path)


@pytest_asyncio.fixture()
async def cluster(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    monkeypatch.setattr(kmock_parsing, "parse_path", _parse_path)
    # The operator runs with these settings (as `distillery operator` gives them): scrape progress every second.
    handlers.use_settings(OperatorSettings(progress_seconds=1))
    async with Emulator() as server, kmock.Server(server):
        for resource, info in RESOURCES.items():
            server.resources[resource] = {**info, "verbs": VERBS}
        # Both kopf and the official client talk to this test's emulator.
        configuration = kubernetes.client.Configuration()
        configuration.host = str(server.url).rstrip("/")
        handlers.use_configuration(configuration)
        world = Cluster(server)
        await world.create(
            "v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            namespace=None,
        )
        try:
            yield world
        finally:
            world.record_requests(request.node.originalname)
            handlers.use_settings(None)
