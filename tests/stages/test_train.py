"""The training stage for real: tiny models, real torch training on CPU, the student served by vLLM.

Records are written here in the generation stage's format (see distillery.storage), with
correct answers to the tiny task (sums of two digits, sentiment of a short review) as the
teacher's responses; the KD records carry the tiny teacher's real top-k log-probabilities.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillery.api import DistillationJob
from distillery.contract.summaries import TrainSummary, parse_summary
from distillery.storage import Layout
from tests.support.training import REPO, answer_records, make_job, run_cli, toy_pairs, write_records

pytestmark = pytest.mark.stages


def teacher_records(teacher_dir: Path, pairs: list[tuple[str, str]], split: str, k: int = 5) -> list[dict]:
    """The tiny teacher's greedy answers with its top-k log-probabilities per token (what vLLM returns)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    records = answer_records(pairs, split)
    for record in records:
        inputs = tokenizer.apply_chat_template(
            record["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        entries = []
        for token, logits in zip(tokens, out.logits, strict=True):
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            values, ids = logp.topk(k)
            entries.append(
                {
                    "token_id": token,
                    "logprob": float(logp[token]),
                    "top": [[int(i), float(v)] for i, v in zip(ids, values, strict=True)],
                }
            )
        record["response"] = tokenizer.decode(tokens, skip_special_tokens=True)
        record["logprobs"] = entries
    return records


def greedy_answers(model_dir: Path, prompts: list[str]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    answers = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        answers.append(
            tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    return answers


# ---------------------------------------------------------------- sequence-level KD, end to end


@pytest.fixture(scope="module")
def sft_run(tiny_models, tmp_path_factory):
    """One SFT run through the CLI (what a pod runs): storage, job file, stdout and termination message."""
    root = tmp_path_factory.mktemp("train-sft")
    write_records(root, "toy", "train", answer_records(toy_pairs(256, seed=1), "train"))
    write_records(root, "toy", "validation", answer_records(toy_pairs(32, seed=2), "validation"))
    job = make_job("toy", tiny_models["student"], tiny_models["teacher"], epochs=4)
    job_file = root / "job.json"
    job_file.write_text(job.model_dump_json(by_alias=True, exclude_none=True))
    termination = root / "termination-log"
    result = run_cli(["train", "--job", str(job_file), "--storage", str(root)], termination)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "layout": Layout(root, "toy"), "result": result, "termination": termination}


def test_sft_loss_goes_down_and_the_report_says_so(sft_run):
    report = json.loads(sft_run["layout"].training_report.read_text())
    losses = [point["loss"] for point in report["history"]]
    assert report["step"] == len(losses) == 4 * 256 // 16
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    validation = [entry["loss"] for entry in report["validation"]]
    assert len(validation) == 4 and validation[-1] < validation[0]
    assert report["tokens"] > 0 and report["tokens_per_second"] > 0 and report["duration_seconds"] > 0
    assert report["tokens"] == report["history"][-1]["tokens"]
    assert 0 <= report["padding_fraction"] < 0.2  # length-grouped batches
    assert report["method"] == "sft" and report["device"] == "cpu" and report["precision"] == "fp32"
    # The summary: last line of stdout and the termination message agree, and parse as the typed summary.
    summary = json.loads(sft_run["result"].stdout.strip().splitlines()[-1])
    assert json.loads(sft_run["termination"].read_text()) == summary
    assert isinstance(parse_summary(sft_run["termination"].read_text()), TrainSummary)
    assert summary["trainLoss"] == losses[-1] and summary["validationLoss"] == validation[-1]
    assert "validation loss" in sft_run["result"].stdout  # progress a person can follow


def test_trained_student_answers_the_toy_prompts_better_than_before(sft_run, tiny_models):
    pairs = toy_pairs(40, seed=3)
    prompts, expected = [p for p, _ in pairs], [a for _, a in pairs]

    def accuracy(model_dir: Path) -> float:
        return sum(a == e for a, e in zip(greedy_answers(model_dir, prompts), expected, strict=True)) / len(
            pairs
        )

    before, after = accuracy(tiny_models["student"]), accuracy(sft_run["layout"].student)
    assert after >= before + 0.2, (before, after)


def test_saved_student_is_safetensors_and_is_served_by_vllm(sft_run, tmp_path):
    import httpx

    from distillery.serving.vllm import local_vllm_server
    from tests.fixtures_models import vllm_options

    student = sft_run["layout"].student
    assert (student / "model.safetensors").is_file() and (student / "config.json").is_file()
    assert (student / "tokenizer.json").is_file()
    prompts = [p for p, _ in toy_pairs(8, seed=4)]
    expected = greedy_answers(student, prompts)
    with local_vllm_server(
        str(student), "student", log_path=tmp_path / "vllm-student.log", **vllm_options()
    ) as server:
        served = []
        for prompt in prompts:
            response = httpx.post(
                f"{server.base_url}/chat/completions",
                timeout=60,
                json={
                    "model": "student",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 6,
                    "temperature": 0,
                },
            )
            assert response.status_code == 200, response.text
            served.append(response.json()["choices"][0]["message"]["content"].strip())
    # Same weights, same template: vLLM's greedy answers are the transformers ones (fp32 ties aside).
    assert sum(s == e for s, e in zip(served, expected, strict=True)) >= 6, (served, expected)


# ---------------------------------------------------------------- resume


def test_a_killed_training_resumes_from_its_checkpoint(tiny_models, tmp_path):
    from distillery.training.checkpoints import Checkpoints

    write_records(tmp_path, "resume", "train", answer_records(toy_pairs(128, seed=5), "train"))
    job = make_job(
        "resume",
        tiny_models["student"],
        tiny_models["teacher"],
        batchSize=8,
        epochs=2,
        checkpointEverySteps=4,
    )
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json(by_alias=True, exclude_none=True))
    layout = Layout(tmp_path, "resume")
    arguments = ["train", "--job", str(job_file), "--storage", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    process = subprocess.Popen(
        [sys.executable, "-m", "distillery", *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while Checkpoints(layout.checkpoints).latest() is None:  # a complete one, not one being written
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        assert process.poll() is None, "training finished before it could be killed"
        process.send_signal(signal.SIGKILL)  # a pod that dies: no clean shutdown
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not layout.student.exists()
    result = run_cli(arguments, tmp_path / "termination-log")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint step-" in result.stdout
    report = json.loads(layout.training_report.read_text())
    total = 2 * 128 // 8
    assert report["resumed_from_step"] > 0 and report["resumed_from_step"] % 4 == 0
    assert [p["step"] for p in report["history"]] == list(range(1, total + 1))  # no update done twice

    # The resumed run is the run that was never killed: same batches, optimizer state, schedule.
    fresh = tmp_path / "fresh"
    write_records(fresh, "resume", "train", answer_records(toy_pairs(128, seed=5), "train"))
    uninterrupted = run_cli(["train", "--job", str(job_file), "--storage", str(fresh)], tmp_path / "t2")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    baseline = json.loads(Layout(fresh, "resume").training_report.read_text())
    assert report["history"][-1]["loss"] == pytest.approx(baseline["history"][-1]["loss"], rel=1e-3)
    assert report["tokens"] == baseline["tokens"]


# ---------------------------------------------------------------- logit KD and LoRA


def kd_of(model_dir: Path, root: Path, job: DistillationJob) -> float:
    """The KD loss of a model on the job's validation records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.training.config import TrainConfig
    from distillery.training.loss import CausalLMLoss, evaluate_loss
    from distillery.training.student import load_examples

    files = [Layout(root, job.metadata.name).generated("validation") / "shard-00000-of-00001.jsonl"]
    examples, *_ = load_examples(files, AutoTokenizer.from_pretrained(model_dir), 128, True)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    config = TrainConfig(
        kd=True, alpha=job.spec.training.alpha, kd_temperature=job.spec.training.kd_temperature
    )
    return evaluate_loss(
        CausalLMLoss(model, config.kd_temperature), examples, config, pad_id=0, device=torch.device("cpu")
    )["kd"]


def test_logit_kd_learns_the_teachers_distributions(tiny_models, tmp_path):
    from distillery.training.metrics import REGISTRY
    from distillery.training.student import train_student

    write_records(
        tmp_path, "kd", "train", teacher_records(tiny_models["teacher"], toy_pairs(128, 6), "train")
    )
    write_records(
        tmp_path, "kd", "validation", teacher_records(tiny_models["teacher"], toy_pairs(16, 7), "validation")
    )
    job = make_job(
        "kd",
        tiny_models["student"],
        tiny_models["teacher"],
        method="kd",
        alpha=0.9,
        kdTemperature=1.0,
        epochs=3,
    )
    before = kd_of(tiny_models["student"], tmp_path, job)
    tokens_before = REGISTRY.get_sample_value("distillery_train_tokens_total") or 0.0
    summary = train_student(job, tmp_path)
    report = json.loads(Layout(tmp_path, "kd").training_report.read_text())
    # What /metrics showed while it ran (the same registry the worker serves).
    assert REGISTRY.get_sample_value("distillery_train_step") == report["step"]
    assert REGISTRY.get_sample_value("distillery_train_loss") == pytest.approx(
        report["history"][-1]["loss"], abs=1e-4
    )
    assert REGISTRY.get_sample_value("distillery_train_tokens_total") - tokens_before == report["tokens"]
    assert REGISTRY.get_sample_value("distillery_train_tokens_per_second") > 0
    assert summary.method == report["method"] == "kd"
    kd = [point["kd"] for point in report["history"]]
    assert len(kd) == report["step"] and sum(kd[-3:]) < 0.7 * sum(kd[:3]), kd
    assert all(
        point["loss"] == pytest.approx(0.1 * point["ce"] + 0.9 * point["kd"], abs=1e-4)
        for point in report["history"]
    )
    # On held-out prompts the student is closer to the teacher than before training.
    assert kd_of(Layout(tmp_path, "kd").student, tmp_path, job) < before


def test_logit_kd_with_mismatched_tokenizers_is_refused(tiny_models, tmp_path):
    write_records(tmp_path, "kd", "train", teacher_records(tiny_models["teacher"], toy_pairs(4, 8), "train"))
    job = make_job("kd", tiny_models["other-tokenizer-student"], tiny_models["teacher"], method="kd")
    termination = tmp_path / "termination-log"
    result = run_cli(
        ["train", "--job", job.model_dump_json(by_alias=True), "--storage", str(tmp_path)], termination
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith(
        "spec.training.method: is 'kd' but the student's and the teacher's tokenizers differ"
    )
    assert "vocabulary size" in message and "Use training.method: sft (sequence-level KD)" in message
    failure = json.loads(termination.read_text())["failure"]
    assert failure["reason"] == "InvalidSpec" and "tokenizers differ" in failure["message"]
    assert not Layout(tmp_path, "kd").checkpoints.exists()  # refused before any training


def test_lora_adapters_are_merged_into_the_saved_student(tiny_models, tmp_path):
    from safetensors import safe_open

    from distillery.training.student import train_student

    write_records(tmp_path, "lora", "train", answer_records(toy_pairs(64, seed=9), "train"))
    job = make_job(
        "lora",
        tiny_models["student"],
        tiny_models["teacher"],
        epochs=1,
        lora={"r": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]},
    )
    train_student(job, tmp_path)
    layout = Layout(tmp_path, "lora")
    report = json.loads(layout.training_report.read_text())
    assert 0 < report["trainable_parameters"] < report["parameters"] / 10
    with (
        safe_open(layout.student / "model.safetensors", "pt") as saved,
        safe_open(tiny_models["student"] / "model.safetensors", "pt") as base,
    ):
        assert not [k for k in saved.keys() if "lora" in k]  # noqa: SIM118 - safe_open has no __iter__
        assert set(saved.keys()) == set(base.keys())
        q = "model.layers.0.self_attn.q_proj.weight"
        k = "model.layers.0.self_attn.k_proj.weight"
        assert not saved.get_tensor(q).equal(base.get_tensor(q))  # adapted, and merged
        assert saved.get_tensor(k).equal(base.get_tensor(k))  # not a LoRA target: untouched
    assert len(greedy_answers(layout.student, ["What is 1+2?"])) == 1  # loads in transformers


# ---------------------------------------------------------------- several processes (torchrun)


def test_torchrun_processes_share_the_work_and_rank_0_writes(tiny_models, tmp_path):
    """The operator's multi-GPU command, run on CPU: two processes, gloo instead of NCCL."""
    from transformers import AutoTokenizer

    from distillery.contract.commands import TrainCommand
    from distillery.training.student import load_examples

    write_records(tmp_path, "ddp", "train", answer_records(toy_pairs(64, seed=10), "train"))
    job = make_job("ddp", tiny_models["student"], tiny_models["teacher"], batchSize=8, epochs=1, gpus=2)
    command = TrainCommand(job=job, storage=str(tmp_path)).argv()
    assert command[:3] == ["torchrun", "--standalone", "--nproc_per_node=2"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "operator"),
        "OMP_NUM_THREADS": "1",
        "DISTILLERY_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("training on cpu x2") == 1  # one progress stream: rank 0's
    report = json.loads(Layout(tmp_path, "ddp").training_report.read_text())
    assert report["world_size"] == 2
    assert report["step"] == 64 // 8 // 2  # each update takes one batch from each process
    examples, *_ = load_examples(
        [Layout(tmp_path, "ddp").generated("train") / "shard-00000-of-00001.jsonl"],
        AutoTokenizer.from_pretrained(tiny_models["student"]),
        128,
        False,
    )
    assert report["tokens"] == sum(len(e.input_ids) for e in examples)  # both ranks' tokens, each once
    assert (Layout(tmp_path, "ddp").student / "model.safetensors").is_file()
