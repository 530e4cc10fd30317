"""The evaluate stage against the session's real vLLM server (tiny models): scores, serving metrics, report, gate.

One server serves every compared model here (the session's teacher), so a test costs seconds;
that the stage starts its own vLLM per model is exercised end to end in tests/e2e/test_run_tiny.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from distillery import tasks
from distillery.api import DistillationJob, TaskType
from distillery.contract.exit_codes import ExitCode
from distillery.evaluation import evaluate
from distillery.generation.shard import generate_shard
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout

pytestmark = pytest.mark.stages

VALIDATION = 16


def make_job(
    tmp_path, gate: dict, compare=("teacher", "baseline", "student"), endpoint=None
) -> DistillationJob:
    teacher = {"model": "models/teacher"} if endpoint is None else {"endpoint": endpoint}
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "evaljob"},
            "spec": {
                "teacher": teacher,
                "student": {"model": "models/student"},
                "data": {
                    "taskType": "qa",
                    "train": "data/train.jsonl",
                    "validation": "data/validation.jsonl",
                    "promptTemplate": "{prompt}",
                    "systemPrompt": "",
                },
                "generation": {
                    "temperature": 0.0,
                    "maxTokens": 8,
                    "minSuccessRatio": 0.0,
                    "smokeTestPrompts": 0,
                    "filters": {"verify": False},
                },
                "evaluation": {"gpus": 0, "concurrency": 4, "compare": list(compare), "gate": gate},
            },
        }
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models, vllm_teacher):
    """A job's storage after generation: the models, the prompts, and the teacher's answers to them."""
    from make_tiny_models import task_examples  # hack/
    from prepare_tiny import write_records

    root = tmp_path_factory.mktemp("eval-storage")
    (root / "models").mkdir()
    for name in ("teacher", "student"):
        shutil.copytree(tiny_models[name], root / "models" / name)
    write_records(root / "data" / "train.jsonl", task_examples(random.Random(5), 2), "train")
    write_records(root / "data" / "validation.jsonl", task_examples(random.Random(6), VALIDATION), "val")
    job = make_job(root, {})
    generate_shard(job, root, 0, TeacherConnection(vllm_teacher.base_url, vllm_teacher.model))
    layout = Layout(root, "evaljob")
    # The "distilled" student is the base model itself: these tests check the measuring, not training.
    shutil.copytree(tiny_models["student"], layout.student)
    return root


def shared_server(vllm_teacher):
    """serve() for evaluate_job that hands out the session's server instead of starting one per model."""

    @contextlib.contextmanager
    def serve(job, layout, name, model):
        yield TeacherConnection(vllm_teacher.base_url, vllm_teacher.model), vllm_teacher.process.pid

    return serve


def fresh(storage, tmp_path):
    """A private copy of the storage, so each test writes its own report."""
    root = tmp_path / "storage"
    shutil.copytree(storage, root)
    return root


