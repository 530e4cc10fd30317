"""Cluster DNS's rules for a pod's own names, as pure functions every runtime can use.

A pod's hostname is `spec.hostname`, else its name (cut to 63 characters, a DNS label). A pod that
also sets `spec.subdomain` gets an A record `<hostname>.<subdomain>.<ns>.svc.<cluster domain>` when a
headless Service (`clusterIP: None`) named like the subdomain, in the pod's namespace, selects it
(Kubernetes' "Pod's hostname and subdomain fields"; how an Indexed Job's pods reach each other, the
Job controller naming each pod's host `<job>-<index>`). Short forms resolve through the pod's search
path (`<ns>.svc.<cluster domain>` first), as `<hostname>.<subdomain>` does from a peer.

Not followed: readiness. The names answer from the pod's start, as `publishNotReadyAddresses: true`
makes a cluster answer them (what the training Service sets: its pods have no readiness probe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tests.harness.helpers import labels_match

CLUSTER_DOMAIN = "cluster.local"
HOSTNAME_LIMIT = 63  # a DNS label


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """The hostname the kubelet gives a pod's sandbox."""
    return ((pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"])[:HOSTNAME_LIMIT]


def pod_dns_names(pod: Mapping[str, Any], services: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names cluster DNS answers with this pod's address, given the Services that exist now:
    the fully qualified one and the one under `.svc` (what a search path expands a short name to)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    subdomain = spec.get("subdomain")
    if not subdomain:
        return []
    namespace = meta.get("namespace") or "default"
    for service in services:
        service_meta, service_spec = service["metadata"], service.get("spec") or {}
        if (
            service_meta["name"] == subdomain
            and (service_meta.get("namespace") or "default") == namespace
            and service_spec.get("clusterIP") == "None"
            and labels_match(service_spec.get("selector"), meta.get("labels") or {})
        ):
            host = f"{pod_hostname(pod)}.{subdomain}.{namespace}.svc"
            return [f"{host}.{CLUSTER_DOMAIN}", host]
    return []
