"""The Docker backend on a real engine: what a pod spec says is what the container gets.

Each pod runs a small Python program in the operator image that reports what it sees from
inside (its user, groups, capabilities, root filesystem, /dev/shm, cgroup limits, env,
mounted files, DNS) to the claim and its termination message; the tests compare that with
the pod spec. A few seconds a pod. Each image is pulled from the tier's loopback registry as its
pod's imagePullPolicy says; a pull that fails shows as the kubelet shows it.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import RestClient, api_path
from tests.harness.docker import DockerRuntime
from tests.harness.serviceaccount import SERVICE_ACCOUNT_PATH
from tests.support.chart import Images, assert_pulled_from_registry
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

NS = "rt"
CLAIM = "claim-a"
POD_DEADLINE = 120

# Run inside the pod: what the container sees, to /data/facts.json and (in short) its termination message.
FACTS = textwrap.dedent("""
    import errno, json, os, socket, sys
    def read(path):
        try:
            return open(path).read().strip()
        except OSError as error:
            return errno.errorcode[error.errno]
    def write(path):
        try:
            open(path, "w").write("x")
            return "ok"
        except OSError as error:
            return errno.errorcode[error.errno]
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    shm = os.statvfs("/dev/shm")
    sa = os.environ.get("SA", "/var/run/secrets/kubernetes.io/serviceaccount")
    facts = {
        "argv": sys.argv[1:], "cwd": os.getcwd(),
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
        "root_write": write("/written-to-root"), "tmp_write": write("/tmp/x"), "data_write": write("/data/x"),
        "shm_bytes": shm.f_blocks * shm.f_frsize,
        "memory_limit": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "cpu_quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "cpu_shares": read("/sys/fs/cgroup/cpu/cpu.shares"),
        "hostname": socket.gethostname(), "ip": socket.gethostbyname(socket.gethostname()),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("APP_", "FROM_", "POD_", "KUBERNETES_"))},
        "home": os.environ.get("HOME"), "path": os.environ.get("PATH"),
        "greeting": read("/etc/app/greeting"),
        "sa": {name: read(f"{sa}/{name}") for name in ("token", "ca.crt", "namespace")},
    }
    json.dump(facts, open("/data/facts.json", "w"))
    open("/dev/termination-log", "w").write(json.dumps({"uid": facts["uid"], "ok": True}))
