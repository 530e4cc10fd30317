"""High availability as the chart sets it up, as a scenario: two operator replicas, one reconciles,
the other takes over when it is killed (tests/integration/test_ha.py says how; test_rbac.py replays
it when run alone). What the replicas asked of the API server is recorded for the RBAC test."""

from __future__ import annotations

import time
from typing import Any

from distillery.contract.summaries import CheckSummary, InputSummary, termination_message
from tests.harness import ProcessRuntime, RestClient, api_path, kubeconfig
from tests.support.chart import render
from tests.support.cluster import start_cluster
from tests.support.kmock_cluster import SEEN_REQUESTS, spec, verb_of
from tests.support.probes import operator_posts
from tests.support.scenarios import recorded_as
from tests.support.waiting import wait_for

RELEASE_NAMESPACE = "distillery-system"


JOBS_NAMESPACE = "ml"


DJ = ("distillery.dev/v1alpha1", "distillationjobs")


# Lease 15 s + renewal every 5 s: a killed leader is replaced well within a minute.
TAKEOVER_DEADLINE = 60


def chart_operator() -> dict[str, Any]:
    rendered = render(
        "operator.leaderElection.enabled=true",
        "operator.replicas=2",
        "imageRegistry=",
        "operator.image.repository=distillery-operator",
        namespace=RELEASE_NAMESPACE,
    )
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    return deployment


def holder(api: RestClient) -> str | None:
    lease = api.call("GET", api_path("coordination.k8s.io/v1", "leases", RELEASE_NAMESPACE, "distillery"))
    return (lease or {}).get("spec", {}).get("holderIdentity")


def inputs_ready(api: RestClient, name: str, details) -> None:
    """Play the check Job's controller and pod (the kubelet here runs only the operator's namespace)."""
    job = wait_for(
        lambda: api.get("batch/v1", "jobs", f"{name}-check"), f"the {name} check Job", 30, details=details
    )
    summary = CheckSummary(
        inputs={"spec.data.train": InputSummary(location="/data/d/train.jsonl", checked=3)}
    )
    pod = f"{name}-check-0"
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "labels": job["spec"]["template"]["metadata"]["labels"]},
            "spec": job["spec"]["template"]["spec"],
        }
    )
    terminated = {"exitCode": 0, "reason": "Completed", "message": termination_message(summary)}
    api.call(
        "PATCH",
        api_path("v1", "pods", api.namespace, pod, "status"),
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "check", "state": {"terminated": terminated}}],
            }
        },
    )
    api.call(
        "PATCH",
        api_path("batch/v1", "jobs", api.namespace, f"{name}-check", "status"),
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )


def two_chart_replicas_one_reconciles_the_other_takes_over(tmp_path):
    deployment = chart_operator()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect=distillery" in container["args"] and deployment["spec"]["replicas"] == 2
    config = tmp_path / "kubeconfig"  # written below, before any pod starts
    # retry_delay 10 s: a killed container comes back after the kubelet's first crash back-off.
    with start_cluster(
        tmp_path,
        [RELEASE_NAMESPACE, JOBS_NAMESPACE],
        runtime=ProcessRuntime(env={"KUBECONFIG": str(config)}),
        namespace=RELEASE_NAMESPACE,
        retry_delay=10,
    ) as cluster:
        emulator, kubelet = cluster.emulator, cluster.kubelet
        config.write_text(kubeconfig(cluster.url))
        try:
            system, jobs = cluster.api(RELEASE_NAMESPACE), cluster.api(JOBS_NAMESPACE)
            system.create(deployment)
            details = lambda: kubelet.diagnostics()  # noqa: E731
            pods = wait_for(
                lambda: (
                    [p for p in kubelet.pods() if p.ready]
                    if len([p for p in kubelet.pods() if p.ready]) == 2
                    else None
                ),
                "both replicas ready",
                120,
                details=details,
            )
            first = wait_for(lambda: holder(system), "a leader", TAKEOVER_DEADLINE, details=details)
            leader = next(p for p in pods if first.startswith(p.name))
            standby = next(p for p in pods if p is not leader)

            jobs.create(
                {
                    "apiVersion": "distillery.dev/v1alpha1",
                    "kind": "DistillationJob",
                    "metadata": {"name": "ha", "namespace": JOBS_NAMESPACE},
                    "spec": spec(),
                }
            )
            inputs_ready(jobs, "ha", details)
            wait_for(
                lambda: jobs.get("apps/v1", "deployments", "ha-teacher"), "the teacher", 30, details=details
            )
            wait_for(
                lambda: (jobs.get(*DJ, "ha") or {}).get("status", {}).get("phase"),
                "a phase",
                30,
                details=details,
            )
            # Exactly one replica acted: only the leader's log has the creations.
            assert "created Deployment ha-teacher" in leader.log.read_text()
            assert "created" not in standby.log.read_text()

            kubelet.kill(leader.name)  # SIGKILL: no goodbye, its Lease just stops being renewed
            started = time.monotonic()
            second = wait_for(
                lambda: (h := holder(system)) and h != first and h,
                "a new leader",
                TAKEOVER_DEADLINE,
                details=details,
            )
            assert second.startswith(standby.name), (first, second)
            jobs.create(
                {
                    "apiVersion": "distillery.dev/v1alpha1",
                    "kind": "DistillationJob",
                    "metadata": {"name": "ha2", "namespace": JOBS_NAMESPACE},
                    "spec": spec(),
                }
            )
            inputs_ready(jobs, "ha2", details)
            wait_for(
                lambda: jobs.get("apps/v1", "deployments", "ha2-teacher"),
                "the new leader at work",
                TAKEOVER_DEADLINE,
                details=details,
            )
            print(f"takeover: a new leader {time.monotonic() - started:.1f} s after the old one was killed")
            assert "created Deployment ha2-teacher" in standby.log.read_text()
            made = operator_posts(emulator)
            assert made[("deployments", "ha-teacher")] == 1 and made[("deployments", "ha2-teacher")] == 1
            assert all(count == 1 for count in made.values()), made
        finally:
            kubelet.stop()  # before reading what the replicas asked (start_cluster's stop is then a no-op)
        for request in list(emulator):  # for the RBAC test: what the replicas asked of the API server
            verb = verb_of(request)
            agent = request.headers.get("User-Agent", "")
            if (
                verb
                and request.resource is not None
                and request.resource.plural
                and agent.startswith(("distillery-operator", "kopf"))
            ):
                resource = request.resource.plural + (
                    f"/{request.subresource}" if request.subresource else ""
                )
                SEEN_REQUESTS.setdefault(
                    recorded_as(two_chart_replicas_one_reconciles_the_other_takes_over), set()
                ).add((request.resource.group or "", resource, verb))
