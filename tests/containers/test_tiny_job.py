"""examples/tiny.yaml end to end, every pod a container of the images, the operator's included.

The operator is the chart's Deployment (defaults, image names only) running in its image and
logging in as a pod (service-account token, CA, KUBERNETES_SERVICE_*; an HTTPS front that
refuses requests without the token). The job is examples/tiny.yaml with `spec.teacher.image`
set to the CPU worker image, on a claim that holds the tiny models and prompts: its check,
teacher (vLLM), generation shards, training and evaluation pods run as containers of the worker
image, with the security context, volumes and env the operator's manifests give them, each
command exactly as the manifest writes it. What stands in: the API server (kmock's emulator)
and the node (tests/harness: scheduling, the kubelet, the Job/Deployment controllers,
kube-proxy and cluster DNS for Docker).

Resilience, in the same run: once a generation shard has written part of its records, it is
frozen, the operator's container is SIGKILLed (the kubelet restarts it after its back-off) and
the shard's container is SIGKILLed; the Job controller replaces the shard's pod, which resumes.
The job must succeed with every child created once (counted at the emulator) and every input
record answered exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import Cluster, Images, chart_objects, start_cluster, wait_for
from tests.e2e.test_operator_e2e import (
    CLAIM,
    DJ,
    NAMESPACE,
    assert_each_input_answered_once,
    creations,
    partial_records,
    shard_size,
    tiny_job,
)
from tests.harness import api_path
from tests.harness.docker import DockerRuntime

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

RELEASE_NAMESPACE = "distillery-system"
OPERATOR_READY_DEADLINE = 180
GENERATING_DEADLINE = 420  # the check pod, then vLLM's start in a container on 2 busy cores
SUCCEEDED_DEADLINE = 900
CHILDREN = [("apps/v1/deployments", "tiny-teacher"), ("v1/services", "tiny-teacher"),
            ("batch/v1/jobs", "tiny-check"), ("batch/v1/jobs", "tiny-generate"),
            ("batch/v1/jobs", "tiny-train"), ("batch/v1/jobs", "tiny-evaluate")]  # fmt: skip


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models: dict[str, Path]) -> Path:
    """The claim: the session's tiny models (copied: a link would point outside the container) and prompts."""
    import prepare_tiny  # hack/ is on sys.path (tests/conftest.py)

    root = tmp_path_factory.mktemp("tiny-claim")
    for name in ("teacher", "student"):
        shutil.copytree(tiny_models[name], root / "models" / name, symlinks=False)
    prepare_tiny.write_data(root)
    return root


def operator_posts(emulator: Any) -> Counter:
    """(resource, name) of every object the operator POSTed (not Events or its Lease)."""
    return Counter(
        (r.resource.plural, r.data["metadata"]["name"])
        for r in list(emulator)
        if str(getattr(r.method, "value", r.method)).upper() == "POST" and r.resource is not None
        and r.resource.plural not in ("events", "leases") and r.headers.get("User-Agent", "").startswith("distillery-operator")
    )  # fmt: skip


def start_operator(cluster: Cluster, images: Images) -> Any:
    system = cluster.api(RELEASE_NAMESPACE)
    for obj in chart_objects(images, RELEASE_NAMESPACE):
        if obj["kind"] in ("Deployment", "Service"):
            system.create(obj)
    (pod,) = wait_for(
        lambda: [p for p in cluster.kubelet.pods() if p.namespace == RELEASE_NAMESPACE and p.ready] or None,
        "the operator pod to be ready",
        OPERATOR_READY_DEADLINE,
        cluster.kubelet.diagnostics,
    )
    return pod


