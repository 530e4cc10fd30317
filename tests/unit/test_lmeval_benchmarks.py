"""Public benchmarks (lm-eval tasks): the check stage loading them with the real harness, lm-eval's
results read into the report, the report contract, status rows, and the gate's floors on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.api import BenchmarkGate, GateSpec
from distillery.check.inputs import check_job
from distillery.contract.report import EvaluationReport
from distillery.errors import parse_job
from distillery.evaluation import benchmarks, scoring
from tests.support.lmeval_tasks import SENTIMENT, SUMS, write_tasks

pytestmark = pytest.mark.unit


def job_with(storage: Path, tasks: list[str], **evaluation) -> object:
    (storage / "data").mkdir(parents=True, exist_ok=True)
    row = {"prompt": "What is 2+4?", "answer": "6"}
    for name in ("train", "validation"):
        (storage / "data" / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    return parse_job(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "j"},
            "spec": {
                "teacher": {"model": "org/teacher"},
                "student": {"model": "org/student"},
                "data": {
                    "taskType": "qa",
                    "train": "data/train.jsonl",
                    "validation": "data/validation.jsonl",
                },
                "evaluation": {"benchmarks": [{"task": t} for t in tasks], **evaluation},
            },
        }
    )


# ---------------------------------------------------------------- the check stage, with the real harness


def test_check_loads_good_tasks_and_names_an_unknown_task_and_a_missing_data_file(tmp_path):
    tasks = write_tasks(tmp_path / "lm-eval-tasks")
    (tasks / "sums.jsonl").unlink()
    job = job_with(tmp_path, [SENTIMENT, SUMS, "no_such_task"], benchmarkTasks="lm-eval-tasks")
    result = check_job(job, tmp_path)
    found = {f.field: f.message for f in result.findings}
    assert set(found) == {"spec.evaluation.benchmarks[1].task", "spec.evaluation.benchmarks[2].task"}
    assert found["spec.evaluation.benchmarks[1].task"].startswith(f"{SUMS}: its data file is missing")
    assert "sums.jsonl" in found["spec.evaluation.benchmarks[1].task"]
    assert found["spec.evaluation.benchmarks[2].task"].startswith("no_such_task: unknown lm-eval task")
    assert all(f.reason.value == "InputNotFound" for f in result.findings)


def test_check_passes_when_every_task_loads(tmp_path):
    write_tasks(tmp_path / "lm-eval-tasks")
    job = job_with(tmp_path, [SENTIMENT, SUMS], benchmarkTasks="lm-eval-tasks")
    assert check_job(job, tmp_path).findings == []


def test_check_refuses_a_task_directory_that_is_not_there(tmp_path):
    job = job_with(tmp_path, [SENTIMENT], benchmarkTasks="nowhere")
    [finding] = check_job(job, tmp_path).findings
    assert finding.field == "spec.evaluation.benchmarkTasks"
    assert finding.message.startswith("nowhere is not a directory under the storage")


# ---------------------------------------------------------------- lm-eval's results into the report

# The shape `lm_eval.simple_evaluate` returns (as run on the tiny teacher; keys cut to what is read).
RESULTS = {
    "results": {
        SENTIMENT: {"alias": SENTIMENT, "acc,none": 0.5, "acc_stderr,none": 0.2236, "sample_len": 6},
        SUMS: {"alias": SUMS, "exact_match,strip": 0.25, "exact_match_stderr,strip": "N/A"},
    },
    "n-samples": {SENTIMENT: {"original": 6, "effective": 6}, SUMS: {"original": 6, "effective": 4}},
}


def test_scores_keep_each_metric_its_stderr_and_the_samples():
    found = benchmarks.scores(RESULTS, [SENTIMENT, SUMS])
    assert found[SENTIMENT] == {"samples": 6, "metrics": {"acc": {"value": 0.5, "stderr": 0.2236}}}
    assert found[SUMS] == {"samples": 4, "metrics": {"exact_match,strip": {"value": 0.25, "stderr": None}}}


def test_scores_name_a_task_missing_from_the_results():
    with pytest.raises(benchmarks.BenchmarkFailed, match="no_such: lm-eval's results have no entry"):
        benchmarks.scores(RESULTS, ["no_such"])


def model_entries(student: float, teacher: float) -> dict:
    def entry(value: float) -> dict:
        results = {**RESULTS, "results": {SENTIMENT: {"acc,none": value, "acc_stderr,none": 0.1}}}
        return {"model": "m", "benchmarks": benchmarks.scores(results, [SENTIMENT])}

    return {"teacher": entry(teacher), "student": entry(student)}


def test_the_report_contract_reads_what_the_stage_writes():
    job = job_with(Path("/nonexistent"), [SENTIMENT])
    entries = model_entries(student=0.45, teacher=0.5)
    section = benchmarks.report_section(job, entries)
    report = EvaluationReport.model_validate(
        {"gate": {"passed": True, "reason": "ok"}, "models": entries, "benchmarks": section}
    )
    assert report.benchmarks is not None
    assert report.benchmarks.tasks[0].task == SENTIMENT
    assert report.benchmarks.retention[SENTIMENT]["acc"] == pytest.approx(0.9)
    assert report.student.benchmark(SENTIMENT, "acc") == 0.45
    assert report.models["teacher"].benchmarks[SENTIMENT].metrics["acc"].stderr == 0.1
    assert report.student.benchmark(SENTIMENT, "acc_norm") is None
    # a round trip through JSON, as readers get it
    again = EvaluationReport.model_validate(json.loads(report.model_dump_json(by_alias=True)))
    assert again.benchmarks == report.benchmarks
    rows = benchmarks.status_rows(dict(report.compared()), report.benchmarks.retention)
    assert rows == [
        {"task": SENTIMENT, "metric": "acc", "teacher": 0.5, "student": 0.45, "retention": pytest.approx(0.9)}
    ]


# ---------------------------------------------------------------- the gate on a benchmark score


def gate_on(entries: dict, **floor) -> scoring.GateResult:
    parsed = EvaluationReport.model_validate({"gate": {"passed": True, "reason": ""}, "models": entries})
    gate = GateSpec(benchmarks=[BenchmarkGate(task=SENTIMENT, metric="acc", **floor)])
    return scoring.apply_gate(gate, "accuracy", 0.9, 1.0, 10.0, benchmarks.gate_scores(parsed.models))


def test_a_benchmark_retention_floor_passes_and_fails():
    entries = model_entries(student=0.45, teacher=0.5)
    passed = gate_on(entries, min_retention=0.85)
    assert passed.passed, passed.reason
    assert "tiny_sentiment acc retention 0.9 >= minRetention 0.85" in passed.reason
    failed = gate_on(entries, min_retention=0.95)
    assert not failed.passed
    assert failed.reason == "quality gate failed: tiny_sentiment acc retention 0.9 < minRetention 0.95"


def test_a_benchmark_score_floor_passes_and_fails():
    entries = model_entries(student=0.45, teacher=0.5)
    assert gate_on(entries, min_score=0.4).passed
    failed = gate_on(entries, min_score=0.5)
    assert failed.reason == "quality gate failed: tiny_sentiment acc 0.45 < minScore 0.5"
    [check] = failed.checks
    assert (check["value"], check["threshold"], check["passed"]) == (0.45, 0.5, False)


def test_a_missing_benchmark_score_fails_its_floor_and_says_why():
    failed = gate_on({"student": {"model": "m"}}, min_score=0.1)
    assert not failed.passed
    assert "tiny_sentiment acc unknown < minScore 0.1 (no score for metric acc of task tiny_sentiment)" in (
        failed.reason
    )


def test_check_says_a_hub_task_cannot_load_on_an_offline_cluster(tmp_path, monkeypatch):
    import datasets.config

    # As the worker image runs (HF_HUB_OFFLINE=1): the hub is never asked.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    job = job_with(tmp_path, ["arc_easy"])
    [finding] = check_job(job, tmp_path).findings
    assert finding.field == "spec.evaluation.benchmarks[0].task"
    assert finding.message.startswith(
        "arc_easy: its data comes from the Hugging Face hub, which cannot be reached"
    )


def test_the_termination_message_keeps_the_benchmark_rows_that_fit_in_4_kib():
    from distillery.api import BenchmarkStatus, EvaluationStatus
    from distillery.contract.summaries import (
        TERMINATION_LIMIT,
        EvaluateSummary,
        parse_summary,
        termination_message,
    )

    rows = [
        BenchmarkStatus(task=f"mmlu_task_with_a_long_name_{k}", metric="acc_norm", teacher=0.5, student=0.4)
        for k in range(64)
    ]
    summary = EvaluateSummary(evaluation=EvaluationStatus(metric="accuracy", benchmarks=rows))
    text = termination_message(summary)
    assert len(text.encode()) <= TERMINATION_LIMIT
    kept = parse_summary(text).evaluation.benchmarks
    assert 0 < len(kept) < 64 and kept == rows[: len(kept)]
