"""The tiny models load, share (or do not share) a tokenizer, and a real vLLM CPU server serves the teacher."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = pytest.mark.stages

MESSAGES = [{"role": "user", "content": "What is 2+3?"}]


def _post(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def test_models_load_in_transformers(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("teacher", "student", "other-tokenizer-student"):
        path = tiny_models[name]
        assert (path / "model.safetensors").is_file()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.hidden_size // model.config.num_attention_heads == 64  # vLLM CPU needs it
        ids = tok.apply_chat_template(
            MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        text = tok.decode(ids["input_ids"][0])
        assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
        assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
        with torch.no_grad():
            logits = model(**ids).logits
        assert logits.shape[-1] == model.config.vocab_size == len(tok)
    assert tiny_models["student"] != tiny_models["teacher"]


def test_tokenizers_match_and_mismatch(tiny_models):
    from transformers import AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(tiny_models["teacher"])
    student = AutoTokenizer.from_pretrained(tiny_models["student"])
    other = AutoTokenizer.from_pretrained(tiny_models["other-tokenizer-student"])
    assert teacher.get_vocab() == student.get_vocab()
    assert (tiny_models["teacher"] / "tokenizer.json").read_bytes() == (
        tiny_models["student"] / "tokenizer.json"
    ).read_bytes()
    assert teacher.get_vocab() != other.get_vocab()
    assert len(teacher) != len(other)


def test_pretrained_teacher_answers(tiny_models):
    """With pretraining (the fixture's default) the teacher answers the tiny task greedily."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from make_tiny_models import task_examples

    info = json.loads((tiny_models["teacher"].parent / "tiny-models.json").read_text())
    if not info.get("pretrain"):
        pytest.skip("teacher not pretrained (DISTILLERY_TINY_PRETRAIN_STEPS=0)")
    tok = AutoTokenizer.from_pretrained(tiny_models["teacher"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"]).eval()
    examples = task_examples(random.Random(7), 20)
    right = 0
    for prompt, answer in examples:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False)
        right += tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip() == answer
    assert right >= 18, f"{right}/20"


def test_vllm_serves_teacher_with_logprobs(vllm_teacher):
    models = json.loads(urllib.request.urlopen(vllm_teacher.base_url + "/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == [vllm_teacher.model]

    body = {
        "model": vllm_teacher.model,
        "messages": MESSAGES,
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    resp = _post(vllm_teacher.base_url + "/chat/completions", body)
    choice = resp["choices"][0]
    content = choice["logprobs"]["content"]
    assert content and all(len(item["top_logprobs"]) == 5 for item in content)
    assert all(item["logprob"] <= 0 for item in content)
    assert resp["usage"]["completion_tokens"] == len(content)

    ids = _post(vllm_teacher.base_url + "/chat/completions", {**body, "return_tokens_as_token_ids": True})
    first = ids["choices"][0]["logprobs"]["content"][0]
    assert first["token"].startswith("token_id:")
    assert all(t["token"].startswith("token_id:") for t in first["top_logprobs"])
    # Same greedy decode either way.
    assert [c["logprob"] for c in ids["choices"][0]["logprobs"]["content"]] == pytest.approx(
        [c["logprob"] for c in content]
    )
