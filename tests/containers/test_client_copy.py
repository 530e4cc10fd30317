"""`report` copies off the claim in the container tier: the copy pod is a container of the released worker
image (pulled from the tier's registry), uid 65532 with a read-only root and the claim mounted read-only,
and the client reads the tar it writes through `pods/<name>/log` of the emulated API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.client import Client
from distillery.manifests import BuildConfig
from tests.harness.docker import DockerRuntime
from tests.support.chart import Images
from tests.support.client_world import (
    Operator,
    evaluate_job,
    fill_claim,
    job_document,
    succeeded_status,
    write_kubeconfig,
)

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

NS = "copy"
CLAIM = "tiny-data"


def test_report_and_student_come_off_the_claim_through_a_worker_container(
    make_cluster, runtime: DockerRuntime, images: Images, tmp_path: Path
):
    claim = tmp_path / "claim"
    claim.mkdir()
    cluster = make_cluster([NS], runtime=runtime, claims={CLAIM: claim})
    client = Client(kubeconfig=str(write_kubeconfig(cluster.url, NS, tmp_path / "kubeconfig")))
    body = client.submit(job_document("tiny", NS)).model_dump(mode="json", by_alias=True)
    job = client.get("tiny")
    cluster.api(NS).create(evaluate_job(job, BuildConfig(worker_image=images.worker)))
    Operator(cluster.url).write_status(body, succeeded_status(job))
    files = fill_claim(claim, job)
    before = len(cluster.records)

    copied = client.report("tiny", tmp_path / "out", student=True)

    for relative, content in files.items():
        assert (tmp_path / "out" / relative).read_bytes() == content, relative
    assert copied.summary == files["reports/evaluation.md"].decode()
    ran = [r for r in cluster.records[before:] if r.pod.split("/")[-1].startswith("tiny-copy-")]
    assert len(ran) == 2, [r.describe() for r in cluster.records]
    for record in ran:
        assert record.image == images.worker and record.user.split(":")[0] == "65532", record.describe()
        assert record.read_only_root, record.describe()
    assert cluster.api(NS).pods(**{"app.kubernetes.io/component": "copy"}) == []
