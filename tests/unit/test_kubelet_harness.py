"""The e2e tier's kubelet harness (tests/e2e/kubelet.py) on hand-written Jobs and Deployments.

The e2e result is only as good as the harness that plays the cluster, so these check that
it runs the manifest's command with the pod's volumes and environment, and writes back
what a kubelet and the Job/Deployment controllers would. Each workload is a tiny shell or
Python command; the whole module takes seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import kubelet as harness
from tests.e2e.kubelet import Kubelet

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NS = "ns1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Any, harness.RestClient, Kubelet, Path]]:
    storage = tmp_path / "storage"
    storage.mkdir()
    with harness.serve_emulator([NS]) as (emulator, url):
        kubelet = Kubelet(
            url, tmp_path / "kubelet", claims={"claim-a": storage}, retry_delay=0.1, grace_seconds=3
        )
        kubelet.start()
        try:
            yield emulator, harness.RestClient(url, NS), kubelet, storage
        finally:
            kubelet.stop()


def wait_for(
    condition: Callable[[], Any], what: str, kubelet: Kubelet | None = None, timeout: float = 30
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    details = "\n" + kubelet.diagnostics() if kubelet is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{details}")


def job(name: str, container: dict[str, Any], *, uid: str = "", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}"},
        "spec": {
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", **container}],
                    "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": "claim-a"}}],
                },
            },
        },
    }


def storage_mount() -> dict[str, Any]:
    return {"volumeMounts": [{"name": "storage", "mountPath": "/data"}], "workingDir": "/data"}


def finished(api: harness.RestClient, name: str) -> dict[str, Any] | None:
    obj = api.get("batch/v1", "jobs", name)
    status = (obj or {}).get("status") or {}
    if any(c["type"] in ("Complete", "Failed") for c in status.get("conditions") or []):
        return status
    return None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until reaped; read its state.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(stat.parent.name))
    return out


# ---------------------------------------------------------------- Jobs


def test_indexed_job_runs_each_index_with_volume_env_and_termination_message(cluster):
    emulator, api, kubelet, storage = cluster
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "greeting", "namespace": NS},
            "data": {"word": base64.b64encode(b"hello").decode()},
        }
    )
    script = (
        # $(WORD) is expanded by the kubelet before sh runs; $JOB_COMPLETION_INDEX by sh.
        "echo $(WORD) $JOB_COMPLETION_INDEX $(POD) > /data/out-$JOB_COMPLETION_INDEX.txt && "
        "pwd > /data/cwd-$JOB_COMPLETION_INDEX.txt && "
        "printf '{\"index\":%s}' $JOB_COMPLETION_INDEX > /dev/termination-log"
    )
    api.create(
        job(
            "shards",
            {
                "command": ["sh", "-c", script],
                **storage_mount(),
                "env": [
                    {"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "word"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
            },
            completionMode="Indexed",
            completions=3,
            parallelism=2,
        )
    )
    status = wait_for(lambda: finished(api, "shards"), "the Indexed Job to finish", kubelet)

    assert condition(status, "Complete") is not None, status
    assert status["succeeded"] == 3
    assert status["completedIndexes"] == "0-2"
    assert (
        "failed" not in status and "active" not in status
    )  # zero counts are omitted, as the API server does
    assert status["startTime"] and status["completionTime"]
    pods = api.pods(**{"job-name": "shards"})
    assert len(pods) == 3
    for pod in pods:
        labels = pod["metadata"]["labels"]
        index = int(labels["batch.kubernetes.io/job-completion-index"])
        assert labels["controller-uid"] == "uid-shards"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-shards"
        assert pod["status"]["phase"] == "Succeeded"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0
        assert json.loads(terminated["message"]) == {"index": index}
        name = pod["metadata"]["name"]
        assert re.fullmatch(rf"shards-{index}-[a-z0-9]{{5}}", name)
        assert (storage / f"out-{index}.txt").read_text().split() == ["hello", str(index), name]
        assert (storage / f"cwd-{index}.txt").read_text().strip() == str(storage)
    # parallelism 2: the Job never had more than two pods active at once.
    versions = emulator.objects["batch/v1/jobs", NS, "shards"].history
    actives = [(v.raw.get("status") or {}).get("active", 0) for v in versions if v is not None]
    assert max(actives) == 2, actives


def test_backoff_limit_fails_the_job_with_the_log_tail_as_message(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "broken",
            {
                "command": ["sh", "-c", "echo boom from $HOSTNAME; exit 3"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
            backoffLimit=1,
        )
    )
    status = wait_for(lambda: finished(api, "broken"), "the failing Job to finish", kubelet)

    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded", status
    assert status["failed"] == 2  # the first try and one retry
    assert "succeeded" not in status and "completionTime" not in status
    pods = api.pods(**{"job-name": "broken"})
    assert len(pods) == 2
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert pod["status"]["phase"] == "Failed"
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        assert terminated["message"].strip() == f"boom from {pod['metadata']['name']}"


def test_backoff_limit_per_index_fails_only_that_index(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "per-index",
            {"command": ["sh", "-c", '[ "$JOB_COMPLETION_INDEX" != 1 ]']},
            completionMode="Indexed",
            completions=3,
            parallelism=3,
            backoffLimitPerIndex=1,
        )
    )
    status = wait_for(lambda: finished(api, "per-index"), "the per-index Job to finish", kubelet)

    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "FailedIndexes", status
    assert status["completedIndexes"] == "0,2"
    assert status["failedIndexes"] == "1"
    assert status["succeeded"] == 2 and status["failed"] == 2
    by_index: dict[str, int] = {}
    for pod in api.pods(**{"job-name": "per-index"}):
        index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        by_index[index] = by_index.get(index, 0) + 1
    assert by_index == {"0": 1, "1": 2, "2": 1}


def test_max_failed_indexes_fails_the_job_at_once(cluster):
    _, api, kubelet, _ = cluster
    # Index 1 fails at once; index 0 would run for a minute: the Job must not wait for it.
    api.create(
        job(
            "fail-fast",
            {"command": ["sh", "-c", '[ "$JOB_COMPLETION_INDEX" = 1 ] && exit 1; exec sleep 60']},
            completionMode="Indexed",
            completions=2,
            parallelism=2,
            backoffLimitPerIndex=0,
            maxFailedIndexes=0,
        )
    )
    status = wait_for(lambda: finished(api, "fail-fast"), "the Job to fail", kubelet, timeout=20)
    assert condition(status, "Failed")["reason"] == "MaxFailedIndexesExceeded", status
    wait_for(lambda: all(p.pid is None for p in kubelet.pods()), "the running shard to be stopped", kubelet)


def test_killed_pod_is_replaced_and_the_replacement_resumes(cluster):
    _, api, kubelet, storage = cluster
    script = "if [ -f progress ]; then echo resumed > result; else touch progress; exec sleep 60; fi"
    api.create(job("resumable", {"command": ["sh", "-c", script], **storage_mount()}, backoffLimit=2))
    first = wait_for(
        lambda: [p for p in kubelet.pods() if p.pid and (storage / "progress").exists()],
        "the first pod to be running",
        kubelet,
    )[0]
    kubelet.kill(first.name)
    status = wait_for(lambda: finished(api, "resumable"), "the Job to finish after the kill", kubelet)

    assert condition(status, "Complete") is not None, status
    assert status["failed"] == 1 and status["succeeded"] == 1
    assert (storage / "result").read_text().strip() == "resumed"
    pods = {p.name: p for p in kubelet.pods()}
    assert pods[first.name].exit_codes == [137]  # 128 + SIGKILL, as a container runtime reports it
    assert not alive(first.pid)


def test_deleting_a_job_stops_its_processes_and_deletes_its_pods(cluster):
    _, api, kubelet, storage = cluster
    # A child in the container's process group, and one that left it (as vLLM servers do).
    script = "sleep 60 & setsid sleep 61 & echo $! > escaped.pid; sleep 60"
    api.create(job("doomed", {"command": ["sh", "-c", script], **storage_mount()}))
    pid = wait_for(lambda: next((p.pid for p in kubelet.pods() if p.pid), None), "the pod to run", kubelet)
    escaped = int(wait_for(lambda: (storage / "escaped.pid").exists() and (storage / "escaped.pid").read_text(),
                           "the escaped child's pid", kubelet))  # fmt: skip
    assert alive(escaped) and os.getpgid(escaped) != pid
    api.call("DELETE", harness.api_path("batch/v1", "jobs", NS, "doomed"))

    wait_for(lambda: not api.pods(**{"job-name": "doomed"}), "the Job's pods to be deleted", kubelet)
    wait_for(lambda: not alive(pid), "the pod's process to end", kubelet)
    # Every process of the container ends, as with a cgroup: its group and the escaped child.
    assert group_members(pid) == []
    wait_for(lambda: not alive(escaped), "the escaped child to end", kubelet)


def test_missing_secret_holds_the_pod_until_it_exists(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "needs-secret",
            {
                "command": ["sh", "-c", 'printf "$TOKEN" > /dev/termination-log'],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}],
            },
        )
    )

    def waiting_reason() -> str | None:
        pods = api.pods(**{"job-name": "needs-secret"})
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    wait_for(lambda: waiting_reason() == "CreateContainerConfigError", "CreateContainerConfigError", kubelet)
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later", "namespace": NS},
            "stringData": {"token": "s3cret"},
        }
    )
    status = wait_for(lambda: finished(api, "needs-secret"), "the Job to run once the Secret exists", kubelet)
    assert condition(status, "Complete") is not None, status
    pod = api.pods(**{"job-name": "needs-secret"})[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "s3cret"


def test_an_unemulated_job_feature_is_an_error_not_a_silent_run(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "policy",
            {"command": ["true"]},
            podFailurePolicy={
                "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]
            },
        )
    )
    wait_for(lambda: kubelet.errors, "the harness to refuse podFailurePolicy")
    assert "podFailurePolicy" in kubelet.errors[0]
    with pytest.raises(harness.HarnessError, match="podFailurePolicy"):
        kubelet.check()
    kubelet.errors.clear()  # checked: let the fixture's stop() pass


# ---------------------------------------------------------------- Deployments and Services

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

    wait_for(lambda: deployment_status().get("readyReplicas") == 1, "the Deployment to be ready", kubelet)
    status = deployment_status()
    assert status["observedGeneration"] == 1 and status["availableReplicas"] == 1
    assert condition(status, "Available")["status"] == "True"
    server = next(p for p in kubelet.pods() if p.owner == "Deployment/web")
    local_port = int(server.argv[server.argv.index("--port") + 1])
    assert local_port != 8000  # each pod listens on a port of its own

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
    wait_for(lambda: finished(api, "client"), "the client Job", kubelet)
    client = next(p for p in kubelet.pods() if p.owner == "Job/client")
    assert client.exit_codes == [0], kubelet.diagnostics()
    assert client.log.read_text().split("\n")[:2] == [f"/short from {local_port}", f"/long from {local_port}"]
    assert "127.0.0.1:" in client.argv[-1] and "web" not in client.argv[-1]

    api.call("PATCH", harness.api_path("apps/v1", "deployments", NS, "web"), {"spec": {"replicas": 0}})
    wait_for(lambda: not alive(server.pid), "the server process to stop at replicas 0", kubelet)
    wait_for(
        lambda: "readyReplicas" not in deployment_status() and not api.pods(app="web"),
        "the Deployment's pod to be deleted and its status to say so",
        kubelet,
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

    status = wait_for(restarted, "the crashing container to be restarted twice", kubelet)
    assert status["lastState"]["terminated"]["exitCode"] == 4
    assert status["lastState"]["terminated"]["message"].strip() == "dying"
    assert len(api.pods(app="crash")) == 1  # restarted in place, not replaced


# ---------------------------------------------------------------- pure helpers


def test_compress_indexes():
    assert harness.compress_indexes([]) == ""
    assert harness.compress_indexes([4, 0, 2, 1]) == "0-2,4"
    assert harness.compress_indexes([7]) == "7"


def test_expand_references_follows_the_kubelet():
    env = {"A": "1", "B": "two"}
    assert harness.expand_references("$(A)-$(B)-$(C)", env) == "1-two-$(C)"
    assert harness.expand_references("$$(A) costs $$5", env) == "$(A) costs $5"


def test_path_rewriter_replaces_whole_path_prefixes_only():
    rewrite = harness.path_rewriter({"/data": "/tmp/x", "/data/cache": "/tmp/c"})
    assert rewrite("/data") == "/tmp/x"
    assert rewrite("--storage=/data/jobs/a") == "--storage=/tmp/x/jobs/a"
    assert rewrite('{"path":"/data/cache/m"}') == '{"path":"/tmp/c/m"}'
    assert rewrite("/database /srv/data /data.bak") == "/database /srv/data /data.bak"


def test_service_rewriter_maps_every_dns_form_to_the_proxy():
    rewrite = harness.service_rewriter({("teacher", "ns1", 8000): 4321, ("web", "ns1", 80): 1234}, "ns1")
    assert rewrite("http://teacher:8000/v1") == "http://127.0.0.1:4321/v1"
    assert rewrite("http://teacher.ns1.svc.cluster.local:8000") == "http://127.0.0.1:4321"
    assert rewrite("http://web/x") == "http://127.0.0.1:1234/x"
    # Another port, another host, another namespace's short name: left alone.
    assert rewrite("http://teacher:80001 http://web:8080/ http://big-teacher:8000") == (
        "http://teacher:80001 http://web:8080/ http://big-teacher:8000"
    )
    assert harness.service_rewriter({("teacher", "ns2", 8000): 1}, "ns1")("teacher:8000") == "teacher:8000"


def test_remap_ports_gives_each_port_flag_a_local_port():
    ports: dict[int, int] = {}
    free = iter([5001, 5002])
    argv, env = harness.remap_ports(
        ["vllm", "--port", "8000", "--metrics-port=9090", "--max-tokens", "16", "--port", "0"],
        {"METRICS_PORT": "9090", "OTHER": "9090"},
        ports,
        lambda: next(free),
    )
    assert argv == ["vllm", "--port", "5001", "--metrics-port=5002", "--max-tokens", "16", "--port", "0"]
    assert env == {"METRICS_PORT": "5002", "OTHER": "9090"}
    assert ports == {8000: 5001, 9090: 5002}


def test_image_entrypoints_match_the_dockerfiles():
    """The harness runs an image's ENTRYPOINT for a container without command: keep them equal."""
    for dockerfile in (ROOT / "images").glob("*.Dockerfile"):
        entrypoint = re.search(r"^ENTRYPOINT (\[.*\])", dockerfile.read_text(), re.MULTILINE)
        name = f"distillery-{dockerfile.name.removesuffix('.Dockerfile')}"
        assert entrypoint, dockerfile
        assert harness.image_entrypoint(
            f"registry.local/x/{name}:dev", harness.IMAGE_ENTRYPOINTS
        ) == json.loads(entrypoint.group(1)), dockerfile
    assert harness.image_entrypoint("busybox:1.36", harness.IMAGE_ENTRYPOINTS) is None


def test_exit_code_of_a_signalled_process():
    assert harness.exit_code(-9) == 137 and harness.exit_code(3) == 3
    assert sys.platform.startswith("linux")  # process groups and /proc: the harness is Linux-only
