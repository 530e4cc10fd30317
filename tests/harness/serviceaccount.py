"""A pod's access to the API server, as a cluster gives it: what the ServiceAccount admission
plugin adds to a Pod, the root CA publisher's ConfigMap, and the kubelet's master-Service env.

When the `Kubelet` is given an `ApiAccess` (the address of an API server front the pods can
reach, its CA and the token it accepts), every Pod it creates gets, unless
`automountServiceAccountToken: false`:
- a projected volume `kube-api-access-<x>` (service-account token, `ca.crt` from the
  `kube-root-ca.crt` ConfigMap, `namespace` from the downward API) mounted read-only at
  /var/run/secrets/kubernetes.io/serviceaccount in each container, as admission adds it;
- the ConfigMap `kube-root-ca.crt` in its namespace (the root CA publisher's), made if absent;
and each container gets KUBERNETES_SERVICE_HOST/PORT (the kubelet's env for the `kubernetes`
Service). That is everything the official client's in-cluster login reads.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from tests.harness.rest import ApiClient, api_path

SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION_SECONDS = 3607  # what admission asks for


@dataclass(frozen=True)
class ApiAccess:
    """Where pods reach the API server (https), the CA that signed its certificate, the token it accepts."""

    host: str
    port: int
    ca_pem: str
    token: str

    def env(self) -> dict[str, str]:
        """The kubelet's variables for the `kubernetes` Service (the ones the in-cluster login reads)."""
        return {
            "KUBERNETES_SERVICE_HOST": self.host,
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.port),
            "KUBERNETES_PORT": f"tcp://{self.host}:{self.port}",
        }


def admit(pod: dict[str, Any]) -> dict[str, Any]:
    """The Pod as the ServiceAccount admission plugin stores it: serviceAccountName defaulted and,
    unless the pod opts out, the token volume added and mounted in every container."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    if spec.get("automountServiceAccountToken") is False:
        return pod
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if any(
        m.get("mountPath") == SERVICE_ACCOUNT_PATH for c in containers for m in c.get("volumeMounts") or []
    ):
        return pod  # the pod mounts its own
    suffix = hashlib.sha256(pod["metadata"]["name"].encode()).hexdigest()[:5]
    name = f"kube-api-access-{suffix}"
    spec.setdefault("volumes", []).append(
        {
            "name": name,
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                    {
                        "configMap": {
                            "name": ROOT_CA_CONFIGMAP,
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    for container in containers:
        container.setdefault("volumeMounts", []).append(
            {"name": name, "mountPath": SERVICE_ACCOUNT_PATH, "readOnly": True}
        )
    return pod


async def publish_root_ca(api: ApiClient, namespace: str, access: ApiAccess) -> None:
    """The root CA publisher: ConfigMap kube-root-ca.crt in the namespace, made if absent."""
    path = api_path("v1", "configmaps", namespace, ROOT_CA_CONFIGMAP)
    if await api.request("GET", path, missing_ok=True) is not None:
        return
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace},
        "data": {"ca.crt": access.ca_pem},
    }
    await api.request("POST", api_path("v1", "configmaps", namespace), body)