def test_scores_every_model_and_writes_json_markdown_png(storage, tmp_path, vllm_teacher):
    root = fresh(storage, tmp_path)
    job = make_job(root, {"minRetention": 0.5})
    report = evaluate.evaluate_job(
        job, root, serve=shared_server(vllm_teacher), say=lambda m: None, teacher_from_records=True
    )

    layout = Layout(root, "evaljob")
    assert json.loads(layout.evaluation_report.read_text()) == report
    assert layout.evaluation_report.with_suffix(".md").read_text().startswith("# Evaluation of `evaljob`")
    assert layout.evaluation_report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = evaluate.evaluate_summary(report, "jobs/evaljob/reports/evaluation.json")
    assert done.evaluation.gate_passed is True and done.evaluation.retention == report["retention"]

    # The teacher's score is recomputed here from its generation records, accepted or rejected.
    records = [
        json.loads(line)
        for path in sorted(layout.generated("validation").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert len(records) == VALIDATION
    right = sum(tasks.answers_match(TaskType.qa, r["response"], r["reference"], []) for r in records)
    teacher = report["models"]["teacher"]
    assert teacher["source"] == "generation records"
    assert teacher["score"] == pytest.approx(right / VALIDATION)
    assert teacher["latencyP50Ms"] > 0
    assert teacher["outputTokensPerSecond"] is None  # not measured from records, and the report says so
    assert any("generation" in note for note in report["notes"])
    assert report["measurement"]["comparable"] is False  # and the report says why
    assert "NOT comparable: teacher (generation records)" in report["measurement"]["text"]

    # "student" and "baseline" were both the teacher's server, greedy as generation was: they give
    # the teacher's answers (batching on CPU may flip a rare near-tie), so retention is about 1.
    for name in ("baseline", "student"):
        entry = report["models"][name]
        assert entry["answered"] == VALIDATION and entry["errors"] == 0
        assert entry["teacherAgreement"] >= 0.9
        assert entry["score"] == pytest.approx(teacher["score"], abs=0.1)
        assert 0 < entry["latencyP50Ms"] <= entry["latencyP95Ms"]
        assert entry["outputTokensPerSecond"] > 0 and entry["responsesPerSecond"] > 0
        assert entry["peakMemoryBytes"] > 100 * 2**20  # a vLLM server's resident memory
    assert report["retention"] == pytest.approx(1.0, abs=0.1)
    assert report["improvement"]["absolute"] == pytest.approx(0.0, abs=0.1)

    # Parameters are read from safetensors headers; transformers counts the same model.
    from transformers import AutoModelForCausalLM

    expected = AutoModelForCausalLM.from_pretrained(layout.student).num_parameters()
    assert report["models"]["student"]["parameters"] == expected
    assert report["models"]["student"]["sizeBytes"] > expected * 4  # fp32 weights plus tokenizer files

    answers = [
        json.loads(line) for line in (layout.reports / "evaluation-answers.jsonl").read_text().splitlines()
    ]
    assert len(answers) == VALIDATION
    # One server, greedy: the same answers (batching on CPU may flip a rare near-tie).
    assert sum(row["student"] == row["baseline"] for row in answers) >= 0.9 * VALIDATION

    lineage = report["lineage"]
    assert lineage["generated"]["validation"]["files"] == 2  # records + rejected records
    assert {f["path"] for f in lineage["student"]["files"]} >= {"config.json", "model.safetensors"}
    assert lineage["data"]["validation"]["sha256"].startswith("sha256:")


def test_the_teacher_is_served_and_measured_like_the_student(storage, tmp_path, vllm_teacher):
    """By default the evaluation serves `teacher.model` itself, so all three models' latency and
    throughput come from the same rounds on the same server settings (here: one shared server)."""
    root = fresh(storage, tmp_path)
    served = []
    serve = shared_server(vllm_teacher)

    def recording(job, layout, name, model):
        served.append((name, model))
        return serve(job, layout, name, model)

    job = make_job(root, {"minRetention": 0.5})
    report = evaluate.evaluate_job(job, root, serve=recording, say=lambda m: None)
    assert [name for name, _ in served] == ["teacher", "baseline", "student"]
    assert served[0][1] == str(root / "models" / "teacher")
    measurement = report["measurement"]
    assert measurement["comparable"] is True
    assert measurement["sources"] == {"teacher": "served", "baseline": "served", "student": "served"}
    for entry in report["models"].values():
        assert entry["source"] == "served" and entry["answered"] == VALIDATION
        assert entry["outputTokensPerSecond"] > 0 and 0 < entry["latencyP50Ms"] <= entry["latencyP95Ms"]
    # One server answered for all three, greedy: the same answers, so retention is about 1.
    assert report["retention"] == pytest.approx(1.0, abs=0.1)


def test_failed_gate_reports_why_and_keeps_every_artifact(storage, tmp_path, vllm_teacher):
    root = fresh(storage, tmp_path)
    job = make_job(root, {"minScore": 2.0, "maxLatencyMs": 0.001})
    report = evaluate.evaluate_job(job, root, serve=shared_server(vllm_teacher), say=lambda m: None)
    assert report["gate"]["passed"] is False
    assert "minScore 2" in report["gate"]["reason"] and "maxLatencyMs 0.001" in report["gate"]["reason"]
    layout = Layout(root, "evaljob")
    for path in (layout.evaluation_report, layout.evaluation_report.with_suffix(".md"), layout.student):
        assert path.exists()
    assert "Quality gate FAILED" in layout.evaluation_report.with_suffix(".md").read_text()


def _evaluate_cli(job, root, termination, *args: str) -> subprocess.CompletedProcess:
    """`distillery evaluate` as a pod runs it: the job as inline JSON, its summary to `termination`."""
    document = json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True))
    command = [
        sys.executable,
        "-m",
        "distillery",
        "evaluate",
        "--job",
        document,
        "--storage",
        str(root),
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DISTILLERY_TERMINATION_LOG": str(termination)},
    )


def test_cli_measures_a_live_teacher_and_exits_gate_failed_on_a_failed_gate(storage, tmp_path, vllm_teacher):
    root = fresh(storage, tmp_path)
    job = make_job(
        root,
        {"minScore": 2.0},
        compare=["teacher"],
        endpoint={"url": vllm_teacher.base_url, "model": vllm_teacher.model},
    )
    termination = tmp_path / "termination-log"
    result = _evaluate_cli(job, root, termination, "--teacher-url", vllm_teacher.base_url)
    assert result.returncode == ExitCode.GATE_FAILED, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        summary["evaluation"]["gatePassed"] is False
        and summary["report"] == "jobs/evaljob/reports/evaluation.json"
    )
    assert "FAILED: quality gate failed" in result.stdout
    assert json.loads(termination.read_text()) == summary
    report = json.loads(Layout(root, "evaljob").evaluation_report.read_text())
    teacher = report["models"]["teacher"]
    assert teacher["source"] == "live" and teacher["answered"] == VALIDATION
    assert teacher["outputTokensPerSecond"] > 0
    assert "baseline" not in report["models"]


def test_cli_measures_a_kept_local_teacher_as_served(storage, tmp_path, vllm_teacher):
    """`distillery run` hands the evaluation its generation teacher (--teacher-url and --teacher-pid) when
    the evaluation would start the same server: it is measured as the servers the stage starts are."""
    root = fresh(storage, tmp_path)
    job = make_job(root, {}, compare=["teacher"])
    result = _evaluate_cli(
        job,
        root,
        tmp_path / "termination-log",
        *("--teacher-url", vllm_teacher.base_url, "--teacher-model", vllm_teacher.model),
        *("--teacher-pid", str(vllm_teacher.process.pid)),
        # as `distillery run` passes it: here only the teacher is compared, so no gate can pass
        *("--gate-exit-code", "0"),
    )
    assert result.returncode == 0, result.stderr
    assert "measuring the server kept from generation" in result.stderr
    report = json.loads(Layout(root, "evaljob").evaluation_report.read_text())
    assert report["measurement"]["sources"] == {"teacher": "served"}
    assert report["measurement"]["comparable"] is True
    teacher = report["models"]["teacher"]
    assert teacher["answered"] == VALIDATION
    # Read from the server's process, as for every model the stage serves itself.
    assert teacher["cpuMsPerOutputToken"] > 0 and teacher["peakMemoryBytes"] > 0
