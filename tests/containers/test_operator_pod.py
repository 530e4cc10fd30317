"""The operator as the chart deploys it, from its image, logging in as a pod does.

`helm template` with the chart's defaults and only the image names set; its Deployment (and
Service) are applied to the emulator, and the harness runs the operator's pod as a container:
the chart's command, args, env, probes, security context and /tmp volume, as uid 65532 with a
read-only root. Its API access is a pod's: the service-account token, ca.crt and namespace
mounted at /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT, so
the official client's in-cluster login (through kopf's) is what connects it, over HTTPS to a
front that refuses requests without the token. The chart's startup, liveness and readiness
probes (/healthz, /readyz) must pass. Then a DistillationJob whose inputs are missing: the
operator creates its check Job, whose pod runs in the worker image, and the job fails with
the check's message, which the operator read from that pod's termination message. The chart names the images in
the tier's loopback registry (`imageRegistry`), from which the operator's pod and the check's
pull them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.harness import api_path
from tests.harness.docker import DockerRuntime
from tests.support.chart import Images, assert_pulled_from_registry, chart_objects
from tests.support.cluster import start_cluster
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

RELEASE_NAMESPACE = "distillery-system"
JOBS_NAMESPACE = "ml"
DJ = ("distillery.dev/v1alpha1", "distillationjobs")
ROOT = Path(__file__).resolve().parents[2]
READY_DEADLINE = 180


def test_chart_operator_pod_logs_in_as_a_pod_and_runs_a_job(runtime: DockerRuntime, images: Images, tmp_path):
    objects = chart_objects(images, RELEASE_NAMESPACE)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images.operator
    with start_cluster(
        tmp_path, [RELEASE_NAMESPACE, JOBS_NAMESPACE], runtime=runtime, retry_delay=2
    ) as cluster:
        system, jobs = cluster.api(RELEASE_NAMESPACE), cluster.api(JOBS_NAMESPACE)
        for obj in objects:
            if obj["kind"] in ("Deployment", "Service"):
                system.create(obj)

        def details() -> str:
            return (
                f"refused by the API front: {cluster.front.rejected[-10:]}\n{cluster.kubelet.diagnostics()}"
            )

        (pod,) = wait_for(
            lambda: (
                [p for p in cluster.kubelet.pods() if p.owner.startswith("Deployment/") and p.ready] or None
            ),
            "the operator pod to pass its startup and readiness probes (/healthz, /readyz)",
            READY_DEADLINE,
            details=details,
        )
        record = next(r for r in cluster.records if r.pod == f"{RELEASE_NAMESPACE}/{pod.name}")
        print(f"\n{record.describe()}")
        assert record.user == "65532:65532" and record.uid == 65532 and record.read_only_root, record
        # In-cluster login: every request carried the mounted token (the front refuses others).
        assert cluster.front.forwarded > 0 and not cluster.front.rejected, details()

        job = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
        job["metadata"]["namespace"] = JOBS_NAMESPACE
        job["spec"]["storage"] = {"pvc": {"claimName": "tiny-data"}}  # an empty claim: no inputs
        jobs.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "tiny-data", "namespace": JOBS_NAMESPACE},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Bound"},
            }
        )
        jobs.call("POST", api_path(*DJ, JOBS_NAMESPACE), job)

        def failed() -> dict | None:
            assert not cluster.front.rejected, (
                details()
            )  # an API server answers 401 to requests without the token
            status = (jobs.get(*DJ, "tiny") or {}).get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = wait_for(failed, "the job to fail its input check", READY_DEADLINE, details=details)
        print(f"job status: {json.dumps(status)[:600]}")
        assert "spec.data.train" in status["message"] and "data/train.jsonl" in status["message"], status
        check = next(r for r in cluster.records if r.pod.startswith(f"{JOBS_NAMESPACE}/tiny-check"))
        assert check.image == images.worker and check.user == "65532:65532", check
        # Both images named in the tier's registry (the chart's imageRegistry, the operator's
        # worker image from it), each pulled from there once.
        assert_pulled_from_registry(images, cluster.records, runtime.pulls)
        assert not cluster.front.rejected, details()
        made = [
            r
            for r in list(cluster.emulator)
            if str(getattr(r.method, "value", r.method)).upper() == "POST"
            and r.headers.get("User-Agent", "").startswith("distillery-operator")
        ]
        assert made, "the operator created nothing through its own API client"
