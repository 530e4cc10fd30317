"""Training on two nodes in containers: the training Job and its headless Service exactly as the manifests
build them for `training.nodes: 2`, created in the emulated cluster, each Indexed pod a container of the
CPU worker image (torchrun, c10d rendezvous at pod 0's name `<job>-0.<job>`, which pod 1 resolves through
cluster DNS as the harness plays it: tests/harness/dns.py, gloo, the tiny student).

- Every logged loss equals that of one pod taking the same global batch (two micro-batches accumulated).
- Pod 0 (the rendezvous host) SIGKILLed after the first checkpoint: its peer fails, the Job controller
  replaces both pods, and they resume together from the last checkpoint with no update logged twice.

The stages tier runs the same pods as local processes (tests/stages/test_train_multinode.py).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from distillery.api import DistillationJob
from distillery.manifests import BuildConfig, build
from distillery.storage import Layout
from distillery.training.checkpoints import Checkpoints
from tests.harness.docker import DockerRuntime
from tests.support.chart import Images
from tests.support.cluster import Cluster, start_cluster
from tests.support.harness_workloads import condition, finished
from tests.support.training import answer_records, make_job, toy_pairs, write_records
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

NAMESPACE = "nodes"
MOUNT = "/data"
TRAIN_DEADLINE = 300  # two pods' image start, torch import and a few hundred tiny updates on 2 busy cores


def claim_with(root: Path, tiny_models: dict[str, Path], name: str, records: int, seed: int) -> Path:
    """A claim directory holding the tiny student (copied: a link would point outside the container) and
    `records` generated training records of job `name`."""
    shutil.copytree(tiny_models["student"], root / "models" / "student")
    write_records(root, name, "train", answer_records(toy_pairs(records, seed=seed), "train"))
    return root


def container_job(name: str, claim: str, **training: Any) -> DistillationJob:
    """The tiny job on claim `claim` mounted at /data, its pods in the test's namespace."""
    document = make_job(
        name, Path(MOUNT) / "models" / "student", Path(MOUNT) / "models" / "teacher", gpus=0, **training
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    document["metadata"].update(namespace=NAMESPACE, uid=str(uuid.uuid5(uuid.NAMESPACE_URL, name)))
    document["spec"]["storage"] = {"mountPath": MOUNT, "pvc": {"claimName": claim}}
    return DistillationJob.model_validate(document)


def run_training(cluster: Cluster, job: DistillationJob, images: Images) -> tuple[str, float]:
    """Create the training children as the operator does (the Service first) and wait for the Job to
    complete: its name and the seconds from create to Complete."""
    config = BuildConfig(worker_image=images.worker)
    started = time.monotonic()
    create_training(cluster, job, config)
    name = build("train", job, config)["metadata"]["name"]
    wait_complete(cluster, name)
    return name, time.monotonic() - started


def wait_complete(cluster: Cluster, name: str) -> None:
    api = cluster.api(NAMESPACE)
    status = wait_for(
        lambda: finished(api, name),
        f"training Job {name} to finish",
        TRAIN_DEADLINE,
        details=cluster.kubelet.diagnostics,
    )
    assert condition(status, "Complete"), cluster.kubelet.diagnostics()


def create_training(cluster: Cluster, job: DistillationJob, config: BuildConfig) -> None:
    api = cluster.api(NAMESPACE)
    service = build("train-service", job, config)
    if service is not None:
        api.create(service)
    api.create(build("train", job, config))


def report_of(storage: Path, name: str) -> dict[str, Any]:
    return json.loads(Layout(storage, name).training_report.read_text())


def test_two_pods_in_containers_train_the_loss_of_one_pod_with_the_same_global_batch(
    runtime: DockerRuntime, images: Images, tiny_models: dict[str, Path], tmp_path: Path
):
    records = 512
    pair = claim_with(tmp_path / "pair", tiny_models, "pair", records, seed=31)
    alone = claim_with(tmp_path / "alone", tiny_models, "alone", records, seed=31)
    with start_cluster(
        tmp_path / "cluster",
        [NAMESPACE],
        runtime=runtime,
        claims={"pair": pair, "alone": alone},
        retry_delay=1,
    ) as cluster:
        two = container_job("pair", "pair", nodes=2, batchSize=8, gradientAccumulationSteps=1, epochs=1)
        one = container_job("alone", "alone", nodes=1, batchSize=8, gradientAccumulationSteps=2, epochs=1)
        two_name, two_seconds = run_training(cluster, two, images)
        _, one_seconds = run_training(cluster, one, images)
        pods = [p for p in cluster.kubelet.pods() if p.owner == f"Job/{two_name}"]
        records_of_pods = [r for r in cluster.records if r.pod.startswith(f"{NAMESPACE}/{two_name}-")]

    two_nodes, one_node = report_of(pair, "pair"), report_of(alone, "alone")
    print(
        f"\n2 pods x 1 process: {two_nodes['tokens_per_second']:,.0f} tok/s, Job done in {two_seconds:.1f} s; "
        f"1 pod, 2 micro-batches: {one_node['tokens_per_second']:,.0f} tok/s, Job done in {one_seconds:.1f} s; "
        f"final loss {two_nodes['history'][-1]['loss']:.5f} / {one_node['history'][-1]['loss']:.5f}"
    )
    # Two pods, one per index, each a container of the worker image, both exited 0 at the first try.
    assert sorted(p.index for p in pods) == [0, 1] and all(p.exit_codes == [0] for p in pods), pods
    assert len(records_of_pods) == 2 and all(r.image == images.worker for r in records_of_pods)
    assert (two_nodes["world_size"], one_node["world_size"]) == (2, 1)
    assert len(two_nodes["history"]) == records // 16
    assert [p["step"] for p in two_nodes["history"]] == [p["step"] for p in one_node["history"]]
    for mine, theirs in zip(two_nodes["history"], one_node["history"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-5), (mine, theirs)
        assert mine["tokens"] == theirs["tokens"]  # every token once, over both ranks
    assert two_nodes["history"][-1]["loss"] < two_nodes["history"][0]["loss"]  # it learned, not just agreed
    assert (Layout(pair, "pair").student / "model.safetensors").is_file()


def test_killing_the_rendezvous_pod_resumes_both_from_the_last_checkpoint(
    runtime: DockerRuntime, images: Images, tiny_models: dict[str, Path], tmp_path: Path
):
    records, every = 128, 8  # 64 updates: the first checkpoint at 8 leaves time to kill a pod mid-run
    storage = claim_with(tmp_path / "claim", tiny_models, "killed", records, seed=32)
    job = container_job("killed", "killed", nodes=2, batchSize=2, epochs=2, checkpointEverySteps=every)
    total = 2 * records // (2 * 2)
    config = BuildConfig(worker_image=images.worker)
    name = build("train", job, config)["metadata"]["name"]
    checkpoints = Checkpoints(Layout(storage, "killed").checkpoints)
    with start_cluster(
        tmp_path / "cluster", [NAMESPACE], runtime=runtime, claims={"killed": storage}, retry_delay=1
    ) as cluster:
        api = cluster.api(NAMESPACE)
        create_training(cluster, job, config)
        wait_for(
            checkpoints.latest,
            "a complete checkpoint",
            TRAIN_DEADLINE,
            interval=0.05,
            details=cluster.kubelet.diagnostics,
        )
        first = next(p for p in cluster.kubelet.pods() if p.owner == f"Job/{name}" and p.index == 0)
        assert finished(api, name) is None, (
            "training ended before a pod could be killed; give it more updates"
        )
        cluster.kubelet.kill(first.name)  # pod 0, the rendezvous host, dies with its container
        killed_after = int(checkpoints.latest().name.split("-")[1])
        assert killed_after < total, "the pod was killed after training ended; give it more updates"
        wait_complete(cluster, name)
        pods = [p for p in cluster.kubelet.pods() if p.owner == f"Job/{name}"]
        logs = "\n".join(p.log.read_text(errors="replace") for p in pods if p.log.is_file())

    # The killed pod read 137; its peer failed with it; each index ran again and succeeded.
    assert next(p for p in pods if p.name == first.name).exit_codes == [137], pods
    for index in (0, 1):
        runs = [p for p in pods if p.index == index]
        assert len(runs) >= 2 and runs[-1].exit_codes == [0], pods
        assert all(p.exit_codes[-1] != 0 for p in runs[:-1]), pods
    report = report_of(storage, "killed")
    print(
        f"\nkilled pod 0 after checkpoint step-{killed_after:08d}; resumed from update "
        f"{report['resumed_from_step']} of {total}; {len(pods)} pods in all"
    )
    assert report["world_size"] == 2
    assert killed_after <= report["resumed_from_step"] < total and report["resumed_from_step"] % every == 0
    assert [p["step"] for p in report["history"]] == list(range(1, total + 1))  # no update logged twice
    assert "resuming from checkpoint step-" in logs, logs[-3000:]
