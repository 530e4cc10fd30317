"""The contract between the stages and the operator, with both sides real.

Each stage runs as its pod runs it (the contract's command line, `python -m distillery ...`, on the
tiny fixtures and the session's vLLM teacher), to success and to a failure. The termination
message it wrote is put in a Pod's status exactly as the kubelet would, and the operator's own
reader (`observe.job_state`) and phase machine (`phases.decide`) turn it into the job's status:
the message a user reads must name the stage's real cause.

Also: a running stage process serves only its own series on /metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from distillery.api import ConditionType, DistillationJob, DistillationJobStatus, Phase
from distillery.contract.commands import (
    TERMINATION_LOG_ENV,
    EvaluateCommand,
    GenerateCommand,
    StageCommand,
    TrainCommand,
)
from distillery.contract.exit_codes import ExitCode
from distillery.controller.observe import Observed, TeacherState, job_state
from distillery.controller.phases import decide
from distillery.controller.status import events, next_status
from distillery.serving.vllm import free_port

pytestmark = pytest.mark.stages

C = ConditionType
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
ENTRY = (sys.executable, "-m", "distillery")
# The conditions a job has when the stage under test starts.
BEFORE = {"generate": (), "train": (C.data_generated,), "evaluate": (C.data_generated, C.student_trained)}


def make_job(**spec) -> DistillationJob:
    base = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {
            "taskType": "qa",
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl",
            "promptTemplate": "{prompt}",
            "systemPrompt": "",
        },
        "generation": {"temperature": 0.0, "maxTokens": 8, "minSuccessRatio": 0.0, "concurrency": 4},
        "training": {"learningRate": 1e-3, "batchSize": 8, "epochs": 1, "maxSeqLength": 128},
        "evaluation": {"gpus": 0, "concurrency": 4},
        "storage": {"pvc": {"claimName": "data"}},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    return DistillationJob.model_validate({"metadata": {"name": "tiny", "namespace": "ml"}, "spec": base})


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models):
    """A job's storage before any stage: the tiny models and the prompts."""
    from make_tiny_models import task_examples  # hack/
    from prepare_tiny import write_records

    root = tmp_path_factory.mktemp("contract-storage")
    for name in ("teacher", "student"):
        shutil.copytree(tiny_models[name], root / "models" / name)
    write_records(root / "data" / "train.jsonl", task_examples(random.Random(1), 24), "train")
    write_records(root / "data" / "validation.jsonl", task_examples(random.Random(2), 8), "val")
    return root


def fresh(storage: Path, tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    shutil.copytree(storage, root, symlinks=True)
    return root


def run(command: StageCommand, tmp_path: Path) -> tuple[int, str]:
    """The stage as its pod runs it; its exit code and the termination message it left."""
    termination = tmp_path / f"{command.subcommand}.termination-log"
    result = subprocess.run(
        command.argv(ENTRY),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, TERMINATION_LOG_ENV: str(termination)},
    )
    message = termination.read_text() if termination.exists() else ""
    assert message, f"no termination message; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, message


def pod(stage: str, code: int, message: str) -> dict:
    """A Pod of the stage's Job as the kubelet reports it after the container ended."""
    return {
        "metadata": {
            "name": f"tiny-{stage}-0",
            "creationTimestamp": "2026-11-29T11:00:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
        },
        "status": {
            "containerStatuses": [
                {
                    "name": stage,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "message": message,
                            "reason": "Completed" if code == 0 else "Error",
                        }
                    },
                }
            ]
        },
    }