""")


def facts_pod(name: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["python3", "-c", FACTS],
                    "args": ["--port", "8000", "$(APP_NAME)", "a b"],
                    "workingDir": "/data",
                    "env": [
                        {"name": "APP_NAME", "value": "facts"},
                        {
                            "name": "APP_GREETING",
                            "valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}},
                        },
                        {
                            "name": "APP_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "app", "key": "password"}},
                        },
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    ],
                    "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "FROM_"}],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "storage", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "shm", "mountPath": "/dev/shm"},
                        {"name": "config", "mountPath": "/etc/app"},
                    ],
                    **container,
                }
            ],
            "volumes": [
                {"name": "storage", "persistentVolumeClaim": {"claimName": CLAIM}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "config", "configMap": {"name": "app"}},
            ],
        },
    }


def pod_status(api: RestClient, name: str) -> dict[str, Any]:
    return (api.get("v1", "pods", name) or {}).get("status") or {}


def terminated(api: RestClient, name: str) -> dict[str, Any] | None:
    statuses = pod_status(api, name).get("containerStatuses") or [{}]
    return statuses[0].get("state", {}).get("terminated")


@pytest.fixture
def cluster(make_cluster, runtime: DockerRuntime, tmp_path: Path):
    claim = tmp_path / "claim"
    claim.mkdir()
    c = make_cluster([NS], runtime=runtime, claims={CLAIM: claim}, retry_delay=1, grace_seconds=10)
    api = c.api(NS)
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": NS},
            "data": {"greeting": "hello from a ConfigMap"},
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app", "namespace": NS},
            "stringData": {"password": "s3cret"},
        }
    )
    return c, api, claim


def test_pod_spec_is_what_the_container_gets(cluster, images: Images):
    c, api, claim = cluster
    api.create(facts_pod("facts", images.operator))
    state = wait_for(
        lambda: terminated(api, "facts"), "the facts pod to end", POD_DEADLINE, details=c.kubelet.diagnostics
    )
    assert state["exitCode"] == 0, (state, c.kubelet.diagnostics())
    assert json.loads(state["message"]) == {"uid": 65532, "ok": True}  # the termination message, read back
    facts = json.loads((claim / "facts.json").read_text())
    status = pod_status(api, "facts")
    print(json.dumps({k: v for k, v in facts.items() if k != "sa"}, indent=1))

    # command and args exactly as written ($(VAR) expanded by the kubelet), workingDir.
    assert facts["argv"] == ["--port", "8000", "facts", "a b"] and facts["cwd"] == "/data"
    # securityContext: user, groups (fsGroup), no capabilities, no privilege escalation, read-only root.
    assert (facts["uid"], facts["gid"]) == (65532, 65532) and 65532 in facts["groups"], facts
    assert int(facts["cap_eff"], 16) == 0 and facts["no_new_privs"] == "1", facts
    assert facts["root_write"] == "EROFS", facts
    assert facts["tmp_write"] == "ok" and facts["data_write"] == "ok", facts
    # The claim is the host directory, group-owned by fsGroup as the kubelet makes it.
    assert (claim / "x").read_text() == "x" and claim.stat().st_gid == 65532
    assert (claim / "x").stat().st_uid == 65532
    # The memory emptyDir at /dev/shm has the size the pod asks for; the limits are the cgroup's.
    assert facts["shm_bytes"] == 256 * 2**20, facts
    assert facts["memory_limit"] == str(256 * 2**20), facts
    assert facts["cpu_quota"] == "50000" and facts["cpu_shares"] == "256", facts
    # env, envFrom (prefix), secretKeyRef, the downward API; the pod's own name and address.
    env = facts["env"]
    assert env["APP_GREETING"] == "hello from a ConfigMap" and env["FROM_greeting"] == env["APP_GREETING"]
    assert env["APP_PASSWORD"] == "s3cret" and env["POD_NAME"] == "facts" == facts["hostname"]
    assert env["POD_IP"] == status["podIP"] == facts["ip"] and facts["ip"] != c.runtime.gateway, (env, status)
    assert facts["home"] == "/tmp" and "/opt/distillery/bin" in facts["path"]  # the image's ENV underneath
    assert facts["greeting"] == "hello from a ConfigMap"
    # API access as a pod has it: the token, the CA and the namespace; the `kubernetes` Service's env.
    assert facts["sa"] == {
        "token": c.front.access.token,
        "ca.crt": c.front.access.ca_pem.strip(),
        "namespace": NS,
    }
    assert env["KUBERNETES_SERVICE_HOST"] == c.front.access.host
    assert env["KUBERNETES_SERVICE_PORT"] == str(c.front.access.port)
    pod = api.get("v1", "pods", "facts")
    assert any(m["mountPath"] == SERVICE_ACCOUNT_PATH for m in pod["spec"]["containers"][0]["volumeMounts"])
    record = next(r for r in c.runtime.records if r.pod == f"{NS}/facts")
    assert record.user == "65532:65532" and record.image == images.operator
    assert_pulled_from_registry(images, [record], c.runtime.pulls)  # from the registry, once


def waiting(api: RestClient, name: str) -> tuple[str, str] | None:
    statuses = pod_status(api, name).get("containerStatuses") or [{}]
    state = statuses[0].get("state", {}).get("waiting")
    return (state["reason"], state.get("message", "")) if state else None


def test_a_failed_pull_and_never_pull_wait_as_the_kubelet_shows_them(cluster, images: Images):
    c, api, _ = cluster
    missing = f"{images.registry}/operator:no-such-tag"  # the registry answers: no such manifest
    absent = f"{images.registry}/operator:never-pulled"
    api.create(facts_pod("unpullable", missing))
    api.create(facts_pod("never", absent, imagePullPolicy="Never"))
    seen: set[tuple[str, str]] = set()

    def back_off_shown() -> bool:
        state = waiting(api, "unpullable")
        if state:
            seen.add(state)
        return {reason for reason, _ in seen} >= {"ErrImagePull", "ImagePullBackOff"}

    wait_for(
        back_off_shown, "ErrImagePull, then ImagePullBackOff", POD_DEADLINE, details=c.kubelet.diagnostics
    )
    (message,) = {message for reason, message in seen if reason == "ErrImagePull"}
    assert message.startswith(f'failed to pull image "{missing}": ') and "manifest unknown" in message, (
        message
    )
    back_off = {message for reason, message in seen if reason == "ImagePullBackOff"}
    assert back_off == {f'Back-off pulling image "{missing}": ErrImagePull: {message}'}, back_off
    assert waiting(api, "never") == (
        "ErrImageNeverPull",
        f'Container image "{absent}" is not present with pull policy of Never',
    )
    assert missing not in c.runtime.pulls and absent not in c.runtime.pulls
    assert not [r for r in c.runtime.records if r.pod in (f"{NS}/unpullable", f"{NS}/never")]


def test_run_as_non_root_refuses_an_image_that_runs_as_root(cluster, images: Images, runtime: DockerRuntime):
    c, api, _ = cluster
    root_image = f"{images.local_operator.split(':')[0]}:tier-root"  # built here: present, not pulled
    subprocess.run(
        runtime.docker.argv(
            ["build", "--quiet", "--label", "distillery.test.harness=root-image", "-t", root_image, "-"]
        ),
        input=f"FROM {images.local_operator}\nUSER 0:0\n",
        text=True,
        check=True,
        env={**runtime.docker.env, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
    )
    pod = facts_pod("as-root", root_image)
    del pod["spec"]["securityContext"]["runAsUser"], pod["spec"]["securityContext"]["runAsGroup"]
    api.create(pod)

    def waiting() -> dict[str, Any] | None:
        statuses = pod_status(api, "as-root").get("containerStatuses") or [{}]
        return (
            statuses[0].get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
            and statuses[0]
        )

    status = wait_for(waiting, "CreateContainerConfigError", POD_DEADLINE, details=c.kubelet.diagnostics)
    assert "runAsNonRoot and image will run as root" in status["state"]["waiting"]["message"], status
    assert not [r for r in c.runtime.records if r.pod == f"{NS}/as-root"], "a container was started"


def test_exit_code_and_log_tail_as_termination_message(cluster, images: Images):
    c, api, _ = cluster
    program = "import sys; print('line one'); print('the reason it failed', file=sys.stderr); sys.exit(3)"
    pod = facts_pod(
        "fails",
        images.operator,
        command=["python3", "-c", program],
        args=[],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    api.create(pod)
    state = wait_for(
        lambda: terminated(api, "fails"),
        "the failing pod to end",
        POD_DEADLINE,
        details=c.kubelet.diagnostics,
    )
    assert state["exitCode"] == 3 and state["reason"] == "Error", state
    assert "the reason it failed" in state["message"], state
    assert pod_status(api, "fails")["phase"] == "Failed"


WEB = textwrap.dedent("""
    import http.server, os
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{os.environ['POD_NAME']} {self.path}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args): pass
    http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
