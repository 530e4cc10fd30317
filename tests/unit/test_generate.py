"""Pure pieces of generation and teacher launch: sharding, input errors, filters, resume, retries."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from distillery.api import DataSpec, FilterSpec, GenerationSpec, TaskType, TeacherSpec
from distillery.contract.commands import API_KEY_ENV, VLLM_MODULE, teacher_server_args
from distillery.contract.exit_codes import ExitCode
from distillery.contract.shards import SplitStats
from distillery.generation.files import cut_torn_tail, recover
from distillery.generation.filters import rejection, request_params
from distillery.serving.client import (
    BACKOFF_CAP_SECONDS,
    RequestFailed,
    backoff_delay,
    parse_logprobs,
    teacher_connection,
)
from distillery.tasks.prompts import InputError, iter_prompts, owned

pytestmark = pytest.mark.unit

MATH = DataSpec.model_validate({"taskType": "math", "train": "t.jsonl"})


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_shards_cover_every_record_exactly_once(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}"}) for i in range(23)]
    lines.insert(5, "")  # blank lines are not records
    path = write_lines(tmp_path / "in.jsonl", lines)
    seen = Counter()
    for k in range(4):
        seen.update(p.messages[-1]["content"] for p in iter_prompts(MATH, path, k, 4))
    assert seen == Counter({f"q{i}": 1 for i in range(23)})
    assert [owned(p, 1, 3) for p in range(6)] == [False, True, False, False, True, False]


def test_limit_counts_records_across_all_shards(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [json.dumps({"prompt": f"q{i}"}) for i in range(10)])
    got = [p.messages[-1]["content"] for k in range(3) for p in iter_prompts(MATH, path, k, 3, limit=4)]
    assert sorted(got) == ["q0", "q1", "q2", "q3"]


def test_malformed_line_names_the_line(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}', '{"prompt": "b"', "[1, 2]"])
    with pytest.raises(InputError, match=r"data.train \(.*in.jsonl\): line 2: not valid JSON"):
        list(iter_prompts(MATH, path, 0, 1, field_name="data.train"))
    # The broken line belongs to shard 1 of 2 only; shard 0 reads past it and fails on line 3.
    with pytest.raises(InputError, match="line 3: expected a JSON object, got list"):
        list(iter_prompts(MATH, path, 0, 2))
    with pytest.raises(InputError, match=r"line 1: field 'prompt' \(data.fields.prompt\) is missing"):
        list(iter_prompts(MATH, write_lines(tmp_path / "x.jsonl", ['{"question": "a"}']), 0, 1))
    with pytest.raises(InputError, match=r"absent.jsonl\): does not exist") as missing:
        list(iter_prompts(MATH, tmp_path / "absent.jsonl", 0, 1, field_name="data.train"))
    assert missing.value.reason.value == "InputNotFound"


def test_filters_reject_with_a_reason():
    filters = FilterSpec(min_response_chars=2, max_response_chars=40)

    def verdict(text, finish="stop", reference=None):
        found = rejection(filters, TaskType.math, [], text, finish, reference)
        return found and found[0]

    assert verdict("Answer: 4", reference="4") is None
    assert verdict("Answer: 5", reference="4") == "wrong_answer"
    assert verdict("Answer: 5") is None  # no reference: nothing to verify against
    assert verdict("Answer: 4", finish="length") == "truncated"
    assert verdict(" x ") == "too_short"
    assert verdict("x" * 41) == "too_long"
    assert rejection(FilterSpec(verify=False), TaskType.math, [], "5", "stop", "4") is None


def test_request_params_follow_the_spec():
    plain = request_params(GenerationSpec(temperature=0.2, topP=0.9, maxTokens=16))
    assert plain == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 16, "n": 1}
    kd = request_params(GenerationSpec(topLogprobs=5, seed=3, samplesPerPrompt=2))
    assert kd["top_logprobs"] == 5 and kd["logprobs"] is True and kd["return_tokens_as_token_ids"] is True
    assert kd["seed"] == 3 and kd["n"] == 2


def test_parse_logprobs_keeps_token_ids():
    content = [
        {
            "token": "token_id:7",
            "logprob": -0.1,
            "top_logprobs": [
                {"token": "token_id:7", "logprob": -0.1},
                {"token": "token_id:9", "logprob": -2.5},
            ],
        }
    ]
    assert parse_logprobs(content) == [{"token_id": 7, "logprob": -0.1, "top": [[7, -0.1], [9, -2.5]]}]
    with pytest.raises(RequestFailed, match="return_tokens_as_token_ids"):
        parse_logprobs([{"token": "hello", "logprob": -1.0}])


def test_backoff_grows_is_jittered_capped_and_honours_retry_after():
    rng = random.Random(0)
    first = [backoff_delay(0, rng) for _ in range(50)]
    assert min(first) >= 0.25 and max(first) <= 0.5 and len(set(first)) > 1
    assert all(2.0 <= backoff_delay(3, rng) <= 4.0 for _ in range(20))
    assert all(backoff_delay(30, rng) <= BACKOFF_CAP_SECONDS for _ in range(20))
    assert backoff_delay(0, rng, retry_after=7) == 7


def record(line, sample=0, **extra):
    return json.dumps(
        {
            "line": line,
            "sample": sample,
            "messages": [{"role": "user", "content": str(line)}],
            "response": f"r{line}.{sample}",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            **extra,
        }
    )


def test_cut_torn_tail(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a"')
    assert cut_torn_tail(path) == 4
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert cut_torn_tail(path) == 0


def test_recover_skips_done_lines_and_drops_partly_written_prompts(tmp_path):
    records, rejected = tmp_path / "r.partial", tmp_path / "x.partial"
    # Two samples per prompt. Line 1: both accepted. Line 3: one accepted, one rejected.
    # Line 5: only one sample written before the kill (must be redone), plus a torn line.
    records.write_text(record(1) + "\n" + record(1, 1) + "\n" + record(3) + "\n" + record(5) + "\n" + '{"li')
    rejected.write_text(record(3, 1, reject_reason="wrong_answer") + "\n")
    stats, seen = SplitStats(prompts=3), set()
    counts = recover(records, rejected, samples=2, input_lines=5, stats=stats, seen=seen)
    assert [counts[line] for line in (1, 3, 5)] == [2, 2, 0]
    assert (stats.done, stats.resumed, stats.records, stats.accepted_prompts) == (2, 2, 3, 2)
    assert stats.rejected == Counter({"wrong_answer": 1})
    assert stats.output_tokens == 8 and stats.prompt_tokens == 6
    assert len(seen) == 3
    assert [json.loads(line)["line"] for line in records.read_text().splitlines()] == [1, 1, 3]


def test_recover_refuses_records_from_another_input(tmp_path):
    records = tmp_path / "r.partial"
    records.write_text(record(9) + "\n")
    with pytest.raises(Exception, match="input changed"):
        recover(records, tmp_path / "none", samples=1, input_lines=4, stats=SplitStats(), seen=None)


def test_vllm_server_args_from_the_spec():
    teacher = TeacherSpec(
        model="m",
        servedModelName="big",
        gpus=4,
        tensorParallelSize=4,
        maxModelLen=4096,
        dtype="bfloat16",
        extraArgs=["--enable-prefix-caching"],
    )
    args = teacher_server_args(teacher, "/data/models/m", port=8080)
    assert args == [
        "--model",
        "/data/models/m",
        "--served-model-name",
        "big",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--dtype",
        "bfloat16",
        "--tensor-parallel-size",
        "4",
        "--max-model-len",
        "4096",
        "--enable-prefix-caching",
    ]


def test_teacher_connection_from_endpoint_or_served_model():
    external = TeacherSpec(endpoint={"url": "https://llm.example.com/v1/", "model": "gpt"})
    connection = teacher_connection(external, environ={API_KEY_ENV: "sk-1"})
    assert (connection.base_url, connection.model, connection.api_key) == (
        "https://llm.example.com/v1",
        "gpt",
        "sk-1",
    )
    assert "sk-1" not in repr(connection)
    served = teacher_connection(TeacherSpec(model="m"), "http://teacher:8000/v1", environ={})
    assert (served.model, served.api_key) == ("teacher", None)
    with pytest.raises(ValueError, match="--teacher-url"):
        teacher_connection(TeacherSpec(model="m"), None, environ={})


def job_document(teacher: dict) -> dict:
    return {
        "metadata": {"name": "j"},
        "spec": {
            "teacher": teacher,
            "student": {"model": "s"},
            "data": {"taskType": "qa", "train": "t.jsonl"},
        },
    }


def test_the_teacher_pod_runs_the_contract_vllm_command():
    # What was `distillery teacher --dry-run`: the teacher Deployment runs vLLM directly, with
    # the contract's arguments, the same ones a local server gets (with its own host and port).
    from distillery.api import DistillationJob
    from distillery.manifests import BuildConfig, build

    document = job_document({"model": "models/big", "gpus": 0})
    document["metadata"].update(namespace="ns", uid="u-1")
    document["spec"]["storage"] = {"pvc": {"claimName": "data"}}
    job = DistillationJob.model_validate(document)
    container = build("teacher", job, BuildConfig())["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python3", "-m", VLLM_MODULE]
    # ... plus, on CPU, the KV cache size a pod needs (vLLM would size it from the node's memory).
    from distillery.manifests.teacher import cpu_kv_cache_args

    expected = teacher_server_args(job.spec.teacher, "models/big", port=8000) + cpu_kv_cache_args(job)
    assert container["args"] == expected and "--kv-cache-memory-bytes" in expected
    args = " ".join(teacher_server_args(job.spec.teacher, "/data/models/big", port=9000))
    assert "--model /data/models/big --served-model-name teacher" in args
    assert "--port 9000" in args


def test_an_external_endpoint_has_no_teacher_pod():
    from distillery.api import DistillationJob
    from distillery.manifests import BuildConfig, build

    document = job_document({"endpoint": {"url": "https://x.example/v1", "model": "m"}})
    document["metadata"].update(namespace="ns", uid="u-1")
    document["spec"]["storage"] = {"pvc": {"claimName": "data"}}
    with pytest.raises(ValueError, match="an endpoint needs no Deployment"):
        build("teacher", DistillationJob.model_validate(document), BuildConfig())


def test_serve_teacher_passes_an_external_endpoint_through(tmp_path, monkeypatch):
    from distillery.api import DistillationJob
    from distillery.serving.vllm import serve_teacher

    monkeypatch.setenv(API_KEY_ENV, "sk-2")
    job = DistillationJob.model_validate(
        job_document({"endpoint": {"url": "https://x.example/v1", "model": "m"}})
    )
    with serve_teacher(job, tmp_path) as connection:
        assert (connection.base_url, connection.model, connection.api_key) == (
            "https://x.example/v1",
            "m",
            "sk-2",
        )


def test_generate_command_rejects_a_shard_index_out_of_range(tmp_path, capsys, monkeypatch):
    import argparse

    from distillery.stages import generate

    def main(argv):  # `distillery generate ...`, in this process
        parser = argparse.ArgumentParser()
        generate.add_arguments(parser)
        return generate.main(parser.parse_args(argv[1:]))

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    monkeypatch.setenv("DISTILLERY_TERMINATION_LOG", str(tmp_path / "termination"))
    job = json.dumps(job_document({"model": "m"}))
    assert (
        main(["generate", "--job", job, "--storage", str(tmp_path), "--teacher-url", "http://t:8000/v1"])
        == ExitCode.INVALID_SPEC  # an InvalidSpec summary: the spec's shard count is the one to fix
    )
    assert "shard index 3 is out of range; expected 0-0" in capsys.readouterr().err
    termination = json.loads((tmp_path / "termination").read_text())
    assert termination["failure"]["reason"] == "InvalidSpec" and termination["shard"] == 3
