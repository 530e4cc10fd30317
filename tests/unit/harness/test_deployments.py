"""The harness's Deployment controller, Service proxy and probes on a hand-written web server."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from tests.harness import api_path
from tests.support.harness_workloads import NS, alive, condition, finished, job
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


SERVER = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.path} from {port}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_deployment_service_readiness_and_scale_to_zero(cluster):
    _, api, kubelet, _ = cluster
    labels = {"app": "web"}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS, "uid": "uid-web", "generation": 1},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "python",
                                "command": ["python3", "-c", SERVER],
                                "args": ["--port", "8000"],
                                "ports": [{"name": "http", "containerPort": 8000}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": "http"},
                                    "periodSeconds": 10,
                                },
                            }
                        ]
                    },
                },
            },
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }
    )

    def deployment_status() -> dict[str, Any]:
        return (api.get("apps/v1", "deployments", "web") or {}).get("status") or {}

    wait_for(
        lambda: deployment_status().get("readyReplicas") == 1,
        "the Deployment to be ready",
        30,
        details=kubelet.diagnostics,
    )
    status = deployment_status()
    assert status["observedGeneration"] == 1 and status["availableReplicas"] == 1
    assert condition(status, "Available")["status"] == "True"
    server = next(p for p in kubelet.pods() if p.owner == "Deployment/web")
    local_port = int(server.argv[server.argv.index("--port") + 1])
    assert local_port != 8000  # each pod listens on a port of its own
    # ... and is reached at its own address and the container port, as in a cluster (its podIP).
    pod_ip = api.pods(app="web")[0]["status"]["podIP"]
    assert pod_ip.startswith("127.0.") and pod_ip != "127.0.0.1"
    assert (
        urllib.request.urlopen(f"http://{pod_ip}:8000/direct", timeout=10).read()
        == f"/direct from {local_port}".encode()
    )

    fetch = (
        "import sys, urllib.request; [print(urllib.request.urlopen(u).read().decode()) for u in sys.argv[1:]]"
    )
    api.create(
        job(
            "client",
            {
                "command": [
                    "python3",
                    "-c",
                    fetch,
                    "http://web/short",
                    "http://web.ns1.svc.cluster.local:80/long",
                ],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
        )
    )
    wait_for(lambda: finished(api, "client"), "the client Job", 30, details=kubelet.diagnostics)
    client = next(p for p in kubelet.pods() if p.owner == "Job/client")
    assert client.exit_codes == [0], kubelet.diagnostics()
    assert client.log.read_text().split("\n")[:2] == [f"/short from {local_port}", f"/long from {local_port}"]
    assert "127.0.0.1:" in client.argv[-1] and "web" not in client.argv[-1]

    api.call("PATCH", api_path("apps/v1", "deployments", NS, "web"), {"spec": {"replicas": 0}})
    wait_for(
        lambda: not alive(server.pid),
        "the server process to stop at replicas 0",
        30,
        details=kubelet.diagnostics,
    )
    wait_for(
        lambda: "readyReplicas" not in deployment_status() and not api.pods(app="web"),
        "the Deployment's pod to be deleted and its status to say so",
        30,
        details=kubelet.diagnostics,
    )


def test_crashing_deployment_pod_restarts_in_place_with_its_last_state(cluster):
    _, api, kubelet, _ = cluster
    labels = {"app": "crash"}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "crash", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "busybox",
                                "command": ["sh", "-c", "echo dying >&2; exit 4"],
                                "terminationMessagePolicy": "FallbackToLogsOnError",
                            }
                        ]
                    },
                },
            },
        }
    )

    def restarted() -> dict[str, Any] | None:
        pods = api.pods(app="crash")
        status = (
            pods[0]["status"]["containerStatuses"][0]
            if pods and pods[0].get("status", {}).get("containerStatuses")
            else {}
        )
        return (
            status
            if status.get("restartCount", 0) >= 2 and status.get("lastState", {}).get("terminated")
            else None
        )

    status = wait_for(
        restarted, "the crashing container to be restarted twice", 30, details=kubelet.diagnostics
    )
    assert status["lastState"]["terminated"]["exitCode"] == 4
    assert status["lastState"]["terminated"]["message"].strip() == "dying"
    assert len(api.pods(app="crash")) == 1  # restarted in place, not replaced
