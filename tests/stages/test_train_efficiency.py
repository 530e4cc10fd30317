"""The training loop with each efficiency technique on, on CPU with a tiny Llama: the same losses as without it,
torch.compile included (inductor's CPU backend), and the model handed back as it came."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distillery.training.config import TrainConfig
from distillery.training.data import Example
from distillery.training.efficiency import CPU_AUTO_BATCH
from distillery.training.loop import train

pytestmark = pytest.mark.stages
CPU = torch.device("cpu")


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )


def data(n: int = 24, teacher: bool = False) -> list[Example]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(2, 12), rng.randint(2, 20)
        ids = [rng.randrange(3, 96) for _ in range(prompt + answer)]
        top = {p: [(ids[p], -0.1), (7, -2.5)] for p in range(prompt, prompt + answer)} if teacher else {}
        out.append(Example(ids, prompt, top))
    return out


def run(**settings):
    model = tiny_llama()
    config = TrainConfig(**{"learning_rate": 3e-3, "batch_size": 4, "epochs": 2, **settings})
    record = train(model, data(teacher=config.kd), data(8), config, pad_id=0, device=CPU, log=lambda _m: None)
    return model, record


def losses(record) -> list[float]:
    return [p["loss"] for p in record["history"]] + [v["loss"] for v in record["validation"]]


@pytest.mark.parametrize("kd", [False, True])
def test_packed_training_follows_the_padded_run(kd):
    _, padded = run(packing=False, kd=kd)
    _, packed = run(packing=True, kd=kd)
    assert losses(packed) == pytest.approx(losses(padded), rel=1e-4)
    assert packed["efficiency"]["packing"] and not padded["efficiency"]["packing"]
    assert packed["padding_fraction"] == 0.0 < padded["padding_fraction"]
    assert losses(padded)[-3] < losses(padded)[0]  # it learns


def test_compiled_training_follows_the_eager_run_and_the_model_comes_back_eager(tmp_path):
    _, eager = run(packing=True)
    model, compiled = run(packing=True, compile=True)
    assert compiled["efficiency"]["compiled_modules"] == 2  # each decoder layer
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-3)
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())
    assert model.config._attn_implementation == "sdpa" and not model.is_gradient_checkpointing
    model.save_pretrained(tmp_path)
    assert "distillery" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_checkpointed_training_follows_the_plain_run():
    _, plain = run(gradient_checkpointing=False)
    model, checkpointed = run(gradient_checkpointing=True)
    assert checkpointed["efficiency"]["gradient_checkpointing"]
    assert losses(checkpointed) == pytest.approx(losses(plain), rel=1e-4)
    assert not model.is_gradient_checkpointing


def test_on_a_cpu_batch_size_auto_is_the_cpu_default_and_checkpointing_stays_off():
    _, record = run(batch_size="auto")
    assert (
        record["efficiency"]["batch_size"] == CPU_AUTO_BATCH and not record["efficiency"]["batch_size_found"]
    )
    assert record["efficiency"]["gradient_checkpointing"] is False
    assert record["updates"] == 2 * (24 // CPU_AUTO_BATCH)
