"""Records -> training examples, batches and the loss wrapper of the training stage (no training runs)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from distillery.api import DistillationJob
from distillery.contract.records import read_records
from distillery.training.data import (
    IGNORE,
    collate,
    encode,
    length_grouped_batches,
    record_files,
)

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(scope="module")
def tokenizer():
    from make_tiny_models import build_tokenizer  # hack/ is on sys.path (tests/conftest.py)

    return build_tokenizer(600)


def _teacher_logprobs(tokenizer, response: str, with_stop: bool) -> list[dict]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if with_stop:  # a server may report the stop token it sampled
        ids = [*ids, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return [{"token_id": i, "logprob": -0.1, "top": [[i, -0.1], [7, -2.5]]} for i in ids]


def test_loss_is_on_the_answer_and_the_stop_token_only(tokenizer):
    example = encode({"messages": MESSAGES, "response": "The answer is 5."}, tokenizer, 512)
    prompt = tokenizer.decode(example.input_ids[: example.prompt_length])
    learned = tokenizer.decode(example.input_ids[example.prompt_length :])
    assert prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert learned == "The answer is 5.<|im_end|>\n"
    # Tokenized exactly as a server tokenizes the prompt at inference:
    served = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert (
        example.input_ids[: example.prompt_length] == tokenizer(served, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("with_stop", [False, True])
def test_teacher_tokens_line_up_with_their_top_k(tokenizer, with_stop):
    record = {
        "messages": MESSAGES,
        "response": "The answer is 5.",
        "logprobs": _teacher_logprobs(tokenizer, "The answer is 5.", with_stop),
    }
    plain = encode(record, tokenizer, 512)
    teacher = encode(record, tokenizer, 512, use_teacher_tokens=True)
    assert plain.teacher_top == {}
    assert teacher.input_ids == plain.input_ids  # the stop token is not doubled
    assert len(teacher.teacher_top) == len(record["logprobs"])
    for position, top in teacher.teacher_top.items():
        assert top[0][0] == teacher.input_ids[position]  # each top-k sits at the token it scored
        assert position >= teacher.prompt_length


def test_truncation_drops_what_does_not_fit(tokenizer):
    record = {"messages": MESSAGES, "response": "one two three four five six seven eight nine ten"}
    record["logprobs"] = _teacher_logprobs(tokenizer, record["response"], False)
    full = encode(record, tokenizer, 512, use_teacher_tokens=True)
    cut = encode(record, tokenizer, full.prompt_length + 3, use_teacher_tokens=True)
    assert len(cut.input_ids) == full.prompt_length + 3
    assert sorted(cut.teacher_top) == [full.prompt_length, full.prompt_length + 1, full.prompt_length + 2]
    assert encode(record, tokenizer, full.prompt_length) is None  # no room left for an answer


def test_record_files_skip_rejected_and_errors_name_the_line(tmp_path):
    (tmp_path / "shard-00000-of-00002.jsonl").write_text(
        json.dumps({"messages": [], "response": "a"}) + "\n\n"
    )
    (tmp_path / "shard-00000-of-00002.rejected.jsonl").write_text("{}\n")
    (tmp_path / "shard-00001-of-00002.jsonl").write_text('{"messages": []}\n')
    files = record_files(tmp_path)
    assert [f.name for f in files] == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    assert record_files(tmp_path / "absent") == []
    with pytest.raises(ValueError, match=r"shard-00001-of-00002.jsonl:1: expected 'messages'"):
        list(read_records(files))


@pytest.mark.parametrize("dedup", [False, True])
def test_examples_do_not_depend_on_the_order_shards_wrote_their_records(tmp_path, tokenizer, dedup):
    """A shard writes answers as they come back (and a resumed shard after its restart); the student
    must train on the same list whatever that order, or a resume changes the student."""
    from distillery.training.student import load_examples

    def record(line: int, question: str, answer: str) -> str:
        messages = [{"role": "user", "content": question}]
        return json.dumps({"id": f"q{line}", "line": line, "messages": messages, "response": answer}) + "\n"

    records = [record(n, f"What is {n}+1?", str(n + 1)) for n in range(1, 13)]
    records += [record(13, "What is 0+1?", "1"), record(14, "What is 0+1?", "1")]  # answered twice, alike
    loaded = []
    for order in (range(len(records)), [5, 13, 0, 9, 2, 12, 7, 1, 11, 4, 10, 3, 8, 6]):
        run = tmp_path / f"run{len(loaded)}"
        run.mkdir()
        written = [records[i] for i in order]
        (run / "shard-00000-of-00002.jsonl").write_text("".join(written[0::2]))
        (run / "shard-00001-of-00002.jsonl").write_text("".join(written[1::2]))
        examples, skipped, _, duplicates = load_examples(record_files(run), tokenizer, 64, False, dedup=dedup)
        assert (skipped, duplicates) == (0, 1 if dedup else 0)
        loaded.append([example.input_ids for example in examples])
    assert loaded[0] == loaded[1]
    assert len(loaded[0]) == len(records) - dedup


def test_length_grouped_batches_cover_everything_once_and_cut_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 400) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == length_grouped_batches(lengths, 8, seed=1, epoch=0)  # resumable: same order again
    assert batches != length_grouped_batches(lengths, 8, seed=1, epoch=1)  # reshuffled each epoch

    def padding(groups):
        computed = sum(len(b) * max(lengths[i] for i in b) for b in groups)
        return 1 - sum(lengths) / computed

    order = list(range(1000))
    rng.shuffle(order)
    random_batches = [order[i : i + 8] for i in range(0, 1000, 8)]
    assert padding(batches) < 0.05 < 0.3 < padding(random_batches)


def test_collate_pads_and_maps_teacher_rows(tokenizer):
    short = encode({"messages": MESSAGES, "response": "5"}, tokenizer, 512)
    record = {"messages": MESSAGES, "response": "It is 5."}
    record["logprobs"] = _teacher_logprobs(tokenizer, record["response"], False)
    scored = encode(record, tokenizer, 512, use_teacher_tokens=True)
    batch = collate([short, scored], pad_id=0)
    width = max(len(short.input_ids), len(scored.input_ids))
    assert batch["input_ids"].shape == (2, width)
    assert batch["real_tokens"] == len(short.input_ids) + len(scored.input_ids)
    assert batch["loss_tokens"] == short.loss_tokens + scored.loss_tokens
    assert (batch["labels"][0, : short.prompt_length] == IGNORE).all()
    assert (batch["labels"][0, len(short.input_ids) :] == IGNORE).all()  # padding has no loss
    rows = batch["kd_slot"][1][batch["kd_slot"][1] >= 0]
    assert rows.tolist() == list(range(len(record["logprobs"])))
    assert (batch["kd_slot"][0] == -1).all()
    assert batch["top_ids"].shape == (len(record["logprobs"]), 2)


def test_loss_on_answer_positions_equals_the_models_own_loss(tokenizer):
    """The trainer runs the LM head only where there are labels; the result must be the usual loss."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distillery.training.loss import CausalLMLoss, move

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_hidden_layers=1,
        intermediate_size=128,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    examples = [
        encode({"messages": MESSAGES, "response": text}, tokenizer, 512) for text in ("5", "Five, I think.")
    ]
    batch = collate(examples, pad_id=0)
    ce_sum, kd_sum = CausalLMLoss(model)(**move(batch, torch.device("cpu")))
    reference = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    assert torch.isclose(ce_sum / batch["loss_tokens"], reference.loss, atol=1e-5)
    assert kd_sum.item() == 0.0


