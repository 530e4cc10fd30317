"""Inputs from and exports to an S3 API over HTTP (moto's standalone server on the loopback).

The readers, the check stage (as its pod runs it, read back by the operator's own reader and
phase machine) and the export all use their real clients (s3fs / botocore) against the server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from distillery.api import ConditionType, DistillationJob, DistillationJobStatus, Phase
from distillery.check.inputs import check_job
from distillery.contract.commands import TERMINATION_LOG_ENV, CheckCommand
from distillery.contract.exit_codes import ExitCode
from distillery.contract.summaries import FailureReason, parse_summary
from distillery.controller.observe import Observed, job_state
from distillery.controller.phases import decide
from distillery.datasource import identity, iter_records
from distillery.evaluation import evaluate
from distillery.serving.vllm import free_port
from distillery.storage import Layout
from distillery.tasks.prompts import iter_prompts
from tests.support.objectstore import SECRET_ACCESS_KEY, store

pytestmark = pytest.mark.objectstore

ENTRY = (sys.executable, "-m", "distillery")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def records(count: int) -> list[dict]:
    return [
        {"id": f"q{i}", "prompt": f"What is {i % 10}+{i // 10 % 10}?", "answer": str(i % 10 + i // 10 % 10)}
        for i in range(count)
    ]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet(rows: list[dict], row_group_size: int = 64) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=row_group_size)
    return sink.getvalue()


def make_job(s3, train: str, validation: str | None = None, **spec) -> DistillationJob:
    data = {"taskType": "math", "train": train, "systemPrompt": ""}
    if validation:
        data["validation"] = validation
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "s3job", "namespace": "ml", "uid": "6f1c0e0a-0000-4000-8000-000000000001"},
            "spec": {
                "teacher": {"model": "teacher"},
                "student": {"model": "student"},
                "data": data,
                "storage": {"pvc": {"claimName": "data"}, "objectStore": store(s3)},
                **spec,
            },
        }
    )


# ------------------------------------------------------------------ reading


def test_jsonl_and_parquet_are_read_from_the_store_by_every_shard(s3):
    rows = records(300)
    train = s3.put("prompts/train.parquet", parquet(rows))
    validation = s3.put("prompts/validation.jsonl", jsonl(rows[:20]))
    job = make_job(s3, train, validation)
    data, object_store = job.spec.data, job.spec.storage.object_store
    seen = [
        p.messages[-1]["content"]
        for k in range(3)
        for p in iter_prompts(data, train, k, 3, store=object_store)
    ]
    assert sorted(seen) == sorted(r["prompt"] for r in rows)  # each record exactly once over 3 shards
    numbers = [n for n, _ in iter_records(validation, declared_format="jsonl", store=object_store)]
    assert numbers == list(range(1, 21))
    found = identity(train, store=object_store)
    assert found["etag"] and found["bytes"] == len(parquet(rows)) and found["modified"]


def test_the_check_reads_the_first_records_of_each_input(s3):
    train = s3.put("in/train.parquet", parquet(records(50)))
    validation = s3.put("in/validation.jsonl", jsonl(records(5)))
    result = check_job(make_job(s3, train, validation), "/nonexistent-storage-root")
    assert result.ok, result.findings
    assert result.inputs["spec.data.train"]["format"] == "parquet"
    assert result.inputs["spec.data.validation"]["checked"] == 3
    assert result.inputs["spec.data.train"]["location"] == train


def test_the_check_names_each_missing_or_unreadable_uri(s3, tmp_path):
    train = s3.put("in/train.jsonl", b'{"id": "1", "prompt": "What is 1+1?"}\n[1, 2]\n{"prompt": "x"}\n')
    job = make_job(s3, train, f"s3://{s3.bucket}/in/absent.jsonl")
    findings = {f.field: f for f in check_job(job, tmp_path).findings}
    assert findings["spec.data.validation"].reason is FailureReason.input_not_found
    assert (
        findings["spec.data.validation"].message
        == f"s3://{s3.bucket}/in/absent.jsonl does not exist (no such object, or no such bucket)"
    )
    assert findings["spec.data.train"].reason is FailureReason.invalid_input
    assert f"({train}): line 2: expected a JSON object, got list" in findings["spec.data.train"].message

    no_bucket = make_job(s3, "s3://no-such-bucket-distillery/train.jsonl")
    (finding,) = check_job(no_bucket, tmp_path).findings
    assert (
        finding.reason is FailureReason.input_not_found
        and "s3://no-such-bucket-distillery/train.jsonl" in finding.message
    )

    unreachable = make_job(s3, train).model_copy(deep=True)
    unreachable.spec.storage.object_store.endpoint_url = f"http://127.0.0.1:{free_port()}"
    (finding,) = check_job(unreachable, tmp_path).findings
    assert finding.reason is FailureReason.input_unreadable and train in finding.message


def test_a_failed_check_pod_fails_the_job_naming_the_uri_before_the_teacher(s3, tmp_path):
    """`distillery check` as its pod runs it; its termination message read by the operator's reader and phase machine."""
    missing = f"s3://{s3.bucket}/datasets/train.parquet"
    job = make_job(s3, missing)
    termination = tmp_path / "termination-log"
    command = CheckCommand(job=job, storage=str(tmp_path))
    result = subprocess.run(
        command.argv(ENTRY),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, TERMINATION_LOG_ENV: str(termination)},
    )
    assert result.returncode == ExitCode.INVALID_SPEC, result.stderr  # InputNotFound: the URI the spec names
    message = termination.read_text()
    summary = parse_summary(message)
    assert summary.failure.reason is FailureReason.input_not_found
    assert SECRET_ACCESS_KEY not in message + result.stdout + result.stderr  # credentials never in a log
    pod = {
        "metadata": {"name": "s3job-check-x", "creationTimestamp": "2026-11-29T11:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "check",
                    "state": {"terminated": {"exitCode": 1, "message": message, "reason": "Error"}},
                }
            ]
        },
    }
    failed = {
        "status": {
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        }
    }
    observed = Observed(check=job_state(failed, [pod]))
    step = decide(job.spec, [], DistillationJobStatus(phase=Phase.pending), observed, NOW, "s3job")
    assert step.phase is Phase.failed
    assert (
        step.message
        == f"check failed: spec.data.train: {missing} does not exist (no such object, or no such bucket)"
    )
    (condition,) = [c for c in step.conditions if c.type == ConditionType.inputs_ready]
    assert condition.reason == "InputNotFound" and missing in condition.message
    assert not {"teacher", "generate"} & set(step.ensure), "no teacher before the inputs are readable"