""")
CLIENT = textwrap.dedent("""
    import json, sys, urllib.request
    answers = [urllib.request.urlopen(url, timeout=10).read().decode() for url in sys.argv[1:]]
    open("/dev/termination-log", "w").write(json.dumps(answers))
""")


def test_probes_service_names_and_signals(cluster, images: Images):
    c, api, _ = cluster
    container = {
        "name": "web",
        "image": images.operator,
        "command": ["python3", "-c", WEB],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "startupProbe": {
            "exec": {"command": ["python3", "-c", "import os; os.stat('/proc/1')"]},
            "periodSeconds": 1,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
        "securityContext": {"runAsUser": 65532, "readOnlyRootFilesystem": True},
    }
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 3, "containers": [container]},
                },
            },
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        }
    )
    (web,) = wait_for(
        lambda: [p for p in c.kubelet.pods() if p.owner == "Deployment/web" and p.ready] or None,
        "the web pod to be ready (startup, readiness and liveness probes)",
        POD_DEADLINE,
        details=c.kubelet.diagnostics,
    )
    address = wait_for(lambda: pod_status(api, web.name).get("podIP"), "the web pod's address", 30)

    # The Service by its short name (the pod's DNS search path), its namespaced and full names.
    urls = ["http://web/a", f"http://web.{NS}:80/b", f"http://web.{NS}.svc.cluster.local/c"]
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": NS},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "client",
                        "image": images.operator,
                        "command": ["python3", "-c", CLIENT],
                        "args": urls,
                    }
                ],
            },
        }
    )
    state = wait_for(
        lambda: terminated(api, "client"), "the client pod", POD_DEADLINE, details=c.kubelet.diagnostics
    )
    assert state["exitCode"] == 0, (state, c.kubelet.diagnostics())
    assert json.loads(state["message"]) == [f"{web.name} /a", f"{web.name} /b", f"{web.name} /c"]
    client = api.get("v1", "pods", "client")
    assert not client["spec"].get("volumes"), "automountServiceAccountToken: false still got a token volume"

    # SIGKILL (a crash): exit code 137, restarted in place with the pod's address kept.
    c.kubelet.kill(web.name)
    wait_for(
        lambda: (
            next(p for p in c.kubelet.pods() if p.name == web.name).restarts == 1
            and pod_status(api, web.name).get("containerStatuses", [{}])[0].get("ready")
        ),
        "the killed web container to be back and ready",
        POD_DEADLINE,
        details=c.kubelet.diagnostics,
    )
    assert next(p for p in c.kubelet.pods() if p.name == web.name).exit_codes == [137]
    assert pod_status(api, web.name)["podIP"] == address

    # Scaled to zero: SIGTERM goes to PID 1, which (Python with no handler, as PID 1) ignores it:
    # the kubelet kills it after terminationGracePeriodSeconds, as in a cluster.
    started = time.monotonic()
    api.call("PATCH", api_path("apps/v1", "deployments", NS, "web"), {"spec": {"replicas": 0}})
    wait_for(
        lambda: next(p for p in c.kubelet.pods() if p.name == web.name).pid is None,
        "the web pod to stop",
        60,
        details=c.kubelet.diagnostics,
    )
    elapsed = time.monotonic() - started
    assert next(p for p in c.kubelet.pods() if p.name == web.name).exit_codes == [137, 137]
    assert 2.5 < elapsed < 30, elapsed
