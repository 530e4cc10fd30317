"""Generation against a real vLLM server (CPU build) serving the tiny teacher.

One server per session (the `vllm_teacher` fixture). Each test writes its own prompts:
single-digit additions, which the tiny teacher was pretrained to answer, with the sum as
the reference, so verification, dedup and the record format are checked for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest

from distillery.api import DistillationJob, TaskType
from distillery.contract.exit_codes import ExitCode
from distillery.generation.files import partial_path
from distillery.generation.shard import GenerationFailed, generate_shard
from distillery.serving.client import TeacherConnection
from distillery.serving.vllm import free_port
from distillery.storage import Layout
from distillery.tasks import extract_answer
from tests.stages.fault_proxy import FaultProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stages

REPO = Path(__file__).resolve().parents[2]


def additions(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "prompt": f"What is {i % 10}+{(i // 10) % 10}?",
            "answer": str(i % 10 + (i // 10) % 10),
        }
        for i in range(start, start + count)
    ]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path.name


# Keep every answer: tests that count records must not depend on what the random-ish teacher says.
KEEP_ALL = {"verify": False, "dedup": False, "requireFinished": False, "minResponseChars": 0}


def make_job(
    storage: Path, train: list[dict], validation: list[dict] | None = None, **generation
) -> DistillationJob:
    storage.mkdir(parents=True, exist_ok=True)
    spec = {
        "teacher": {"model": "teacher"},
        "student": {"model": "student"},
        "data": {
            "taskType": "math",
            "train": write_jsonl(storage / "train.jsonl", train),
            "systemPrompt": "",  # the tiny teacher was trained without one
        },
        "generation": {
            "temperature": 0.0,
            "maxTokens": 8,
            "concurrency": 8,
            "minSuccessRatio": 0.0,
            "requestTimeoutSeconds": 30,
            **generation,
        },
    }
    if validation is not None:
        spec["data"]["validation"] = write_jsonl(storage / "validation.jsonl", validation)
    return DistillationJob.model_validate({"metadata": {"name": "tiny"}, "spec": spec})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def outputs(job: DistillationJob, storage: Path, split: str = "train") -> tuple[list[dict], list[dict]]:
    """Accepted and rejected records of every shard of a split (final files only)."""
    layout, count = Layout(storage, "tiny"), job.spec.generation.shards
    accepted, rejected = [], []
    for k in range(count):
        accepted += read(layout.shard_records(split, k, count))
        rejected += read(layout.shard_rejected(split, k, count))
    return accepted, rejected


def assert_each_prompt_once(records: list[dict], prompts: list[dict], samples: int = 1) -> None:
    by_id = Counter(r["id"].split("#")[0] for r in records)
    assert by_id == Counter({p["id"]: samples for p in prompts})


@pytest.fixture
def teacher(vllm_teacher) -> TeacherConnection:
    return TeacherConnection(vllm_teacher.base_url, vllm_teacher.model)


def test_full_shard_writes_verified_records_with_logprobs(tmp_path, teacher):
    train = additions(30)
    train += [dict(p, id=f"dup{i}") for i, p in enumerate(train[:4])]  # same prompts again
    validation = additions(8, start=50)
    job = make_job(tmp_path, train, validation, topLogprobs=3)
    summary = generate_shard(job, tmp_path, 0, teacher)

    accepted, rejected = outputs(job, tmp_path)
    assert_each_prompt_once(accepted + rejected, train)
    reasons = Counter(r["reject_reason"] for r in rejected)
    assert reasons["duplicate"] == 4  # temperature 0: a repeated prompt gets the same answer
    assert len(accepted) >= 10, f"the tiny teacher should get most sums right; rejected: {reasons}"
    for record in accepted:
        assert extract_answer(TaskType.math, record["response"], []) == record["reference"], record
        assert record["teacher_model"] == "teacher" and record["finish_reason"] == "stop"
        assert record["messages"] == [{"role": "user", "content": train[record["line"] - 1]["prompt"]}]
        assert len(record["logprobs"]) == record["usage"]["completion_tokens"] > 0
        first = record["logprobs"][0]
        assert isinstance(first["token_id"], int) and len(first["top"]) == 3
        assert first["top"][0][1] >= first["top"][-1][1]
    for record in rejected:
        if record["reject_reason"] == "wrong_answer":
            assert extract_answer(TaskType.math, record["response"], []) != record["reference"]

    val_accepted, val_rejected = outputs(job, tmp_path, "validation")
    assert_each_prompt_once(val_accepted + val_rejected, validation)
    assert summary.records == len(accepted) + len(val_accepted)
    assert summary.rejected == dict(Counter(r["reject_reason"] for r in rejected + val_rejected))
    assert summary.output_tokens >= sum(r["usage"]["completion_tokens"] for r in accepted)
    assert summary.errors == 0 and summary.prompts == len(train) + len(validation)
    layout = Layout(tmp_path, "tiny")
    assert json.loads(layout.shard_summary("train", 0, 1).read_text())["records"] == len(accepted)
    assert not list(layout.generated("train").glob("*.partial"))

    # Run again: everything is done, nothing is asked or written twice.
    again = generate_shard(job, tmp_path, 0, teacher)
    assert again.records == summary.records and again.resumed == summary.prompts
    assert outputs(job, tmp_path) == (accepted, rejected)


def run_cli(job: DistillationJob, storage: Path, *args: str, env: dict | None = None, **kwargs):
    command = [
        sys.executable,
        "-m",
        "distillery",
        "generate",
        "--job",
        job.model_dump_json(by_alias=True),
        "--storage",
        str(storage),
        *args,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def test_three_shards_cover_every_prompt_exactly_once(tmp_path, teacher):
    train, validation = additions(25), additions(7, start=40)
    job = make_job(tmp_path, train, validation, shards=3, filters=KEEP_ALL)
    for k in (0, 1):
        generate_shard(job, tmp_path, k, teacher)
    # The last shard as its pod runs it: index from JOB_COMPLETION_INDEX, summary in the termination log.
    termination = tmp_path / "termination-log"
    process = run_cli(
        job,
        tmp_path,
        "--teacher-url",
        teacher.base_url,
        env={"JOB_COMPLETION_INDEX": "2", "DISTILLERY_TERMINATION_LOG": str(termination)},
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    summary = json.loads(termination.read_text())
    assert summary == json.loads(stdout)
    assert (summary["shard"], summary["shards"]) == (2, 3)
    assert "generate shard 2/3 train" in stderr  # the progress line

    for split, prompts in (("train", train), ("validation", validation)):
        accepted, rejected = outputs(job, tmp_path, split)
        assert rejected == []
        assert_each_prompt_once(accepted, prompts)
    shard_sizes = [len(read(Layout(tmp_path, "tiny").shard_records("train", k, 3))) for k in range(3)]
    assert shard_sizes == [9, 8, 8]


def test_restart_after_kill_loses_and_duplicates_nothing(tmp_path, teacher):
    train = additions(150)
    job = make_job(tmp_path, train, concurrency=4, samplesPerPrompt=2, temperature=1.0, filters=KEEP_ALL)
    partial = partial_path(Layout(tmp_path, "tiny").shard_records("train", 0, 1))
    process = run_cli(job, tmp_path, "--teacher-url", teacher.base_url, start_new_session=True)
    try:
        wait_for(lambda: partial.exists() and partial.read_text().count("\n") >= 40, "40 records", 240)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    lines = partial.read_text().splitlines()
    assert 40 <= len(lines) < 2 * len(train), "killed too late to test a restart"
    missing = max(set(range(1, 151)) - {json.loads(line)["line"] for line in lines})
    with open(partial, "a") as handle:  # a prompt with one of its two samples, and a write torn by the kill
        handle.write(json.dumps({**json.loads(lines[0]), "line": missing, "sample": 0}) + "\n" + '{"id": "q1')

    summary = generate_shard(job, tmp_path, 0, teacher)
    assert summary.resumed > 0 and summary.errors == 0
    accepted, rejected = outputs(job, tmp_path)
    assert rejected == []
    assert_each_prompt_once(accepted, train, samples=2)
    assert Counter((r["line"], r["sample"]) for r in accepted) == Counter(
        {(line, sample): 1 for line in range(1, 151) for sample in (0, 1)}
    )


def test_survives_500s_rate_limits_timeouts_and_dropped_connections(tmp_path, teacher):
    faults = {2: "500", 3: "drop", 5: "timeout", 7: "429", 8: "500", 11: "drop"}
    upstream = urlparse(teacher.base_url)
    train = additions(24)
    job = make_job(
        tmp_path,
        train,
        concurrency=4,
        requestTimeoutSeconds=3,
        maxRetries=6,
        smokeTestPrompts=2,
        minSuccessRatio=1.0,
        filters=KEEP_ALL,
    )
    proxy = FaultProxy(
        upstream.hostname, upstream.port, lambda n: faults.get(n) or ("500" if n % 9 == 0 else None)
    )
    with proxy:
        summary = generate_shard(job, tmp_path, 0, TeacherConnection(proxy.base_url, teacher.model))
    assert set(proxy.faults) == {"500", "drop", "timeout", "429"}
    assert summary.errors == 0 and summary.records == len(train)
    accepted, _ = outputs(job, tmp_path)
    assert_each_prompt_once(accepted, train)


def test_retries_run_out_and_the_success_ratio_fails_the_shard(tmp_path, teacher):
    upstream = urlparse(teacher.base_url)
    job = make_job(
        tmp_path,
        additions(12),
        concurrency=2,
        maxRetries=1,
        smokeTestPrompts=1,
        minSuccessRatio=0.9,
        filters=KEEP_ALL,
    )
    # After the first 4 requests the teacher only answers 500: the remaining prompts give up.
    proxy = FaultProxy(upstream.hostname, upstream.port, lambda n: "500" if n > 4 else None)
    with (
        proxy,
        pytest.raises(
            GenerationFailed,
            match=r"train: only 4 of 12 prompts .* generation.minSuccessRatio 0.9; .*http_500",
        ),
    ):
        generate_shard(job, tmp_path, 0, TeacherConnection(proxy.base_url, teacher.model))
    # The failed shard leaves only partial files; a restart retries the failed prompts.
    layout = Layout(tmp_path, "tiny")
    assert not layout.shard_records("train", 0, 1).exists()
    summary = generate_shard(job, tmp_path, 0, teacher)
    assert summary.records == 12 and summary.errors == 0


def test_smoke_test_fails_fast_with_the_reason(tmp_path, teacher):
    started = time.monotonic()
    job = make_job(tmp_path / "a", additions(6))
    with pytest.raises(GenerationFailed, match=r"unreachable.*--teacher-url"):
        generate_shard(
            job, tmp_path / "a", 0, TeacherConnection(f"http://127.0.0.1:{free_port()}/v1", "teacher")
        )
    job = make_job(tmp_path / "b", additions(6))
    with pytest.raises(GenerationFailed, match=r"serves \['teacher'\], not 'nope'"):
        generate_shard(job, tmp_path / "b", 0, TeacherConnection(teacher.base_url, "nope"))
    strict = make_job(tmp_path / "c", additions(6), filters={"minResponseChars": 500})
    with pytest.raises(
        GenerationFailed, match=r"every answer of the teacher was rejected \(\{'too_short': 3\}\)"
    ):
        generate_shard(strict, tmp_path / "c", 0, teacher)
    assert time.monotonic() - started < 60


def test_malformed_input_fails_before_any_request_with_the_line(tmp_path):
    job = make_job(tmp_path, additions(3))
    with open(tmp_path / "train.jsonl", "a") as handle:
        handle.write('{"id": "broken", "prompt": "What is 1+1?"\n')
    # No server at this URL: the input is checked before the teacher is contacted.
    process = run_cli(job, tmp_path, "--teacher-url", f"http://127.0.0.1:{free_port()}/v1")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.INVALID_SPEC  # InvalidInput: the input the spec names
    assert "data.train (" in stderr and "train.jsonl): line 4: not valid JSON" in stderr
