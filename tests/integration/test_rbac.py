"""RBAC: the chart grants exactly what the operator uses in the integration tests, in each mode.

Every request the operator made against the emulator in this session (tests/integration,
recorded per test by the `cluster` fixture and by the HA test) must be allowed by a rule, and
every rule must have been needed by some request: nothing missing, nothing extra.

- Watching every namespace: the ClusterRole grants the job rules.
- `operator.watchNamespaces`: Roles in those namespaces grant them; the ClusterRole keeps only
  what kopf needs cluster-wide (no create rights on Deployments or Jobs anywhere).
- Leader election: a Role for the Lease in the release namespace.

Run alone, this module first plays the scenarios itself so the record is complete.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import scale_out, scenarios
from tests.support.chart import find, granted, render
from tests.support.ha_scenario import two_chart_replicas_one_reconciles_the_other_takes_over
from tests.support.kmock_cluster import SEEN_REQUESTS, Cluster
from tests.support.scenarios import recorded_as

pytestmark = [pytest.mark.integration]

LEASES = ("coordination.k8s.io", "leases")

# The scenarios whose requests the roles must cover (deletion, TTL, suspend and failures included).
CLUSTER_WIDE = [
    scenarios.a_job_walks_through_every_phase_to_succeeded,
    scenarios.suspend_and_resume,
    scenarios.deletion_releases_the_job_and_children_are_owned,
    scenarios.a_finished_job_is_deleted_after_its_ttl,
    scenarios.pending_until_the_named_claim_exists,
    scenarios.a_spec_made_invalid_by_a_patch_stops_the_teacher_and_the_running_shards,
    scale_out.training_runs_as_a_jobset_where_the_crd_is_served,
    scale_out.a_spec_made_invalid_mid_training_deletes_the_jobset,
    scale_out.a_queued_teacher_of_several_replicas_is_one_statefulset,
]
NAMESPACED = scenarios.an_operator_restricted_to_one_namespace
HA = two_chart_replicas_one_reconciles_the_other_takes_over


async def recorded(cluster: Cluster, tmp_path: Path) -> None:
    """Play the scenarios not run in this session (e.g. this module alone)."""
    for scenario in [*CLUSTER_WIDE, NAMESPACED]:
        if recorded_as(scenario) not in SEEN_REQUESTS:
            await scenario(cluster)
            cluster.record_requests(recorded_as(scenario))
    if recorded_as(HA) not in SEEN_REQUESTS:
        import asyncio

        await asyncio.to_thread(HA, tmp_path)


@pytest.mark.asyncio
async def test_the_roles_grant_exactly_what_the_operator_uses(cluster: Cluster, tmp_path: Path):
    await recorded(cluster, tmp_path)
    ha = SEEN_REQUESTS[recorded_as(HA)]
    cluster_wide = set().union(*(SEEN_REQUESTS[recorded_as(s)] for s in CLUSTER_WIDE), ha)
    leases = {r for r in cluster_wide if r[:2] == LEASES}

    # Every namespace: the ClusterRole; the Lease: the leader-election Role.
    docs = render("operator.leaderElection.enabled=true", "operator.replicas=2")
    allowed = granted(find(docs, "ClusterRole"))
    used = cluster_wide - leases
    assert not (used - allowed), f"used but not granted: {sorted(used - allowed)}"
    assert not (allowed - used), f"granted but never used: {sorted(allowed - used)}"
    lease_rules = granted(find(docs, "Role", "-leader-election"))
    assert leases == lease_rules, (sorted(leases), sorted(lease_rules))

    # watchNamespaces: the job rules in Roles there; cluster-wide only what kopf needs.
    docs = render("operator.watchNamespaces={ml}")
    role, cluster_role = find(docs, "Role"), find(docs, "ClusterRole")
    assert role["metadata"]["namespace"] == "ml"
    namespaced_use = SEEN_REQUESTS[recorded_as(NAMESPACED)]
    allowed = granted(role, cluster_role)
    assert not (namespaced_use - allowed), f"used but not granted: {sorted(namespaced_use - allowed)}"
    assert granted(cluster_role) <= namespaced_use, "a cluster-wide right the namespaced operator never used"
    assert not {r for r in granted(cluster_role) if r[2] in ("create", "delete", "patch")}


def test_the_roles_are_named_and_labelled_by_the_chart_helpers():
    role = find(render(), "ClusterRole")
    assert role["metadata"]["name"] == "distillery"
    assert role["metadata"]["labels"]["app.kubernetes.io/name"] == "distillery"
