"""The harness's API server lists objects in a real API server's order: by namespace, then name (its
storage's key order), whatever order they were created in. `kubectl logs -l` prints pods in that order,
and docs/client.md shows what it printed."""

from __future__ import annotations

import pytest

from tests.harness import RestClient, serve_emulator

pytestmark = pytest.mark.unit


def _configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns1"}}


def test_a_list_is_in_name_order_not_creation_order():
    with serve_emulator(["ns1"]) as (_, url):
        client = RestClient(url, "ns1")
        for name in ("job-generate-1", "job-train-0", "job-generate-0", "a-first"):
            client.create(_configmap(name))
        names = [item["metadata"]["name"] for item in client.items("v1", "configmaps")]
    assert names == ["a-first", "job-generate-0", "job-generate-1", "job-train-0"]