def job_object(code: int, failed_reason: str) -> dict:
    """The stage's batch/v1 Job once its pod ended (the Job controller's view)."""
    if code == 0:
        return {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    condition = {"type": "Failed", "status": "True", "reason": failed_reason, "message": "Job has failed"}
    return {"status": {"failed": 1, "conditions": [condition]}}


def operator_sees(job: DistillationJob, stage: str, code: int, message: str) -> DistillationJobStatus:
    """The job's status after the operator reads this stage's pod, through its real reader and phase machine."""
    # What the Job controller writes (kubernetes pkg/controller/job/job_controller.go, syncJob): the
    # generation Job has backoffLimitPerIndex with maxFailedIndexes 0, so one failed index exceeds it
    # (MaxFailedIndexesExceeded); the other stages' Jobs pass backoffLimit (BackoffLimitExceeded).
    failed_reason = "MaxFailedIndexesExceeded" if stage == "generate" else "BackoffLimitExceeded"
    observed = Observed(
        teacher=TeacherState(exists=stage == "generate", ready=True),
        **{stage: job_state(job_object(code, failed_reason), [pod(stage, code, message)])},
    )
    conditions = [{"type": c.value, "status": "True", "reason": "Completed"} for c in BEFORE[stage]]
    old = DistillationJobStatus.model_validate({"phase": "Generating", "conditions": conditions})
    step = decide(job.spec, [], old, observed, NOW, "tiny")
    new = next_status(old, step, NOW, 1)
    new_events = events(old, new)
    assert all(e.message for e in new_events)
    return new


def condition(status: DistillationJobStatus, kind: ConditionType):
    return next(c for c in status.conditions if c.type == kind)


# ------------------------------------------------------------------ generate


def test_generate_success_reaches_the_operator(storage, tmp_path, vllm_teacher):
    root = fresh(storage, tmp_path)
    job = make_job()
    code, message = run(
        GenerateCommand(job=job, storage=str(root), teacher_url=vllm_teacher.base_url), tmp_path
    )
    assert code == 0, message
    status = operator_sees(job, "generate", code, message)
    assert status.phase is Phase.training
    summary = json.loads(message)
    records = summary["records"]
    assert records > 0 and status.progress.records == records
    prompts = summary["prompts"]
    assert condition(status, C.data_generated).message.startswith(f"{prompts} prompts, {records} records, ")


def test_a_malformed_input_line_is_named_in_the_job_status(storage, tmp_path, vllm_teacher):
    root = fresh(storage, tmp_path)
    lines = (root / "data" / "train.jsonl").read_text().splitlines()
    lines[11] = '{"id": "broken", "prompt": '  # line 12
    (root / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    job = make_job()
    code, message = run(
        GenerateCommand(job=job, storage=str(root), teacher_url=vllm_teacher.base_url), tmp_path
    )
    assert code == ExitCode.INVALID_SPEC  # InvalidInput
    status = operator_sees(job, "generate", code, message)
    assert status.phase is Phase.failed
    data = condition(status, C.data_generated)
    assert (data.status, data.reason) == ("False", "InvalidInput")
    assert "data.train" in data.message and "line 12: not valid JSON" in data.message
    assert "line 12: not valid JSON" in status.message and "last error: Error" not in status.message


def test_an_unreachable_teacher_is_named_in_the_job_status(storage, tmp_path):
    root = fresh(storage, tmp_path)
    job = make_job()
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, message = run(GenerateCommand(job=job, storage=str(root), teacher_url=url), tmp_path)
    assert code == ExitCode.STAGE_FAILED
    status = operator_sees(job, "generate", code, message)
    data = condition(status, C.data_generated)
    assert data.reason == "TeacherUnreachable" and f"the teacher at {url} is unreachable" in data.message


# ------------------------------------------------------------------ train


@pytest.fixture(scope="module")
def generated(storage, tmp_path_factory, vllm_teacher):
    """The storage after generation (the tiny teacher's real answers)."""
    root = tmp_path_factory.mktemp("contract-generated") / "storage"
    shutil.copytree(storage, root)
    command = GenerateCommand(job=make_job(), storage=str(root), teacher_url=vllm_teacher.base_url)
    code, message = run(command, root.parent)
    assert code == 0, message
    return root


def test_train_success_reaches_the_operator(generated, tmp_path):
    root = fresh(generated, tmp_path)
    job = make_job()
    code, message = run(TrainCommand(job=job, storage=str(root)), tmp_path)
    assert code == 0, message
    status = operator_sees(job, "train", code, message)
    assert status.phase is Phase.evaluating
    loss = json.loads(message)["trainLoss"]
    assert status.progress.train_loss == loss
    assert condition(status, C.student_trained).message == f"student trained, final loss {loss:.4g}"


def test_training_without_records_says_so_in_the_job_status(storage, tmp_path):
    root = fresh(storage, tmp_path)  # nothing generated
    job = make_job()
    code, message = run(TrainCommand(job=job, storage=str(root)), tmp_path)
    assert code == ExitCode.STAGE_FAILED
    status = operator_sees(job, "train", code, message)
    trained = condition(status, C.student_trained)
    assert trained.reason == "NoData" and "no teacher records under" in trained.message
    assert "train failed: spec.data.train: no teacher records" in status.message


def test_a_spec_training_cannot_use_is_named_in_the_job_status(generated, tmp_path):
    root = fresh(generated, tmp_path)
    # Logit KD, but the records were generated without the teacher's top-k.
    job = make_job(training={"method": "kd"}, generation={"topLogprobs": 3})
    code, message = run(TrainCommand(job=job, storage=str(root)), tmp_path)
    assert code == ExitCode.INVALID_SPEC
    trained = condition(operator_sees(job, "train", code, message), C.student_trained)
    assert (
        trained.reason == "InvalidSpec" and "spec.training.method: is 'kd' but no record" in trained.message
    )


# ------------------------------------------------------------------ evaluate


def test_evaluate_verdict_reaches_the_operator(generated, tmp_path, vllm_teacher):
    root = fresh(generated, tmp_path)
    job = make_job(evaluation={"compare": ["teacher"], "gate": {"minScore": 2.0}})
    command = EvaluateCommand(job=job, storage=str(root), teacher_url=vllm_teacher.base_url, gate_exit_code=0)
    code, message = run(command, tmp_path)
    assert code == 0, message  # a failed gate is a verdict, not a pod failure
    status = operator_sees(job, "evaluate", code, message)
    assert status.phase is Phase.failed
    gate = condition(status, C.quality_gate_passed)
    assert gate.reason == "GateFailed" and "minScore 2" in gate.message
    assert status.evaluation.teacher.score == json.loads(message)["evaluation"]["teacher"]["score"]
    assert status.artifacts.report == "jobs/tiny/reports/evaluation.json"


def test_evaluation_on_a_malformed_validation_file_says_which_line(generated, tmp_path, vllm_teacher):
    root = fresh(generated, tmp_path)
    (root / "data" / "validation.jsonl").write_text('{"id": "v1", "prompt": "1+1?", "answer": "2"}\n[1, 2]\n')
    job = make_job(evaluation={"compare": ["teacher"]})
    command = EvaluateCommand(job=job, storage=str(root), teacher_url=vllm_teacher.base_url, gate_exit_code=0)
    code, message = run(command, tmp_path)
    assert code == ExitCode.INVALID_SPEC  # InvalidInput
    evaluated = condition(operator_sees(job, "evaluate", code, message), C.evaluated)
    assert evaluated.reason == "InvalidInput" and "line 2: expected a JSON object" in evaluated.message


# ------------------------------------------------------------------ metrics per process


class HeldTeacher:
    """An OpenAI-compatible stub that lists its model and holds every chat request until released."""

    def __init__(self):
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._json({"data": [{"id": "teacher"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                release.wait(60)
                self._json(
                    {
                        "model": "teacher",
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "4"}}],
                    }
                )

            def _json(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.release.set()
        self.server.shutdown()


def test_a_stage_process_serves_only_its_own_series(storage, tmp_path):
    """The generate pod's /metrics: generation series and process metrics; none of the operator's or other stages'."""
    teacher = HeldTeacher()
    port = free_port()
    keep_all = {"verify": False, "dedup": False}  # the stub answers "4" to everything
    command = GenerateCommand(
        job=make_job(generation={"smokeTestPrompts": 1, "concurrency": 1, "filters": keep_all}),
        storage=str(fresh(storage, tmp_path)),
        teacher_url=teacher.url,
        metrics_port=port,
    )
    process = subprocess.Popen(
        command.argv(ENTRY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, TERMINATION_LOG_ENV: str(tmp_path / "t")},
    )
    try:
        text, deadline = "", time.monotonic() + 120
        while "distillery_generation_in_flight_requests 1.0" not in text:  # the smoke test's request is held
            assert process.poll() is None and time.monotonic() < deadline, "the stage did not serve /metrics"
            with contextlib.suppress(OSError):
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            time.sleep(0.2)
        teacher.release.set()  # the shard answers every prompt and ends
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        teacher.close()
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert {"distillery_generation_in_flight_requests", "process_cpu_seconds_total"} <= names
    foreign = {n for n in names if n.startswith("distillery_") and not n.startswith("distillery_generation_")}
    assert not foreign, sorted(foreign)
    assert process.returncode == 0
