"""`distillery run examples/tiny.yaml` end to end: real vLLM servers, real training, the report.

The run is interrupted once training has written a checkpoint, then run again: generation is
skipped, training resumes from its checkpoint, evaluation scores teacher, baseline and the
distilled student, and the report says the student beats its baseline. Two tiny lm-eval tasks (one
multiple choice: prompt log-probabilities; one generate_until) run against each served model, from a
task directory on the storage, and the gate reads one of their scores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.api import CostStatus
from tests.support.lmeval_tasks import SENTIMENT, SUMS, write_tasks
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STAGE_DEADLINE_S = 600


def start_run(spec: Path, log: Path, *options: str) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "distillery", "run", str(spec), *options],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=spec.parent,
        )


@pytest.mark.timeout(2400)  # three vLLM starts and a training run: minutes on 2 idle cores, more when shared
def test_tiny_example_runs_resumes_and_reports(tmp_path, tiny_models):
    from prepare_tiny import write_data  # hack/

    storage = tmp_path / "storage"
    (storage / "models").mkdir(parents=True)
    for name in ("teacher", "student"):  # the models prepare_tiny.py makes (same script, seed, steps)
        shutil.copytree(tiny_models[name], storage / "models" / name)
    write_data(storage)
    write_tasks(storage / "lm-eval-tasks")
    document = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    document["spec"]["storage"]["path"] = "storage"  # the example itself, on this test's storage
    evaluation = document["spec"]["evaluation"]
    evaluation["benchmarks"] = [{"task": SENTIMENT}, {"task": SUMS, "limit": 4}]
    evaluation["benchmarkTasks"] = "lm-eval-tasks"
    # A floor every real score meets: the gate must find the student's score to pass it.
    evaluation["gate"]["benchmarks"] = [{"task": SENTIMENT, "metric": "acc", "minScore": 0.0}]
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(document))
    work = storage / "jobs" / "tiny"

    # First run: interrupt it once training has saved a checkpoint.
    first_log = tmp_path / "first.log"
    run = start_run(spec, first_log)
    try:
        wait_for(
            lambda: any((work / "checkpoints").glob("step-*/state.pt")),
            "a training checkpoint",
            STAGE_DEADLINE_S,
            process=run,
            details=lambda: first_log.read_text()[-4000:],
        )
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) == 130
    finally:
        if run.poll() is None:
            run.kill()
    first = first_log.read_text()
    assert "[1/3] generate: done" in first
    assert "interrupted; run the same command again to resume" in first
    assert not (work / "state" / "train.done.json").exists()

    # Second run: generation skipped, training resumed, evaluation done, report printed.
    second_log = tmp_path / "second.log"
    run = start_run(spec, second_log, "--gpu-hour-prices", "default=2.5", "--currency", "EUR")
    try:
        code = run.wait(timeout=3 * STAGE_DEADLINE_S)
    finally:
        if run.poll() is None:
            run.kill()
    second = second_log.read_text()
    assert "[1/3] generate: already done" in second, second[-6000:]
    assert "resuming from the checkpoints" in second
    # No teacher is started for the skipped stage.
    assert "vllm: starting 'teacher'" not in second.split("[3/3]")[0]
    train = json.loads((work / "state" / "train.done.json").read_text())
    assert train["resumedFromStep"] > 0  # the typed summary, as the train stage wrote it
    assert code == 0, second[-3000:]

    report = json.loads((work / "reports" / "evaluation.json").read_text())
    assert set(report["models"]) == {"teacher", "baseline", "student"}
    assert (work / "reports" / "evaluation.md").is_file()
    assert (work / "reports" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    scores = {name: entry["score"] for name, entry in report["models"].items()}
    assert scores["student"] > scores["baseline"], scores  # distillation helped
    assert report["gate"]["passed"] is True, report["gate"]
    assert report["models"]["student"]["source"] == "served"
    assert "PASSED: quality gate passed" in second
    assert f"retention {report['retention']:.3f}" in second
    assert report["retention"] >= document["spec"]["evaluation"]["gate"]["minRetention"]

    # Public benchmarks: each model scored by lm-eval on the same server, the gate's floor read.
    for name, entry in report["models"].items():
        sentiment, sums = entry["benchmarks"][SENTIMENT], entry["benchmarks"][SUMS]
        assert sentiment["samples"] == 6 and sums["samples"] == 4, (name, entry["benchmarks"])
        assert 0 <= sentiment["metrics"]["acc"]["value"] <= 1
        assert sentiment["metrics"]["acc"]["stderr"] is not None
        assert 0 <= sums["metrics"]["exact_match,strip"]["value"] <= 1
    assert [t["task"] for t in report["benchmarks"]["tasks"]] == [SENTIMENT, SUMS]
    assert "tiny_sentiment acc" in report["gate"]["reason"] and ">= minScore 0" in report["gate"]["reason"]
    assert "## Public benchmarks" in (work / "reports" / "evaluation.md").read_text()
    assert "  benchmark tiny_sentiment acc: teacher " in second
    # status.evaluation as the stage's summary carries it: each task's first metric per model
    rows = json.loads((work / "state" / "evaluate.done.json").read_text())["evaluation"]["benchmarks"]
    assert [(r["task"], r["metric"]) for r in rows] == [(SENTIMENT, "acc"), (SUMS, "exact_match,strip")]
    sentiment = report["models"]["student"]["benchmarks"][SENTIMENT]["metrics"]["acc"]["value"]
    assert rows[0]["student"] == sentiment

    # Fair: every model served by the evaluation and measured the same way (same prompts, rounds,
    # concurrency and server settings), so the speed columns compare like with like.
    measurement = report["measurement"]
    assert measurement["comparable"] is True, measurement
    assert set(measurement["sources"].values()) == {"served"}
    assert "measured: every model answered the same 40 prompts" in second
    teacher, student = report["models"]["teacher"], report["models"]["student"]
    for entry in (teacher, student):
        assert entry["outputTokensPerSecond"] > 0 and entry["cpuMsPerOutputToken"] > 0

    # The cost: the teacher served in the first run counts too; on CPU no GPU-hours, so the price is 0.
    cost = CostStatus.model_validate(report["cost"])
    assert set(cost.stages) == {"teacher", "generate", "train", "evaluate"}, cost.stages
    assert cost.stages["teacher"].wall_seconds > 0 and cost.stages["train"].cpu_seconds > 0
    assert cost.teacher_output_tokens > 0 and cost.training_tokens > 0 and cost.evaluation_requests > 0
    assert (cost.gpu_hours, cost.price, cost.currency) == (0, 0, "EUR")
    assert "cost: 0.000 GPU-hours" in second and "0.00 EUR" in second


@pytest.mark.timeout(1800)  # two vLLM starts (the teacher, kept; the student) and a short training run
def test_on_policy_keeps_one_teacher_from_generation_through_training(tmp_path, tiny_models):
    """`training.method: onPolicy` on one machine: the teacher vLLM started for generation still serves when
    training asks it to grade the student's samples; as the evaluation would start the same server
    (`local.teacher.keep_teacher`), the evaluation measures it too, and it is stopped after the evaluation."""
    from prepare_tiny import write_data  # hack/

    storage = tmp_path / "storage"
    (storage / "models").mkdir(parents=True)
    for name in ("teacher", "student"):
        shutil.copytree(tiny_models[name], storage / "models" / name)
    write_data(storage, train=64, validation=16)
    document = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    document["spec"]["storage"]["path"] = "storage"
    document["spec"]["training"].update(
        method="onPolicy", epochs=2, onPolicy={"fraction": 0.5, "maxTokens": 6}
    )
    document["spec"]["evaluation"].update(compare=["teacher", "student"], gate={})
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(document))
    log = tmp_path / "run.log"
    run = start_run(spec, log)
    try:
        code = run.wait(timeout=3 * STAGE_DEADLINE_S)
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    assert code == 0, text[-4000:]
    # One teacher server for the whole run: generation, training's grades and the evaluation's measurement.
    assert text.count("vllm: starting 'teacher'") == 1, text[-4000:]
    assert "teacher: measuring the server kept from generation" in text, text[-4000:]
    order = [
        "[kept for evaluation] teacher: serving",
        "[1/3] generate: done",
        "[2/3] train: done",
        "[3/3] evaluate: done",
        "[kept for evaluation] teacher stopped",
    ]
    assert [text.index(line) for line in order] == sorted(text.index(line) for line in order), text[-4000:]
    train = json.loads((storage / "jobs" / "tiny" / "state" / "train.done.json").read_text())
    assert train["method"] == "onPolicy" and train["onPolicyUpdates"] > 0 and train["onPolicyLoss"] > 0
