"""On-policy distillation for real: the tiny student samples, the session's vLLM teacher grades, torch trains.

The teacher records the loop trains on between on-policy updates are written here in the generation
stage's format with the right answers (as tests/stages/test_train.py does); on-policy updates use only
their prompts.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from distillery.api import DistillationJob
from distillery.contract.summaries import TrainSummary, parse_summary
from distillery.storage import Layout
from tests.support.training import (
    REPO,
    answer_records,
    make_job,
    run_cli,
    toy_pairs,
    write_records,
)

pytestmark = pytest.mark.stages

ON_POLICY = {"fraction": 1.0, "maxTokens": 6}


def rebuilt(job: DistillationJob, **spec) -> DistillationJob:
    document = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"].update(spec)
    return DistillationJob.model_validate(document)


def examples(model_dir: Path, pairs: list[tuple[str, str]]) -> list:
    """The pairs as the training stage encodes them with the model's tokenizer (prompt + answer)."""
    from transformers import AutoTokenizer

    from distillery.training.data import encode

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [encode(record, tokenizer, 128) for record in answer_records(pairs, "validation")]


def on_policy_loss(model_dir: Path, teacher, pairs: list[tuple[str, str]], seed: int = 0) -> float:
    """The mean reverse KL per sampled token of `model_dir`'s own samples of the pairs' prompts, graded by the
    served teacher: what an on-policy update minimises."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.serving.prompt_logprobs import PromptLogprobsClient
    from distillery.training.loss import CausalLMLoss, move
    from distillery.training.onpolicy import OnPolicyConfig, OnPolicySource, stop_token_ids

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with PromptLogprobsClient(teacher.connection(), timeout=60, max_retries=2) as client:
        source = OnPolicySource(
            model,
            OnPolicyConfig(max_new_tokens=6),
            client.grade,
            stop_ids=stop_token_ids(tokenizer),
            pad_id=0,
            seed=seed,
            rank=0,
            device=torch.device("cpu"),
        )
        state = {"step": 0}
        batches = source.micro_batches([examples(model_dir, pairs)], state)
    with torch.no_grad():
        _, total = CausalLMLoss(model)(**move(batches[0], torch.device("cpu")), reverse=True)
    assert state["on_policy"]["scored_tokens"] == batches[0]["top_ids"].shape[0] > 0
    return float(total) / batches[0]["top_ids"].shape[0]


def test_the_loss_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(tiny_models, vllm_teacher):
    pairs = toy_pairs(16, seed=20)
    itself = on_policy_loss(tiny_models["teacher"], vllm_teacher, pairs)
    other = on_policy_loss(tiny_models["student"], vllm_teacher, pairs)
    # The same weights in transformers and in vLLM (fp32 both): equal up to float rounding.
    assert abs(itself) < 1e-3, itself
    assert other > 0.5, other


def test_a_teacher_asked_for_more_logprobs_than_it_serves_cannot_grade(vllm_teacher):
    from distillery.serving.prompt_logprobs import PromptLogprobsClient, TeacherCannotGrade

    with PromptLogprobsClient(vllm_teacher.connection(), timeout=60, max_retries=0) as client:
        graded = client.grade([[1, 5, 6, 7]], [1], 20)[0]
        assert len(graded.positions) == 3 and all(len(p) >= 20 for p in graded.positions)
        with pytest.raises(TeacherCannotGrade, match=r"greater than max allowed: 20"):
            client.grade([[1, 5, 6, 7]], [1], 21)  # vLLM's --max-logprobs is 20 by default


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tiny_models, vllm_teacher, tmp_path_factory):
    """One on-policy run (every update on-policy), through the library as the stage runs it."""
    from distillery.training.metrics import REGISTRY
    from distillery.training.student import train_student

    root = tmp_path_factory.mktemp("onpolicy")
    write_records(root, "op", "train", answer_records(toy_pairs(256, seed=21), "train"))
    job = make_job(
        "op", tiny_models["student"], tiny_models["teacher"], method="onPolicy", epochs=4, onPolicy=ON_POLICY
    )
    graded_before = REGISTRY.get_sample_value("distillery_train_teacher_graded_tokens_total") or 0.0
    summary = train_student(job, root, vllm_teacher.base_url, "teacher")
    graded = REGISTRY.get_sample_value("distillery_train_teacher_graded_tokens_total") - graded_before
    return {
        "summary": summary,
        "layout": Layout(root, "op"),
        "graded": graded,
        "loss_metric": REGISTRY.get_sample_value("distillery_train_on_policy_loss"),
    }


def token_agreement(model_dir: Path, teacher_dir: Path, pairs: list[tuple[str, str]]) -> float:
    """How many tokens of the teacher's greedy answers the student predicts first (argmax), given the same
    prefix: how often the two would agree on the next token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    hits = total = 0
    for prompt, _ in pairs:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            sequence = teacher.generate(ids, max_new_tokens=6, do_sample=False)
            answer = sequence[0, ids.shape[1] :]
            predicted = student(sequence).logits[0, ids.shape[1] - 1 : -1].argmax(-1)
        hits += int((predicted == answer).sum())
        total += len(answer)
    return hits / total


