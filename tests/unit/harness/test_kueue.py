"""The harness playing Kueue's documented admission contract (tests/harness/kueue.py), and Kubernetes'
scheduling gates: a gated pod is created but neither scheduled nor run until its last gate is removed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.kueue import ADMISSION_GATE, MANAGED_LABEL, QUEUE_LABEL, Kueue, gate_pod, suspend_job
from tests.support.harness_workloads import NS, condition, finished, job
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit

QUEUE = {QUEUE_LABEL: "gpu-queue"}


@pytest.fixture
def kueue_cluster(make_cluster, tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    c = make_cluster([NS], claims={"claim-a": storage}, retry_delay=0.1, grace_seconds=3, kueue=True)
    api = c.api(NS)
    return api, c.kubelet, Kueue(api)


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, **labels}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "python",
                            "command": ["python3", "-c", "import time; time.sleep(60)"],
                        }
                    ]
                },
            },
        },
    }


def test_the_webhooks_gate_labelled_pods_and_suspend_labelled_jobs_only():
    pod = {"metadata": {"name": "p", "labels": dict(QUEUE)}, "spec": {"containers": []}}
    gated = gate_pod(pod)
    assert gated["spec"]["schedulingGates"] == [{"name": ADMISSION_GATE}]
    assert gated["metadata"]["labels"][MANAGED_LABEL] == "true"
    assert gate_pod(gated)["spec"]["schedulingGates"] == [{"name": ADMISSION_GATE}]  # once
    assert "schedulingGates" not in pod["spec"]  # a copy; the input is unchanged
    plain = {"metadata": {"name": "p", "labels": {}}, "spec": {}}
    assert gate_pod(plain) is plain
    # A Kueue-managed Job's pods are the Job integration's: not gated.
    owned = {
        **pod,
        "metadata": {**pod["metadata"], "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job"}]},
    }
    assert gate_pod(owned) is owned
    assert suspend_job({"metadata": {"labels": dict(QUEUE)}, "spec": {}})["spec"]["suspend"] is True
    assert "suspend" not in suspend_job({"metadata": {"labels": {}}, "spec": {}})["spec"]


def test_a_gated_deployment_pod_waits_pending_until_kueue_admits_it(kueue_cluster):
    api, kubelet, kueue = kueue_cluster
    api.create(deployment("server", QUEUE))
    pods = wait_for(lambda: api.pods(app="server") or None, "the Deployment's pod", 15)
    pod = pods[0]
    assert pod["spec"]["schedulingGates"] == [{"name": ADMISSION_GATE}]
    assert pod["metadata"]["labels"][MANAGED_LABEL] == "true"
    scheduled = wait_for(
        lambda: condition(api.get("v1", "pods", pod["metadata"]["name"]).get("status") or {}, "PodScheduled"),
        "the gated pod's PodScheduled condition",
        10,
    )
    assert (scheduled["status"], scheduled["reason"]) == ("False", "SchedulingGated")
    assert api.get("v1", "pods", pod["metadata"]["name"])["status"]["phase"] == "Pending"
    assert kueue.waiting() == [f"Pod/{pod['metadata']['name']}"]
    assert [info.pid for info in kubelet.pods()] == [None]  # nothing started
    assert (api.get("apps/v1", "deployments", "server").get("status") or {}).get("readyReplicas") is None

    assert kueue.admit_pods(app="server") == 1
    wait_for(
        lambda: (api.get("apps/v1", "deployments", "server").get("status") or {}).get("readyReplicas") == 1,
        "the admitted pod to run",
        20,
    )
    admitted = api.get("v1", "pods", pod["metadata"]["name"])
    assert not admitted["spec"].get("schedulingGates")
    assert condition(admitted["status"], "PodScheduled")["status"] == "True"
    assert kueue.waiting() == []


def test_a_labelled_job_stays_suspended_until_kueue_admits_it(kueue_cluster):
    api, kubelet, kueue = kueue_cluster
    labelled = job("queued", {"command": ["sh", "-c", "exit 0"]})
    labelled["metadata"]["labels"] = dict(QUEUE)
    api.create(labelled)  # not suspended: Kueue's webhook suspends it
    wait_for(lambda: kueue.waiting() == ["Job/queued"] or None, "the Job suspended by the webhook", 10)
    assert not kubelet.pods()
    kueue.admit_job("queued")
    status = wait_for(lambda: finished(api, "queued"), "the admitted Job to finish", 20)
    assert status["succeeded"] == 1
    # The Job's pod carries the queue label but is the Job integration's: never gated.
    assert not any(p["spec"].get("schedulingGates") for p in api.pods(app="queued"))
