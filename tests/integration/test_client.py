"""The Python client and the `kubectl distillery` plugin against the emulated API server.

A real cluster's parts as far as the harness has them: kmock's API server (tests/harness), the
harness's kubelet running pods as local processes (their logs are real), the operator's own code
writing status and Events (tests/support/client_world.py). Each verb is checked through
`distillery.client.Client`, through `distillery <verb>` and, for `get`, through the real
/usr/bin/kubectl finding `kubectl-distillery` on PATH, as a user's kubectl would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from distillery.api import DistillationJob, DistillationJobStatus, Phase
from distillery.client import Client, ClientError, NotFound, Unreachable, WaitTimeout, pod_selector
from distillery.client import copy as client_copy
from tests.harness import ProcessRuntime, kubeconfig
from tests.support.client_world import (
    ROOT,
    WORKER_IMAGE,
    Operator,
    evaluate_job,
    fill_claim,
    job_document,
    play_operator,
    pod_phase,
    run_tool,
    running_status,
    stage_pod,
    succeeded_status,
    write_kubeconfig,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "team-a"
KUBECTL = "/usr/bin/kubectl"
CLAIM = "tiny-data"


@pytest.fixture
def world(make_cluster, tmp_path: Path):
    """(cluster, kubeconfig path, client) on a fresh emulator with the process kubelet."""
    cluster = make_cluster([NS], runtime=ProcessRuntime())
    config = write_kubeconfig(cluster.url, NS, tmp_path / "kubeconfig")
    return cluster, config, Client(kubeconfig=str(config))


def run(words: list[str], config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_tool(words, config, tmp_path)


def distillery(*words: str, config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "distillery", *words], config, tmp_path)


def submitted(client: Client, name: str) -> tuple[dict, DistillationJob]:
    job = client.submit(job_document(name, NS))
    return job.model_dump(mode="json", by_alias=True, exclude_none=True), job


def test_submit_get_list_describe(world, tmp_path: Path):
    cluster, config, client = world
    created = distillery(
        "submit", str(ROOT / "examples" / "tiny-cluster.yaml"), config=config, tmp_path=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "distillationjob.distillery.dev/tiny created"
    body, _ = submitted(client, "second")
    operator = Operator(cluster.url)
    operator.write_status(body, running_status())
    tiny = client.get("tiny").model_dump(mode="json", by_alias=True, exclude_none=True)
    operator.write_status(tiny, succeeded_status(client.get("tiny")))
    operator.post_event(tiny, "StageCompleted", "evaluate: scored 3 models")

    jobs = {job.metadata.name: job for job in client.list()}
    assert set(jobs) == {"tiny", "second"}
    assert jobs["tiny"].status.evaluation.retention == pytest.approx(0.8333)
    assert jobs["second"].status.phase.value == "Training"

    # The same table from the plugin's two doors; each row shows what status says.
    ours = distillery("get", config=config, tmp_path=tmp_path)
    kubectl = run([KUBECTL, "distillery", "get"], config, tmp_path)
    assert ours.returncode == 0 and kubectl.returncode == 0, ours.stderr + kubectl.stderr
    # AGE ticks between the two runs; every other column is the same.
    assert [r.rsplit(None, 1)[0] for r in kubectl.stdout.splitlines()] == [
        r.rsplit(None, 1)[0] for r in ours.stdout.splitlines()
    ]
    header, *rows = ours.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "RETENTION", "COST", "AGE"]
    by_name = {row.split()[0]: row for row in rows}
    assert by_name["tiny"].split()[1:5] == ["Succeeded", "done", "0.833", "12.40"]
    assert "train 40% (epoch 32/80, ETA 1m)" in by_name["second"] and "0.25 GPU-h" in by_name["second"]
    one = run([KUBECTL, "distillery", "get", "second", "-o", "json"], config, tmp_path)
    assert DistillationJob.model_validate(json.loads(one.stdout)).status == jobs["second"].status

    described = distillery("describe", "tiny", config=config, tmp_path=tmp_path).stdout
    assert "StageCompleted" in described and "evaluate: scored 3 models" in described
    assert "QualityGatePassed" in described and "GatePassed" in described
    assert "took 95s" in described  # start to completion, from status
    train_row = next(line.split() for line in described.splitlines() if line.strip().startswith("train "))
    assert train_row[1:] == ["10m", "610", "610"]  # wall, pod-seconds, GPU-seconds of status.cost


def test_logs_select_a_stage_by_the_operator_labels(world, tmp_path: Path):
    cluster, config, client = world
    _, job = submitted(client, "tiny")
    api = cluster.api(NS)
    api.create(stage_pod(job, "generate", ["shard 0: 120 records"], "0"))
    api.create(stage_pod(job, "generate", ["shard 1: 118 records"], "1"))
    api.create(stage_pod(job, "train", ["epoch 1 loss 2.5", "epoch 2 loss 1.9"]))
    for pod in ("tiny-generate-0", "tiny-generate-1", "tiny-train-0"):
        wait_for(lambda p=pod: pod_phase(api, p) == "Succeeded", f"pod {pod} succeeded", 60)

    train = [(line.pod, line.text) for line in client.logs("tiny", stage="train")]
    assert train == [("tiny-train-0", "epoch 1 loss 2.5"), ("tiny-train-0", "epoch 2 loss 1.9")]
    generate = {line.text for line in client.logs("tiny", stage="generate", follow=True)}
    assert generate == {"shard 0: 120 records", "shard 1: 118 records"}
    assert pod_selector("tiny", "train") == (
        "distillery.dev/job=tiny,app.kubernetes.io/managed-by=distillery-operator,distillery.dev/stage=train"
    )
    printed = distillery("logs", "tiny", "--stage", "generate", config=config, tmp_path=tmp_path)
    assert sorted(printed.stdout.splitlines()) == [
        "[tiny-generate-0] shard 0: 120 records",
        "[tiny-generate-1] shard 1: 118 records",
    ]
    none = distillery("logs", "tiny", "--stage", "evaluate", config=config, tmp_path=tmp_path)
    assert (
        none.returncode == 1
        and len(none.stderr.splitlines()) == 1
        and "no pods of stage evaluate" in none.stderr
    )


def test_report_copies_off_the_claim_through_a_pod(world, tmp_path: Path):
    cluster, config, client = world
    body, job = submitted(client, "tiny")
    job = client.get("tiny")
    with pytest.raises(NotFound, match=r'"tiny" has no report yet \(no phase yet\)'):
        client.report("tiny", tmp_path / "early")
    Operator(cluster.url).write_status(body, succeeded_status(job))
    with pytest.raises(ClientError, match="cannot tell its worker image"):
        client.report("tiny", tmp_path / "early")  # no stage Job to take it from, none in the spec
    cluster.api(NS).create(evaluate_job(job))
    assert client._worker_image(job) == WORKER_IMAGE
    files = fill_claim(cluster.kubelet.claim_dir(NS, CLAIM), job)

    copied = client.report("tiny", tmp_path / "out", student=True)
    assert copied.summary == files["reports/evaluation.md"].decode()
    assert copied.source == f"claim {CLAIM}"
    for relative, content in files.items():
        assert (tmp_path / "out" / relative).read_bytes() == content, relative
    copy_pods = cluster.api(NS).pods(**{"app.kubernetes.io/component": client_copy.COMPONENT})
    assert copy_pods == []  # deleted once read
    ran = [r for r in cluster.kubelet.pods() if r.name.startswith("tiny-copy-")]
    claim = cluster.kubelet.claim_dir(NS, CLAIM)
    # One pod each for the reports and the student, each given its directory on the claim (at /data there).
    assert [Path(r.argv[-1]) for r in ran] == [claim / "jobs/tiny/reports", claim / "jobs/tiny/student"]
    assert all(r.phase == "Succeeded" and r.deleted for r in ran), ran

    printed = distillery("report", "tiny", "-o", "cli-out", config=config, tmp_path=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == files["reports/evaluation.md"].decode()
    assert (tmp_path / "cli-out" / "reports" / "evaluation.png").read_bytes() == files[
        "reports/evaluation.png"
    ]
    assert not (tmp_path / "cli-out" / "student").exists()


def test_cancel_delete_and_one_line_errors(world, tmp_path: Path):
    cluster, config, client = world
    body, _ = submitted(client, "tiny")
    Operator(cluster.url).write_status(body, running_status())

    with pytest.raises(WaitTimeout, match=r'"tiny" is still Training after 0.5 s'):
        client.wait("tiny", timeout=0.5)
    cancelled = distillery("cancel", "tiny", config=config, tmp_path=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert (
        cluster.api(NS).get("distillery.dev/v1alpha1", "distillationjobs", "tiny")["spec"]["suspend"] is True
    )

    deleted = run([KUBECTL, "distillery", "delete", "tiny"], config, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.api(NS).get("distillery.dev/v1alpha1", "distillationjobs", "tiny") is None
    with pytest.raises(NotFound):
        client.get("tiny")
    missing = distillery("describe", "tiny", config=config, tmp_path=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [f'error: distillationjob "tiny" in namespace "{NS}" not found']

    closed = tmp_path / "closed"
    closed.write_text(kubeconfig("http://127.0.0.1:9"))  # nothing listens on the discard port
    with pytest.raises(Unreachable):
        Client(kubeconfig=str(closed)).list()
    down = distillery("get", "--kubeconfig", str(closed), config=config, tmp_path=tmp_path)
    assert down.returncode == 1 and down.stderr.startswith(
        "error: no cluster reachable at http://127.0.0.1:9"
    )
    assert len(down.stderr.splitlines()) == 1
    wrong = distillery("get", "--context", "nope", config=config, tmp_path=tmp_path)
    assert wrong.stderr.strip() == f"error: context 'nope' is not in {config} (it has: emulator)"


def test_example_script_runs_against_the_emulator(world, tmp_path: Path):
    """examples/client.py as docs/client.md runs it; the test plays the operator once the job is there."""
    cluster, config, _ = world
    player = threading.Thread(target=play_operator, args=(cluster, NS, "tiny", CLAIM), daemon=True)
    player.start()
    result = run(
        [
            sys.executable,
            str(ROOT / "examples" / "client.py"),
            str(ROOT / "examples" / "tiny-cluster.yaml"),
            "--timeout",
            "60",
        ],
        config,
        tmp_path,
    )
    player.join(5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny: Succeeded, retention 0.833" in result.stdout
    assert "[tiny-evaluate-0] retention 0.833" in result.stdout
    assert "retention 0.833 (gate passed)" in result.stdout  # the report's summary, copied off the claim
    assert (tmp_path / "tiny-report" / "reports" / "evaluation.json").is_file()


def test_submit_wait_exits_1_with_the_failure(world, tmp_path: Path):
    cluster, config, client = world
    failure = DistillationJobStatus(
        phase=Phase.failed, message="train: CUDA out of memory (training.batchSize)"
    )

    def fail() -> None:
        body = wait_for(
            lambda: cluster.api(NS).get("distillery.dev/v1alpha1", "distillationjobs", "tiny"), "the job", 60
        )
        Operator(cluster.url).write_status(body, failure)

    player = threading.Thread(target=fail, daemon=True)
    player.start()
    result = distillery(
        "submit", str(ROOT / "examples" / "tiny-cluster.yaml"), "--wait", config=config, tmp_path=tmp_path
    )
    player.join(5)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "distillationjob.distillery.dev/tiny Failed: train: CUDA out of memory (training.batchSize)"
    )
    invalid = tmp_path / "bad.yaml"
    invalid.write_text(
        re.sub(r"epochs: [0-9]+", "epochs: 0", (ROOT / "examples" / "tiny-cluster.yaml").read_text())
    )
    refused = distillery("submit", str(invalid), config=config, tmp_path=tmp_path)
    assert refused.returncode == 2 and "training.epochs" in refused.stderr
    assert [j.metadata.name for j in client.list()] == ["tiny"]  # nothing sent for the invalid one
