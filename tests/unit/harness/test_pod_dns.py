"""Cluster DNS's names for pods (tests/harness/dns.py) on the operator's own multi-node training manifests,
and the Job controller naming each Indexed pod's host `<job>-<index>` as the real one does."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.manifests import BuildConfig, build
from distillery.manifests.jobs import rendezvous_endpoint
from tests.harness.dns import pod_dns_names, pod_hostname
from tests.support.harness_workloads import NS, finished, job
from tests.support.pods import job_on
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


def training_pod(manifest: dict[str, Any], index: int) -> dict[str, Any]:
    """Pod `index` of the training Job as the Job controller makes it: the template, its host `<job>-<index>`."""
    template = manifest["spec"]["template"]
    return {
        "metadata": {
            "name": f"{manifest['metadata']['name']}-{index}-abcde",
            "namespace": manifest["metadata"]["namespace"],
            "labels": dict(template["metadata"]["labels"]),
        },
        "spec": {**template["spec"], "hostname": f"{manifest['metadata']['name']}-{index}"},
    }


@pytest.fixture
def two_nodes(tiny_model_paths, tmp_path) -> tuple[dict[str, Any], dict[str, Any], Any]:
    distillation = job_on(tmp_path, tiny_model_paths, nodes=2)
    return (
        build("train", distillation, BuildConfig()),
        build("train-service", distillation, BuildConfig()),
        distillation,
    )


@pytest.fixture
def tiny_model_paths(tmp_path) -> dict[str, Any]:
    # Only their paths go into the spec: the builders read no model.
    return {"student": tmp_path / "student", "teacher": tmp_path / "teacher"}


def test_the_rendezvous_name_resolves_to_pod_zero_only(two_nodes):
    manifest, service, distillation = two_nodes
    pods = [training_pod(manifest, index) for index in range(manifest["spec"]["completions"])]
    host = rendezvous_endpoint(distillation).rsplit(":", 1)[0]
    namespace = manifest["metadata"]["namespace"]
    # A peer looks the short name up through its search path, whose first domain is `<ns>.svc.cluster.local`.
    looked_up = f"{host}.{namespace}.svc.cluster.local"
    names = [pod_dns_names(pod, [service]) for pod in pods]
    assert looked_up in names[0]
    assert all(looked_up not in other for other in names[1:]), names
    assert len({name for pod_names in names for name in pod_names}) == 2 * len(pods)  # each pod its own
    assert pod_hostname(pods[1]) == f"{manifest['metadata']['name']}-1"


def test_no_pod_name_without_a_headless_service_that_selects_the_pod(two_nodes):
    manifest, service, _ = two_nodes
    pod = training_pod(manifest, 0)
    assert pod_dns_names(pod, []) == []
    with_ip = {**service, "spec": {**service["spec"], "clusterIP": "10.96.0.10"}}
    assert pod_dns_names(pod, [with_ip]) == []  # a ClusterIP Service gives its pods no names
    elsewhere = {**service, "metadata": {**service["metadata"], "namespace": "other"}}
    assert pod_dns_names(pod, [elsewhere]) == []
    unselected = {**pod, "metadata": {**pod["metadata"], "labels": {"app": "something-else"}}}
    assert pod_dns_names(unselected, [service]) == []
    no_subdomain = {**pod, "spec": {k: v for k, v in pod["spec"].items() if k != "subdomain"}}
    assert pod_dns_names(no_subdomain, [service]) == []


def test_a_pod_without_hostname_is_its_name_cut_to_a_dns_label():
    pod = {"metadata": {"name": "p" * 80}, "spec": {}}
    assert pod_hostname(pod) == "p" * 63


def test_the_job_controller_names_each_indexed_pod_host_job_dash_index(cluster):
    _, api, _, _ = cluster
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "peers", "namespace": NS},
            "spec": {"clusterIP": "None", "selector": {"app": "peers"}, "ports": [{"port": 29400}]},
        }
    )
    indexed = job("peers", {"command": ["true"]}, completionMode="Indexed", completions=2, parallelism=2)
    indexed["spec"]["template"]["spec"]["subdomain"] = "peers"
    api.create(indexed)
    wait_for(lambda: finished(api, "peers"), "the Job to finish", 30)
    pods = sorted(api.pods(**{"job-name": "peers"}), key=lambda p: p["spec"]["hostname"])
    assert [p["spec"]["hostname"] for p in pods] == ["peers-0", "peers-1"]
    service = api.get("v1", "services", "peers")
    assert pod_dns_names(pods[0], [service])[0] == f"peers-0.peers.{NS}.svc.cluster.local"
