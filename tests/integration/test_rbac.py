"""RBAC: the chart's ClusterRole grants exactly what the operator used in the integration tests.

Every request the operator made against the emulator in this session (tests/integration,
recorded by the `cluster` fixture) must be allowed by a rule, and every rule must have been
needed by some request: nothing missing, nothing extra. Run alone, this module first plays
the scenarios itself so the record is complete.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration import test_operator
from tests.integration.conftest import RECORDED_TESTS, SEEN_REQUESTS, Cluster
from tests.tools import helm_binary

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "distillery"

# The scenarios whose requests the role must cover (deletion, TTL, suspend and failures included).
SCENARIOS = [
    test_operator.test_a_job_walks_through_every_phase_to_succeeded,
    test_operator.test_suspend_and_resume,
    test_operator.test_deletion_releases_the_job_and_children_are_owned,
    test_operator.test_a_finished_job_is_deleted_after_its_ttl,
    test_operator.test_an_operator_restricted_to_one_namespace,
]


def cluster_role() -> dict:
    rendered = subprocess.run(
        [helm_binary(), "template", "distillery", str(CHART), "--show-only", "templates/clusterrole.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    (role,) = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert role["kind"] == "ClusterRole"
    return role


def granted(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


@pytest.mark.asyncio
async def test_the_cluster_role_grants_exactly_what_the_operator_uses(cluster: Cluster):
    for scenario in SCENARIOS:  # those not run in this session (e.g. this module alone): play them now
        if scenario.__name__ not in RECORDED_TESTS:
            await scenario(cluster)
    cluster.record_requests()
    used = set(SEEN_REQUESTS)
    allowed = granted(cluster_role())
    assert not (used - allowed), f"used but not granted: {sorted(used - allowed)}"
    assert not (allowed - used), f"granted but never used: {sorted(allowed - used)}"


def test_the_role_is_named_and_labelled_by_the_chart_helpers():
    role = cluster_role()
    assert role["metadata"]["name"] == "distillery"
    assert role["metadata"]["labels"]["app.kubernetes.io/name"] == "distillery"
