"""examples/tiny.yaml end to end, every pod a container of the images, the operator's included.

The operator is the chart's Deployment (defaults, image names only) running in its image and
logging in as a pod (service-account token, CA, KUBERNETES_SERVICE_*; an HTTPS front that
refuses requests without the token). The job is examples/tiny.yaml with `spec.teacher.image`
set to the CPU worker image (named in the tier's loopback registry, the chart's imageRegistry,
from which every pod pulls its image), on a claim that holds the tiny models and prompts: its check,
teacher (vLLM), generation shards, training and evaluation pods run as containers of the worker
image, with the security context, volumes and env the operator's manifests give them, each
command exactly as the manifest writes it. What stands in: the API server (kmock's emulator)
and the node (tests/harness: scheduling, the kubelet, the Job/Deployment controllers,
kube-proxy and cluster DNS for Docker).

Resilience, in the same run: the kill-and-recover scenario (tests/support/recovery.py, which the
e2e tier runs on the process runtime): once a generation shard has written part of its records, it is
frozen, the operator's container is SIGKILLed (the kubelet restarts it after its back-off) and
the shard's container is SIGKILLed; the Job controller replaces the shard's pod, which resumes.
The job must succeed with every child created once (counted at the emulator) and every input
record answered exactly once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.harness.docker import DockerRuntime
from tests.support.chart import RELEASE_NAMESPACE, Images, assert_pulled_from_registry
from tests.support.cluster import start_cluster
from tests.support.probes import operator_posts
from tests.support.recovery import ChartOperator, assert_recovered, kill_and_recover
from tests.support.tiny import CLAIM, NAMESPACE, prepare_claim, tiny_job

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

OPERATOR_READY_DEADLINE = 180
GENERATING_DEADLINE = 420  # the check pod, then vLLM's start in a container on 2 busy cores
SUCCEEDED_DEADLINE = 900


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models: dict[str, Path]) -> Path:
    """The claim: the session's tiny models (copied: a link would point outside the container) and prompts."""
    return prepare_claim(tmp_path_factory.mktemp("tiny-claim"), tiny_models, copy_models=True)


def test_tiny_job_in_containers_survives_operator_and_shard_kills(
    runtime: DockerRuntime, images: Images, storage: Path, tmp_path: Path
):
    shutil.rmtree(storage / "jobs", ignore_errors=True)
    namespaces = [RELEASE_NAMESPACE, NAMESPACE]
    with start_cluster(
        tmp_path, namespaces, runtime=runtime, claims={CLAIM: storage}, retry_delay=2
    ) as cluster:
        operator = ChartOperator(cluster, images, OPERATOR_READY_DEADLINE)
        job = tiny_job()
        job["spec"]["teacher"]["image"] = images.worker
        recovery = kill_and_recover(
            cluster,
            operator,
            storage,
            job,
            generating_deadline=GENERATING_DEADLINE,
            succeeded_deadline=SUCCEEDED_DEADLINE,
        )
        final, generating_at, finished_at = recovery.status, recovery.generating_at, recovery.finished_at
        print(
            f"\ntiny job in containers: Generating at {generating_at:.0f} s, {final['phase']} at {finished_at:.0f} s"
        )
        print("every container the kubelet started (image, user, the ids /proc showed, root filesystem):")
        for record in cluster.records:
            print(f"  {record.describe()}")
        # Success, the teacher gone, each child created once, the killed shard resumed, every input
        # answered once: what every backend shows.
        assert_recovered(cluster, operator, recovery, storage)
        pods = cluster.kubelet.pods()

        # The report and the student are on the claim, where the status says.
        mount = job["spec"]["storage"].get("mountPath", "/data")
        artifacts = final["artifacts"]
        report, student = (
            storage / os.path.relpath(artifacts[key], mount)
            if artifacts[key].startswith("/")
            else storage / artifacts[key]
            for key in ("report", "student")
        )
        assert report.is_file(), (artifacts, report)
        assert (student / "config.json").is_file() and list(student.glob("*.safetensors")), student

        # Every pod of the job ran in the worker image as 65532, the operator's in its image (started
        # twice: the SIGKILL), each with the read-only root the manifests and the chart ask for.
        job_records = [r for r in cluster.records if r.pod.startswith(f"{NAMESPACE}/")]
        assert job_records and all(r.image == images.worker and r.user == "65532:65532" for r in job_records)
        assert {r.uid for r in job_records} <= {65532, None} and any(r.uid == 65532 for r in job_records)
        assert {r.pod.split("/")[1].rsplit("-", 1)[0] for r in job_records} >= {
            "tiny-check",
            "tiny-generate-0",
            "tiny-generate-1",
            "tiny-train",
            "tiny-evaluate",
        }, job_records
        assert any(r.pod.startswith(f"{NAMESPACE}/tiny-teacher-") for r in job_records), job_records
        operator_records = [r for r in cluster.records if r.pod.startswith(f"{RELEASE_NAMESPACE}/")]
        assert len(operator_records) == 2 and all(r.image == images.operator for r in operator_records)
        # Every image (the teacher's too: the worker image) named in the registry, pulled from it once.
        assert_pulled_from_registry(images, cluster.records, runtime.pulls)
        assert all(r.read_only_root for r in cluster.records), [
            r for r in cluster.records if not r.read_only_root
        ]

        # No duplicate children though the operator ran twice: each POSTed once.
        posts = operator_posts(cluster.emulator)
        assert all(count == 1 for count in posts.values()), posts
        assert next(p for p in pods if p.name == operator.pod.name).exit_codes == [137]
        assert not cluster.front.rejected, cluster.front.rejected
