"""The objects the chart's monitors look at, made by the real code, and the scrape config Prometheus
gets from what the Prometheus Operator port (tests/support/prometheus_operator.py) selects.

- `job_pods`: every child of a DistillationJob built by `manifests.build` (the operator's own
  builders, with its BuildConfig), its Deployments and Jobs turned into the pods their controllers
  run (the template's labels and spec; an Indexed Job's pods one per index; the Job controller's
  own labels; a pod IP; Running and Ready), and its Services;
- `chart_pods`: the same for the Deployments `helm template` renders (the operator's pod);
- `scrape_config`: one Prometheus scrape config per monitor endpoint, as the Prometheus Operator
  names them, with static targets carrying the labels the port computed; `address` maps each
  target's (fake) pod address to where the test really serves that process's registry.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
from collections.abc import Callable
from typing import Any

from distillery.api import DistillationJob
from distillery.manifests import CHILDREN, BuildConfig, build
from tests.support.prometheus_operator import Target

_ips = (str(ipaddress.ip_address("10.244.0.10") + i) for i in itertools.count())


def _pod(
    owner: dict[str, Any], template: dict[str, Any], name: str, extra_labels: dict[str, str]
) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "uid": f"uid-{name}",
            "labels": {**(template["metadata"].get("labels") or {}), **extra_labels},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "controller": True,
                }
            ],
        },
        "spec": {**copy.deepcopy(template["spec"]), "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": next(_ips),
            "hostIP": "172.18.0.2",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pods_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods a Deployment's or Job's controller runs for it."""
    if workload["kind"] not in ("Deployment", "Job"):
        return []
    name, template = workload["metadata"]["name"], workload["spec"]["template"]
    if workload["kind"] == "Deployment":
        return [
            _pod(workload, template, f"{name}-5d8f7c9b4-x2k{i}", {"pod-template-hash": "5d8f7c9b4"})
            for i in range(workload["spec"].get("replicas", 1))
        ]
    if workload["kind"] == "Job":
        spec = workload["spec"]
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name}
        if spec.get("completionMode") == "Indexed":
            return [
                _pod(
                    workload,
                    template,
                    f"{name}-{i}-q7v{i}",
                    {**labels, "batch.kubernetes.io/job-completion-index": str(i)},
                )
                for i in range(spec.get("parallelism") or spec["completions"])
            ]
        return [_pod(workload, template, f"{name}-q7v2m", labels)]
    return []


def job_children(job: DistillationJob, config: BuildConfig | None = None) -> list[dict[str, Any]]:
    """Every child object the operator's builders make for `job`."""
    config = config or BuildConfig()
    return [obj for child in CHILDREN if (obj := build(child, job, config)) is not None]


def job_pods(job: DistillationJob, config: BuildConfig | None = None) -> tuple[list[dict], list[dict]]:
    """(pods, Services) the operator's children of `job` make in a cluster."""
    children = job_children(job, config)
    pods = [pod for child in children for pod in pods_of(child)]
    return pods, [c for c in children if c["kind"] == "Service"]


def chart_pods(docs: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(pods, Services) of what `helm template` rendered."""
    pods = [pod for doc in docs if doc["kind"] == "Deployment" for pod in pods_of(doc)]
    return pods, [doc for doc in docs if doc["kind"] == "Service"]


def scrape_config(targets: list[Target], address: Callable[[Target], str]) -> list[dict[str, Any]]:
    """Prometheus scrape_configs for `targets`: one per monitor endpoint (its job_name, honor_labels,
    metrics_path, scheme), each target static at `address(target)` with the labels the port gave it."""
    jobs: dict[str, dict[str, Any]] = {}
    for target in targets:
        job = jobs.setdefault(
            target.job_name,
            {
                "job_name": target.job_name,
                "honor_labels": target.honor_labels,
                "metrics_path": target.metrics_path,
                "scheme": target.scheme,
                "static_configs": [],
                **(
                    {"metric_relabel_configs": list(target.metric_relabelings)}
                    if target.metric_relabelings
                    else {}
                ),
            },
        )
        job["static_configs"].append({"targets": [address(target)], "labels": dict(target.labels)})
    return list(jobs.values())


def admits(policy: dict[str, Any], pod: dict[str, Any], namespace_labels: dict[str, str], port: int) -> bool:
    """Whether a NetworkPolicy's ingress rules let `pod` (in a namespace with `namespace_labels`) reach
    the selected pods on TCP `port` (matchLabels selectors only; a peer with only a podSelector is in
    the policy's own namespace; an empty selector matches all)."""

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())

    same_namespace = pod["metadata"]["namespace"] == policy["metadata"]["namespace"]
    labels = pod["metadata"].get("labels") or {}
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports):
            continue
        for peer in rule.get("from", []):
            if "namespaceSelector" in peer:
                in_namespace = matches(peer["namespaceSelector"], namespace_labels)
            else:
                in_namespace = same_namespace
            if in_namespace and matches(peer.get("podSelector") or {}, labels):
                return True
    return False
