"""End to end: examples/tiny.yaml through the real operator, every pod run for real.

What is real: the operator (`distillery operator`, its own process, logging in with a
kubeconfig as it would outside a cluster), the manifests it builds, the teacher (vLLM on
CPU serving the tiny teacher), the generation shards, training and evaluation (each the
exact command line of its pod). What stands in: the API server (kmock's emulator) and the
cluster's kubelet and controllers (tests/harness with its process runtime, which runs each
pod as a local process with its volumes mapped to directories and writes pod and Job status back).

Resilience, in the same run: the kill-and-recover scenario (tests/support/recovery.py, which the
containers tier runs on Docker): once a generation shard has written part of its records, the
operator is killed (SIGKILL) and that shard's pod is killed too; the Job controller replaces
the pod, which resumes; the operator is started again. The job must still succeed, with
every child object created once and every input record answered exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.harness import ProcessRuntime
from tests.support.lmeval_tasks import SENTIMENT, write_tasks
from tests.support.recovery import ProcessOperator, assert_recovered, kill_and_recover
from tests.support.tiny import CLAIM, NAMESPACE, POD_ENV, prepare_claim, tiny_job

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Deadlines (s): vLLM on 2 busy cores takes about a minute to start; the whole job a few.
GENERATING_DEADLINE = 300
SUCCEEDED_DEADLINE = 600


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models: dict[str, Path]) -> Path:
    """The claim's contents, laid out as hack/prepare_tiny.py lays out build/tiny (models linked)."""
    return prepare_claim(tmp_path_factory.mktemp("tiny-data"), tiny_models, copy_models=False)


@pytest.fixture
def cluster(make_cluster, storage: Path):
    """The process backend: each pod a local process with the image's environment, the claim a directory."""
    return make_cluster(
        [NAMESPACE], runtime=ProcessRuntime(env=POD_ENV), claims={CLAIM: storage}, namespace=NAMESPACE
    )


@pytest.fixture
def operator(cluster, tmp_path: Path):
    operator = ProcessOperator(cluster, tmp_path)
    yield operator
    operator.stop()


def test_tiny_job_end_to_end_survives_operator_and_pod_kills(
    cluster, operator: ProcessOperator, storage: Path
):
    shutil.rmtree(storage / "jobs", ignore_errors=True)  # a rerun starts from the prepared inputs only
    # One tiny lm-eval task from the claim: the check pod loads it, the evaluation pod scores each model.
    write_tasks(storage / "lm-eval-tasks")
    document = tiny_job()
    document["spec"]["evaluation"].update(benchmarks=[{"task": SENTIMENT}], benchmarkTasks="lm-eval-tasks")
    recovery = kill_and_recover(
        cluster,
        operator,
        storage,
        document,
        generating_deadline=GENERATING_DEADLINE,
        succeeded_deadline=SUCCEEDED_DEADLINE,
    )
    assert_recovered(cluster, operator, recovery, storage)
    api, job, status, live = cluster.api(NAMESPACE), recovery.job, recovery.status, recovery.live

    # Status: conditions, progress and the evaluation summary a person reads (the scenario checked
    # the stage conditions and the gate).
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}
    assert conditions.get("TeacherReady") == ("False", "ScaledDown"), status  # removed once generation ended
    progress = status["progress"]
    assert progress["shardsDone"] == progress["shardsTotal"] == 2, progress
    assert progress["records"] > 0, progress
    evaluation = status["evaluation"]
    assert evaluation["student"]["score"] is not None and evaluation["retention"] is not None, evaluation
    [benchmark] = evaluation["benchmarks"]
    assert (benchmark["task"], benchmark["metric"]) == (SENTIMENT, "acc"), evaluation
    assert all(0 <= benchmark[name] <= 1 for name in ("teacher", "baseline", "student")), evaluation
    assert status.get("completionTime") and status.get("startTime"), status
    assert live and live[0]["summary"].startswith("train ") and "epoch" in live[0]["summary"], (
        "no live training progress in status"
    )

    # What it cost: each stage's pods reported their time and CPU; the CPU teacher holds no GPU.
    cost = status["cost"]
    for stage in ("check", "generate", "train", "evaluate"):
        used = cost["stages"][stage]
        assert used["podSeconds"] > 0 and used["cpuSeconds"] > 0 and used["gpuSeconds"] == 0, (stage, cost)
    assert cost["stages"]["teacher"]["wallSeconds"] > 0 and cost["gpuHours"] == 0, cost
    assert cost["teacherOutputTokens"] == progress["tokens"] and cost["trainingTokens"] > 0, cost
    assert cost["evaluationRequests"] > 0, cost

    # The report is on the storage, where the status says.
    report = status["artifacts"]["report"]
    mount = job["spec"]["storage"].get("mountPath", "/data")
    local_report = storage / os.path.relpath(report, mount) if report.startswith("/") else storage / report
    assert local_report.is_file(), (report, local_report)
    report_cost = json.loads(local_report.read_text())["cost"]
    assert set(report_cost["stages"]) == {"teacher", "check", "generate", "train", "evaluate"}, report_cost
    assert report_cost["stages"]["train"] == cost["stages"]["train"], (
        "the operator passed its cost to the report"
    )
    assert "## Cost" in local_report.with_suffix(".md").read_text()

    # Only the four Jobs, though the operator ran twice.
    assert sorted(j["metadata"]["name"] for j in api.items("batch/v1", "jobs")) == [
        "tiny-check",
        "tiny-evaluate",
        "tiny-generate",
        "tiny-train",
    ]