def test_on_policy_training_brings_the_student_closer_to_the_teacher(trained, tiny_models, vllm_teacher):
    """From a random 1-layer student, 64 on-policy updates (measured: reverse KL 7.3 -> 5.1 nats per sampled
    token; the teacher's next token predicted 1% -> 30% of the time). Greedy answers do not match yet:
    the student learns the first token of each answer before the rest."""
    held_out = toy_pairs(24, seed=22)
    before = on_policy_loss(tiny_models["student"], vllm_teacher, held_out)
    after = on_policy_loss(trained["layout"].student, vllm_teacher, held_out)
    assert after < 0.8 * before, (before, after)
    agreement = [
        token_agreement(m, tiny_models["teacher"], held_out)
        for m in (tiny_models["student"], trained["layout"].student)
    ]
    assert agreement[1] >= agreement[0] + 0.15, agreement


def test_the_report_summary_and_metrics_show_the_on_policy_loss(trained):
    report = json.loads(trained["layout"].training_report.read_text())
    summary: TrainSummary = trained["summary"]
    history = report["history"]
    assert report["step"] == len(history) == 4 * 256 // 16
    assert all("on_policy" in point and "ce" not in point for point in history)  # every update on-policy
    assert summary.method == "onPolicy" and summary.on_policy_updates == len(history)
    assert summary.on_policy_loss == history[-1]["on_policy"] == summary.train_loss
    assert trained["loss_metric"] == pytest.approx(history[-1]["on_policy"], abs=1e-4)
    assert summary.teacher_scored_tokens == trained["graded"] > 0
    assert summary.teacher_prompt_tokens > summary.teacher_scored_tokens  # prompts are sent with the samples
    assert report["on_policy"]["sample_seconds"] > 0 and report["on_policy"]["grade_seconds"] > 0
    assert report["hyperparameters"]["onPolicy"]["fraction"] == 1.0


def test_a_mix_alternates_on_policy_and_teacher_data_updates(tiny_models, vllm_teacher, tmp_path):
    from distillery.training.student import train_student

    write_records(tmp_path, "mix", "train", answer_records(toy_pairs(64, seed=23), "train"))
    job = make_job(
        "mix",
        tiny_models["student"],
        tiny_models["teacher"],
        method="onPolicy",
        epochs=1,
        onPolicy={**ON_POLICY, "fraction": 0.5, "samplesPerPrompt": 2},
    )
    summary = train_student(job, tmp_path, vllm_teacher.base_url, "teacher")
    history = json.loads(Layout(tmp_path, "mix").training_report.read_text())["history"]
    assert ["on_policy" in p for p in history] == [False, True, False, True]
    assert ["ce" in p for p in history] == [True, False, True, False]
    assert summary.on_policy_updates == 2


# ---------------------------------------------------------------- resume