def test_tiny_job_in_containers_survives_operator_and_shard_kills(
    runtime: DockerRuntime, images: Images, storage: Path, tmp_path: Path
):
    shutil.rmtree(storage / "jobs", ignore_errors=True)
    started = time.monotonic()
    namespaces = [RELEASE_NAMESPACE, NAMESPACE]
    with start_cluster(runtime, tmp_path, namespaces, claims={CLAIM: storage}, retry_delay=2) as cluster:
        api = cluster.api(NAMESPACE)

        def status() -> dict[str, Any]:
            return (api.get(*DJ, "tiny") or {}).get("status") or {}

        def details() -> str:
            return (f"job status: {json.dumps(status(), indent=1)[:3000]}\n"
                    f"refused by the API front: {cluster.front.rejected[-5:]}\n{cluster.kubelet.diagnostics()}")  # fmt: skip

        operator = start_operator(cluster, images)
        job = tiny_job()
        job["spec"]["teacher"]["image"] = images.worker
        api.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": NAMESPACE},
                    "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
                    "status": {"phase": "Bound"}})  # fmt: skip
        api.call("POST", api_path(*DJ, NAMESPACE), job)

        # 1. Mid-generation: a shard running with some, but at most half, of its records written.
        sizes = {index: shard_size(job, storage, index) for index in (0, 1)}

        def shard_mid_way() -> Any:
            written = partial_records(storage)
            running = [p for p in cluster.kubelet.pods() if p.owner == "Job/tiny-generate" and p.pid]
            return next((p for p in running if 0 < written.get(p.index, 0) <= sizes[p.index] // 2), None)

        victim = wait_for(shard_mid_way, "a generation shard mid-way", GENERATING_DEADLINE, details)
        generating_at = time.monotonic() - started
        cluster.kubelet.kill(victim.name, signal.SIGSTOP)  # frozen: still mid-shard below
        assert status().get("phase") == "Generating", details()

        # 2. The operator's container is SIGKILLed, then the frozen shard's.
        cluster.kubelet.kill(operator.name, signal.SIGKILL)
        cluster.kubelet.kill(victim.name, signal.SIGKILL)

        # 3. The Job controller replaces the shard's pod; the kubelet restarts the operator's container.
        wait_for(lambda: [p for p in cluster.kubelet.pods() if p.index == victim.index and p.name != victim.name],
                 f"a replacement pod for shard {victim.index}", 60, details)  # fmt: skip
        wait_for(lambda: next(p for p in cluster.kubelet.pods() if p.name == operator.name).restarts == 1,
                 "the operator's container to be started again", 60, details)  # fmt: skip

        # 4. The job succeeds.
        final = wait_for(lambda: status() if status().get("phase") in ("Succeeded", "Failed") else None,
                         "the DistillationJob to finish", SUCCEEDED_DEADLINE, details)  # fmt: skip
        finished_at = time.monotonic() - started
        print(
            f"\ntiny job in containers: Generating at {generating_at:.0f} s, {final['phase']} at {finished_at:.0f} s"
        )
        print("every container the kubelet started (image, user, the ids /proc showed, root filesystem):")
        for record in cluster.records:
            print(f"  {record.describe()}")
        assert final["phase"] == "Succeeded", details()
        pods = cluster.kubelet.pods()

        conditions = {c["type"]: (c["status"], c["reason"]) for c in final.get("conditions") or []}
        for kind in ("DataGenerated", "StudentTrained", "Evaluated", "QualityGatePassed"):
            assert conditions.get(kind, ("",))[0] == "True", (kind, final)
        assert final["evaluation"]["gatePassed"] is True, final

        # The report and the student are on the claim, where the status says.
        mount = job["spec"]["storage"].get("mountPath", "/data")
        artifacts = final["artifacts"]
        report, student = (storage / os.path.relpath(artifacts[key], mount) if artifacts[key].startswith("/")
                           else storage / artifacts[key] for key in ("report", "student"))  # fmt: skip
        assert report.is_file(), (artifacts, report)
        assert (student / "config.json").is_file() and list(student.glob("*.safetensors")), student

        # Every pod of the job ran in the worker image as 65532, the operator's in its image (started
        # twice: the SIGKILL), each with the read-only root the manifests and the chart ask for.
        job_records = [r for r in cluster.records if r.pod.startswith(f"{NAMESPACE}/")]
        assert job_records and all(r.image == images.worker and r.user == "65532:65532" for r in job_records)
        assert {r.uid for r in job_records} <= {65532, None} and any(r.uid == 65532 for r in job_records)
        assert {r.pod.split("/")[1].rsplit("-", 1)[0] for r in job_records} >= {
            "tiny-check", "tiny-generate-0", "tiny-generate-1", "tiny-train", "tiny-evaluate"}, job_records  # fmt: skip
        assert any(r.pod.startswith(f"{NAMESPACE}/tiny-teacher-") for r in job_records), job_records
        operator_records = [r for r in cluster.records if r.pod.startswith(f"{RELEASE_NAMESPACE}/")]
        assert len(operator_records) == 2 and all(r.image == images.operator for r in operator_records)
        assert all(r.read_only_root for r in cluster.records), [
            r for r in cluster.records if not r.read_only_root
        ]

        # The teacher is gone after generation: its container stopped, the Deployment at 0 or deleted.
        teacher = api.get("apps/v1", "deployments", "tiny-teacher")
        assert teacher is None or teacher["spec"].get("replicas") == 0, teacher
        teacher_pods = [p for p in pods if p.owner == "Deployment/tiny-teacher"]
        assert teacher_pods and all(p.pid is None for p in teacher_pods), teacher_pods

        # No duplicate children though the operator ran twice: each created once, POSTed once.
        for resource, name in CHILDREN:
            assert creations(cluster.emulator, resource, name) == 1, (resource, name)
        posts = operator_posts(cluster.emulator)
        assert all(count == 1 for count in posts.values()), posts
        assert next(p for p in pods if p.name == operator.name).exit_codes == [137]
        assert not cluster.front.rejected, cluster.front.rejected

        # The killed shard was replaced once and resumed; the other shard ran once.
        generate = api.get("batch/v1", "jobs", "tiny-generate")["status"]
        assert generate.get("failed") == 1 and generate.get("succeeded") == 2, generate
        shard_pods = [p for p in pods if p.owner == "Job/tiny-generate"]
        assert sorted(p.index for p in shard_pods) == sorted([0, 1, victim.index]), shard_pods
        assert next(p for p in shard_pods if p.name == victim.name).exit_codes == [137]
        replacement = next(p for p in shard_pods if p.index == victim.index and p.name != victim.name)
        (replacement_pod,) = [p for p in api.items("v1", "pods") if p["metadata"]["name"] == replacement.name]
        resumed = json.loads(
            replacement_pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        )
        assert resumed["resumed"] > 0, resumed

    assert_each_input_answered_once(job, storage)