def test_learning_rate_warms_up_then_decays_to_zero():
    from distillery.training.loop import lr_factor

    factors = [lr_factor(step, total=10, warmup=2) for step in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))  # decays after the warm-up
    assert lr_factor(10, total=10, warmup=2) == 0.0


def _job(gpus: int) -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "demo", "namespace": "ml"},
            "spec": {
                "teacher": {"model": "models/teacher"},
                "student": {"model": "models/student"},
                "data": {"taskType": "qa", "train": "train.jsonl"},
                "training": {"gpus": gpus, "learningRate": 1e-4},
            },
        }
    )


def test_train_command_uses_torchrun_for_several_gpus():
    from distillery.contract.commands import TrainCommand, parse_job_argument

    single = TrainCommand(job=_job(1), storage="/data").argv()
    assert single[:2] == ["distillery", "train"]
    assert single[single.index("--storage") + 1] == "/data"
    assert parse_job_argument(single[single.index("--job") + 1]).spec == _job(1).spec

    multi = TrainCommand(job=_job(4), storage="/data").argv()
    assert multi[:5] == ["torchrun", "--standalone", "--nproc_per_node=4", "--module", "distillery"]
    assert multi[5:7] == ["train", "--job"]
    assert parse_job_argument(multi[multi.index("--job") + 1]).spec.training.gpus == 4


def test_train_cli_parses_its_arguments():
    import argparse

    from distillery.contract.commands import TrainCommand

    parser = argparse.ArgumentParser()
    TrainCommand.add_arguments(parser)
    args = parser.parse_args(["--job", "job.yaml", "--storage", "/data", "--metrics-port", "9090"])
    assert (args.job, args.storage, args.metrics_port) == ("job.yaml", "/data", 9090)
    # What the pods run parses back into the same command.
    command = TrainCommand(job=_job(4), storage="/data", metrics_port=9090)
    again = TrainCommand.from_args(parser.parse_args(command.argv()[6:]))
    assert again == command