def test_a_killed_on_policy_training_resumes_without_repeating_updates(tiny_models, vllm_teacher, tmp_path):
    from distillery.training.checkpoints import Checkpoints

    def storage(root: Path) -> list[str]:
        write_records(root, "resume", "train", answer_records(toy_pairs(96, seed=24), "train"))
        job = make_job(
            "resume",
            tiny_models["student"],
            tiny_models["teacher"],
            method="onPolicy",
            batchSize=8,
            epochs=2,
            checkpointEverySteps=4,
            onPolicy=ON_POLICY,
        )
        (root / "job.json").write_text(job.model_dump_json(by_alias=True, exclude_none=True))
        return [
            "train",
            "--job",
            str(root / "job.json"),
            "--storage",
            str(root),
            "--teacher-url",
            vllm_teacher.base_url,
        ]

    arguments = storage(tmp_path)
    layout = Layout(tmp_path, "resume")
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    process = subprocess.Popen(
        [sys.executable, "-m", "distillery", *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while Checkpoints(layout.checkpoints).latest() is None:
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        assert process.poll() is None, "training finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = run_cli(arguments, tmp_path / "termination-log")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(layout.training_report.read_text())
    total = 2 * 96 // 8
    assert report["resumed_from_step"] > 0 and report["resumed_from_step"] % 4 == 0
    assert [p["step"] for p in report["history"]] == list(range(1, total + 1))  # no update done twice
    assert report["on_policy"]["updates"] == total
    summary = parse_summary((tmp_path / "termination-log").read_text())
    assert summary.on_policy_updates == total and summary.resumed_from_step == report["resumed_from_step"]

    # The resumed run is the run that was never killed: each update sampled from its own seed, with the
    # same weights, graded by the same teacher.
    fresh = tmp_path / "fresh"
    uninterrupted = run_cli(storage(fresh), tmp_path / "t2")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    baseline = json.loads(Layout(fresh, "resume").training_report.read_text())
    assert [p["on_policy"] for p in report["history"]] == pytest.approx(
        [p["on_policy"] for p in baseline["history"]], rel=1e-3
    )
    assert report["on_policy"]["scored_tokens"] == baseline["on_policy"]["scored_tokens"]


# ---------------------------------------------------------------- the teacher: an endpoint, a refusal


def test_an_endpoint_teacher_is_checked_through_its_own_answers(tiny_models, vllm_teacher, tmp_path):
    """teacher.endpoint: no tokenizer to load; the first request shows whether its ids mean the student's text."""
    from distillery.errors import InvalidJob
    from distillery.training.student import train_student

    endpoint = {"endpoint": {"url": vllm_teacher.base_url, "model": "teacher"}}
    write_records(tmp_path, "ep", "train", answer_records(toy_pairs(16, seed=25), "train"))
    job = rebuilt(
        make_job(
            "ep",
            tiny_models["student"],
            tiny_models["teacher"],
            method="onPolicy",
            epochs=1,
            onPolicy=ON_POLICY,
        ),
        teacher=endpoint,
    )
    assert train_student(job, tmp_path).on_policy_updates == 1  # the endpoint's URL, from the spec

    other = tmp_path / "other"
    write_records(other, "ep", "train", answer_records(toy_pairs(16, seed=25), "train"))
    job = rebuilt(job, student={"model": str(tiny_models["other-tokenizer-student"])})
    with pytest.raises(
        InvalidJob,
        match=r"^spec\.training\.method: is 'onPolicy' but the teacher reads token ids "
        r"differently from the student's tokenizer",
    ):
        train_student(job, other)
    assert not Layout(other, "ep").checkpoints.exists()


class _Forgetful(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that answers completions without `prompt_logprobs`, as APIs other than
    vLLM do: the vLLM teacher's answer, with that field dropped."""

    upstream = ""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = urllib.request.Request(
            self.upstream + self.path.removeprefix("/v1"),
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        for choice in answer.get("choices", []):
            choice.pop("prompt_logprobs", None)
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_served_teacher_that_returns_no_prompt_logprobs_is_refused_as_invalid_spec(
    tiny_models, vllm_teacher, tmp_path
):
    _Forgetful.upstream = vllm_teacher.base_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forgetful)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write_records(tmp_path, "no", "train", answer_records(toy_pairs(16, seed=26), "train"))
        job = make_job(
            "no", tiny_models["student"], tiny_models["teacher"], method="onPolicy", onPolicy=ON_POLICY
        )
        termination = tmp_path / "termination-log"
        url = f"http://127.0.0.1:{server.server_port}/v1"
        result = run_cli(
            [
                "train",
                "--job",
                job.model_dump_json(by_alias=True),
                "--storage",
                str(tmp_path),
                "--teacher-url",
                url,
            ],
            termination,
        )
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("spec.teacher.model: cannot grade the student's samples")
    )
    failure = json.loads(termination.read_text())["failure"]
    assert failure["reason"] == "InvalidSpec" and "prompt logprobs" in failure["message"]
    assert not Layout(tmp_path, "no").checkpoints.exists()


def test_a_served_teacher_with_another_tokenizer_is_refused_before_training(tiny_models, tmp_path):
    write_records(tmp_path, "tok", "train", answer_records(toy_pairs(4, seed=27), "train"))
    job = make_job("tok", tiny_models["other-tokenizer-student"], tiny_models["teacher"], method="onPolicy")
    termination = tmp_path / "termination-log"
    result = run_cli(
        [
            "train",
            "--job",
            job.model_dump_json(by_alias=True),
            "--storage",
            str(tmp_path),
            "--teacher-url",
            "http://127.0.0.1:9/v1",
        ],
        termination,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "spec.training.method: is 'onPolicy' but the student's and the teacher's tokenizers differ"
    )
    assert json.loads(termination.read_text())["failure"]["reason"] == "InvalidSpec"