# ------------------------------------------------------------------ the export


def stored_student(layout: Layout, tiny_student: Path | None = None) -> None:
    layout.student.mkdir(parents=True)
    (layout.student / "config.json").write_text('{"model_type": "llama"}')
    (layout.student / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (layout.student / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (layout.student / "chat_template.jinja").write_text("{{ messages }}")
    layout.reports.mkdir(parents=True)
    (layout.training_report).write_text(
        json.dumps(
            {
                "examples": 10,
                "step": 5,
                "train_loss": 0.5,
                "device": "cpu",
                "world_size": 1,
                "duplicates": 2,
                "hyperparameters": {"epochs": 1},
            }
        )
    )


def report(passed: bool) -> dict:
    checks = [
        {"name": "minScore", "threshold": 0.5, "value": 0.75, "passed": passed, "text": "accuracy 0.75"}
    ]
    return {
        "job": "s3job",
        "created": "2026-11-29T12:00:00Z",
        "taskType": "math",
        "metric": "accuracy",
        "samples": 4,
        "withReference": 4,
        "maxTokens": 8,
        "concurrency": 4,
        "models": {
            "teacher": {"score": 1.0, "source": "generation records"},
            "student": {"score": 0.75, "latencyP50Ms": 5.0, "latencyP95Ms": 9.0, "source": "served"},
        },
        "retention": 0.75,
        "improvement": {"absolute": None, "relative": None},
        "gate": {
            "passed": passed,
            "reason": "quality gate " + ("passed" if passed else "failed"),
            "checks": checks,
        },
        "notes": [],
        "fingerprints": {"generate": "g", "train": "t", "evaluate": "e"},
        "dataCleaning": {"decontaminated": 3, "rejected": 1, "duplicates": 2},
        "lineage": {
            "specHash": "sha256:x",
            "distilleryVersion": "0.1.0",
            "trainingMethod": "sft",
            "teacher": {"model": "teacher"},
            "studentBase": {"model": "student"},
            "data": {"train": {"path": "s3://b/train.parquet", "etag": "abc", "bytes": 10}},
            "generated": {},
            "student": {"path": "jobs/s3job/student", "files": []},
        },
    }


def test_a_passed_gate_exports_the_student_report_and_model_card(s3, tmp_path):
    uri = f"s3://{s3.bucket}/models/support-bot"
    job = make_job(s3, s3.uri("train.jsonl"), output={"uri": uri})
    layout = Layout.of(job, tmp_path)
    stored_student(layout)
    done = evaluate.finish(job, layout, report(True), lambda m: None)
    assert done["output"]["written"] is True and done["output"]["uri"] == uri
    keys = s3.keys("models/support-bot/")
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "chat_template.jinja",
        "report/evaluation.json",
        "report/evaluation.md",
        "report/training.json",
    }
    assert {k.removeprefix("models/support-bot/") for k in keys} >= expected
    card = s3.get("models/support-bot/README.md").decode()
    assert card.startswith("---\nbase_model: student\n") and "| **student** | 0.750 |" in card
    assert "3 training prompts dropped" in card and "2 duplicate teacher records" in card
    exported = json.loads(s3.get("models/support-bot/report/evaluation.json"))
    assert exported["output"]["uri"] == uri  # the report names where it went
    summary = evaluate.evaluate_summary(done, "jobs/s3job/reports/evaluation.json")
    assert summary.output == uri


def test_a_failed_gate_exports_nothing_unless_asked(s3, tmp_path):
    uri = f"s3://{s3.bucket}/models/kept-back"
    job = make_job(s3, s3.uri("train.jsonl"), output={"uri": uri})
    layout = Layout.of(job, tmp_path)
    stored_student(layout)
    done = evaluate.finish(job, layout, report(False), lambda m: None)
    assert done["output"]["written"] is False and "quality gate failed" in done["output"]["reason"]
    assert s3.keys("models/kept-back/") == []
    assert evaluate.evaluate_summary(done, "r").output is None

    always = make_job(s3, s3.uri("train.jsonl"), output={"uri": uri, "when": "always"})
    shutil.rmtree(layout.work)
    stored_student(layout)
    assert evaluate.finish(always, layout, report(False), lambda m: None)["output"]["written"] is True
    assert "models/kept-back/README.md" in s3.keys("models/kept-back/")


def test_an_unwritable_output_fails_the_stage_naming_it(s3, tmp_path):
    job = make_job(s3, s3.uri("train.jsonl"), output={"uri": "s3://no-such-bucket-distillery/out"})
    layout = Layout.of(job, tmp_path)
    stored_student(layout)
    with pytest.raises(
        evaluate.export.ExportFailed, match=r"output.uri \(s3://no-such-bucket-distillery/out\)"
    ):
        evaluate.finish(job, layout, report(True), lambda m: None)
    kept = json.loads(layout.evaluation_report.read_text())
    assert kept["output"]["written"] is False and "cannot write the export" in kept["output"]["reason"]
