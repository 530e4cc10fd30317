"""Training on several nodes for real: the training Job's pod command line, as the manifests build it, run
as two local "pods" (torchrun each, c10d rendezvous on 127.0.0.1, gloo on CPU, the tiny student).

Their loss curve is the one of a single process taking the same global batch (two micro-batches
accumulated), and a pod killed mid-run restarts the pair from the last checkpoint with no update twice.
"""

from __future__ import annotations

import time

import pytest

from distillery.storage import Layout
from distillery.training.checkpoints import Checkpoints
from tests.support.pods import NAME, job_on, kill_pod, output, report_of, start_pods, wait_all
from tests.support.training import answer_records, run_cli, toy_pairs, write_records

pytestmark = pytest.mark.stages

WAIT_SECONDS = 600


def test_two_pods_train_the_loss_of_one_process_with_the_same_global_batch(tiny_models, tmp_path):
    pairs = answer_records(toy_pairs(64, seed=21), "train")
    two, one = tmp_path / "two", tmp_path / "one"
    for root in (two, one):
        write_records(root, NAME, "train", pairs)

    job = job_on(two, tiny_models, nodes=2, batchSize=8, gradientAccumulationSteps=1, epochs=2)
    pods = start_pods(job, two, 0)
    assert wait_all(pods, two) == [0, 0], output(two)
    # One process, two micro-batches of 8 per update: the update two ranks of 8 make.
    single = job_on(one, tiny_models, nodes=1, batchSize=8, gradientAccumulationSteps=2, epochs=2)
    job_file = one / "job.json"
    job_file.write_text(single.model_dump_json(by_alias=True, exclude_none=True))
    result = run_cli(["train", "--job", str(job_file), "--storage", str(one)], one / "termination")
    assert result.returncode == 0, result.stderr[-3000:]

    pair, alone = report_of(two), report_of(one)
    assert (pair["world_size"], alone["world_size"]) == (2, 1)
    assert [p["step"] for p in pair["history"]] == [p["step"] for p in alone["history"]]
    assert len(pair["history"]) == 2 * 64 // 16
    for mine, theirs in zip(pair["history"], alone["history"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-5), (mine, theirs)
        assert mine["tokens"] == theirs["tokens"]  # every token once, over both ranks
    assert pair["history"][-1]["loss"] < pair["history"][0]["loss"]  # it learned, not just agreed
    # One summary from the pair: rank 0's, whichever pod it ran in.
    summaries = [p.read_text() for p in two.glob("termination-0-?") if p.exists() and p.read_text()]
    assert len(summaries) == 1, summaries
    assert (Layout(two, NAME).student / "model.safetensors").is_file()


def test_a_killed_pod_restarts_the_pair_from_the_last_checkpoint(tiny_models, tmp_path):
    # Enough updates (512, some 10 s) that a pod is killed mid-run, after a checkpoint.
    write_records(tmp_path, NAME, "train", answer_records(toy_pairs(1024, seed=22), "train"))
    job = job_on(tmp_path, tiny_models, nodes=2, batchSize=2, epochs=2, checkpointEverySteps=8)
    total = 2 * 1024 // (2 * 2)
    layout = Layout(tmp_path, NAME)
    pods = start_pods(job, tmp_path, 0)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while Checkpoints(layout.checkpoints).latest() is None:  # a complete one, not one being written
            assert all(p.poll() is None for p in pods), output(tmp_path)
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        assert all(p.poll() is None for p in pods), "training ended before a pod could be killed"
        kill_pod(pods[1])  # pod 1 dies with all its processes
        killed_after = int(Checkpoints(layout.checkpoints).latest().name.split("-")[1])
        assert killed_after < total, "the pod was killed after training ended; give it more updates"
        # Its peer cannot go on alone: its collectives fail and its torchrun exits (no restart in a pod).
        assert pods[0].wait(timeout=WAIT_SECONDS) != 0
    finally:
        for pod in pods:
            if pod.poll() is None:
                kill_pod(pod)
            pod.wait()
    assert not layout.student.exists()

    # The Job's replacements: both pods again, meeting anew at pod 0.
    restarted = start_pods(job, tmp_path, 1)
    assert wait_all(restarted, tmp_path) == [0, 0], output(tmp_path)
    report = report_of(tmp_path)
    assert killed_after <= report["resumed_from_step"] < total and report["resumed_from_step"] % 8 == 0
    assert [p["step"] for p in report["history"]] == list(range(1, total + 1))  # no update done twice
    assert "resuming from checkpoint step-" in output(tmp_path)
