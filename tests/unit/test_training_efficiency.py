"""Training efficiency on CPU, with real tiny models: packing gives the padded batch's loss and gradients
and keeps sequences apart; the optimizer kernel; gradient checkpointing; the batch-size finder, driven
by out-of-memory errors raised inside a real model's forward pass."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distillery.training import efficiency, packing
from distillery.training.data import IGNORE, Example, collate
from distillery.training.loss import CausalLMLoss, move
from distillery.training.onpolicy import sample

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")
VOCAB = 64


def tiny_llama(layers: int = 2, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """Grouped-query attention (4 query heads, 2 key/value heads), as most small students have."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides}))


def examples(n: int = 5, seed: int = 0, teacher: bool = False) -> list[Example]:
    """Examples of different lengths; with `teacher`, every answer token carries a top-3."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(1, 9), rng.randint(1, 12)
        ids = [rng.randrange(3, VOCAB) for _ in range(prompt + answer)]
        top = {}
        if teacher:
            for position in range(prompt, prompt + answer):
                top[position] = [(ids[position], -0.2), (rng.randrange(3, VOCAB), -1.9), (5, -3.0)]
        out.append(Example(ids, prompt, top))
    return out


def loss_and_gradients(model, batch, reverse=False):
    model.zero_grad(set_to_none=True)
    ce_sum, kd_sum = CausalLMLoss(model, kd_temperature=2.0)(**move(batch, CPU), reverse=reverse)
    (ce_sum / batch["loss_tokens"] + kd_sum / max(1, batch["top_ids"].shape[0])).backward()
    return (
        float(ce_sum.detach()),
        float(kd_sum.detach()),
        {n: p.grad.clone() for n, p in model.named_parameters()},
    )


def assert_same(a, b, atol=1e-5):
    assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1] == pytest.approx(b[1], rel=1e-5, abs=1e-6)
    for name, grad in a[2].items():
        assert torch.allclose(grad, b[2][name], atol=atol), name


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("kind", ["sft", "kd", "onPolicy"])
def test_a_packed_batch_has_the_loss_and_gradients_of_the_padded_batch(kind):
    model = tiny_llama()
    batch = examples(6, seed=1, teacher=kind != "sft")
    padded = loss_and_gradients(model, collate(batch, pad_id=0), reverse=kind == "onPolicy")
    packing.use_packed_attention(model)
    packed = loss_and_gradients(model, packing.collate_packed(batch), reverse=kind == "onPolicy")
    assert model.config._attn_implementation == packing.PACKED_ATTENTION
    assert_same(packed, padded)
    assert padded[0] > 0 and (padded[1] > 0 or kind == "sft")


def test_packed_sequences_attend_only_to_themselves():
    model = tiny_llama().eval()
    batch = examples(4, seed=2)
    packed = packing.collate_packed(batch)
    inputs = dict(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False)
    varlen = dict(
        cu_seq_lens_q=packed["cu_seq_lens"],
        cu_seq_lens_k=packed["cu_seq_lens"],
        max_length_q=packed["max_length"],
        max_length_k=packed["max_length"],
    )
    with torch.no_grad():
        alone = torch.cat(
            [model.model(input_ids=torch.tensor([e.input_ids])).last_hidden_state for e in batch], 1
        )
        # transformers' own sdpa reading packed position ids (a block-diagonal mask): the reference
        block_mask = model.model(**inputs).last_hidden_state
        packing.use_packed_attention(model)
        ours = model.model(**inputs, **varlen).last_hidden_state
        # change the first sequence: nothing after it may move
        changed = packed["input_ids"].clone()
        changed[0, : len(batch[0].input_ids)] = 3
        moved = model.model(**{**inputs, "input_ids": changed}, **varlen).last_hidden_state
    assert torch.allclose(ours, alone, atol=1e-5) and torch.allclose(block_mask, alone, atol=1e-5)
    first = len(batch[0].input_ids)
    assert torch.equal(moved[0, first:], ours[0, first:]) and not torch.allclose(
        moved[0, :first], ours[0, :first]
    )


def test_a_packed_row_lines_up_labels_positions_and_teacher_rows():
    batch = examples(3, seed=3, teacher=True)
    packed, padded = packing.collate_packed(batch), collate(batch, pad_id=0)
    lengths = [len(e.input_ids) for e in batch]
    assert packed["input_ids"].shape == (1, sum(lengths)) and packed["attention_mask"] is None
    assert packed["cu_seq_lens"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert packed["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    starts = packed["cu_seq_lens"][:-1]
    assert (packed["labels"][0, starts] == IGNORE).all()  # no sequence's first token is predicted
    for key in ("real_tokens", "loss_tokens"):
        assert packed[key] == padded[key]
    assert torch.equal(packed["targets"], padded["targets"])
    assert torch.equal(packed["top_ids"][packed["scored_slots"]], padded["top_ids"][padded["scored_slots"]])
    assert packed["input_ids"].numel() == packed["real_tokens"] < padded["input_ids"].numel()


def test_padded_batches_and_cached_sampling_run_as_before_under_the_packed_attention():
    model = tiny_llama().eval()
    batch = collate(examples(4, seed=4), pad_id=0)
    prompts = [[1, 5, 6, 7, 8, 9], [1, 8], [1, 9, 9]]

    def draw():
        return sample(
            model,
            prompts,
            max_new_tokens=8,
            temperature=1.0,
            stop_ids=set(),
            pad_id=0,
            generator=torch.Generator().manual_seed(7),
        )

    with torch.no_grad():
        before = (CausalLMLoss(model)(**move(batch, CPU))[0], draw())
        packing.use_packed_attention(model)
        after = (CausalLMLoss(model)(**move(batch, CPU))[0], draw())
    assert torch.allclose(before[0], after[0], atol=1e-5) and before[1] == after[1]


def test_students_whose_attention_cannot_pack_are_named_with_the_reason():
    from transformers import MistralConfig, MistralForCausalLM

    assert packing.packing_unsupported(tiny_llama()) is None
    sliding = MistralForCausalLM(
        MistralConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            sliding_window=8,
        )
    )
    assert "sliding-window" in packing.packing_unsupported(sliding)
    assert "dropout" in packing.packing_unsupported(tiny_llama(attention_dropout=0.1))


def test_the_packed_attention_refuses_what_it_does_not_implement():
    query = torch.zeros(1, 2, 4, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        packing.packed_attention(
            None, query, query, query, None, cu_seq_lens_q=cu, max_length_q=4, sliding_window=2
        )


def _reference_attention(query, key, value, bounds, scale):  # type: ignore[no-untyped-def]
    """Causal attention of each sequence alone, written out (softmax of masked scores), [1, H, T, D] in,
    [T, H, D] out; key/value heads repeated for grouped-query attention. Independent of packing.py."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = []
    for start, end in itertools.pairwise(bounds):
        q, k, v = (x[0, :, start:end].double() for x in (query, key, value))
        scores = q @ k.transpose(-1, -2) * scale
        n = end - start
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        out.append((scores.softmax(-1) @ v).transpose(0, 1))
    return torch.cat(out)


def _packed_inputs():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 4, 11, 8), torch.randn(1, 2, 11, 8), torch.randn(1, 2, 11, 8)
    return query, key, value, torch.tensor([0, 3, 9, 11], dtype=torch.int64)


def test_the_cpu_path_is_causal_attention_within_each_sequence():
    query, key, value, cu = _packed_inputs()
    out, _ = packing.packed_attention(
        None, query, key, value, None, scaling=0.3, cu_seq_lens_q=cu, max_length_q=6
    )
    assert packing._flash_dtype(query) is None  # on a CPU the per-sequence path runs
    expected = _reference_attention(query, key, value, cu.tolist(), 0.3)
    assert out.shape == (1, 11, 4, 8)
    assert torch.allclose(out[0].double(), expected, atol=1e-5)


def test_the_gpu_path_calls_torchs_varlen_kernel_as_its_signature_and_documentation_say(monkeypatch):
    """torch's varlen flash kernel has no CPU implementation (aten::_flash_attention_forward), so here
    the call `_varlen` makes is bound to the real function's signature (`inspect.signature`; a
    renamed or removed argument fails the bind) and its arguments are checked against the real
    docstring's contract: [T, heads, D] tensors that are the packed row's, boundaries as given,
    the longest sequence, the causal window its docstring names. The kernel's numbers are checked
    by the next test on a GPU."""
    import inspect

    from torch.nn.attention import varlen

    real = varlen.varlen_attn
    signature = inspect.signature(real)
    calls = []

    def bind_only(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(signature.bind(*args, **kwargs).arguments)  # TypeError where the call does not fit
        return torch.zeros_like(args[0])

    monkeypatch.setattr(varlen, "varlen_attn", bind_only)
    query, key, value, cu = _packed_inputs()
    packing._varlen(query, key, value, cu, 6, 0.3, 2)
    (call,) = calls
    for name, tensor, heads in (("query", query, 4), ("key", key, 2), ("value", value, 2)):
        assert call[name].shape == (11, heads, 8), name  # (T, H, D), as the docstring says
        assert call[name].is_contiguous() and torch.equal(call[name], tensor[0].transpose(0, 1)), name
    assert torch.equal(call["cu_seq_q"], cu) and torch.equal(call["cu_seq_k"], cu)
    assert call["cu_seq_q"].dtype == torch.int32  # flash attention's boundaries are int32
    assert (call["max_q"], call["max_k"]) == (6, 6)
    assert call["scale"] == 0.3 and call["enable_gqa"] is True
    assert call["window_size"] == (-1, 0)
    assert "(-1, 0) for causal attention" in " ".join(real.__doc__.split())


@pytest.mark.skipif(
    not packing.varlen_available(), reason="torch's varlen flash kernel needs an sm80+ CUDA GPU"
)
def test_torchs_varlen_kernel_gives_the_reference_attention_on_a_gpu():
    query, key, value, cu = (x.cuda() for x in _packed_inputs())
    out = packing._varlen(*(x.bfloat16() for x in (query, key, value)), cu, 6, 0.3, 2)
    expected = _reference_attention(query.cpu(), key.cpu(), value.cpu(), cu.tolist(), 0.3)
    assert torch.allclose(out.cpu().double(), expected, atol=2e-2)  # bf16 inputs


# ---------------------------------------------------------------- optimizer, checkpointing


def test_the_fused_adamw_is_chosen_where_torch_has_it_and_steps_like_the_for_loop():
    results = {}
    for kind in ("auto", "for-loop", "foreach"):
        model = tiny_llama(layers=1)
        optimizer, chosen = efficiency.make_optimizer([{"params": list(model.parameters())}], 1e-2, CPU, kind)
        results[kind] = chosen
        for _ in range(3):
            loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        results[kind + " weights"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert results["auto"] == "fused"  # torch >= 2.4 has a fused AdamW for CPUs too
    assert results["for-loop"] == "for-loop" and results["foreach"] == "foreach"
    assert torch.allclose(results["auto weights"], results["for-loop weights"], atol=1e-6)
    assert torch.allclose(results["foreach weights"], results["for-loop weights"], atol=1e-6)
    with pytest.raises(ValueError, match="optimizer"):
        efficiency.make_optimizer([{"params": list(model.parameters())}], 1e-2, CPU, "sgd")


@pytest.mark.parametrize("packed", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(packed):
    model = tiny_llama().train()
    batch = examples(5, seed=5, teacher=True)
    if packed:
        packing.use_packed_attention(model)
    make = packing.collate_packed if packed else collate
    plain = loss_and_gradients(model, make(batch, 0))
    efficiency.set_gradient_checkpointing(model, True)
    assert model.is_gradient_checkpointing
    checkpointed = loss_and_gradients(model, make(batch, 0))
    efficiency.set_gradient_checkpointing(model, False)
    assert not model.is_gradient_checkpointing
    assert_same(checkpointed, plain)


# ---------------------------------------------------------------- the batch-size finder


def out_of_memory_above(model, tokens: int, checkpointed_tokens: int | None = None):
    """Make the real model run out of memory inside its first decoder layer when a micro-batch holds more than
    `tokens` tokens (`checkpointed_tokens` with gradient checkpointing on), as a GPU would."""
    layer = model.model.layers[0]

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        limit = checkpointed_tokens if module.gradient_checkpointing and checkpointed_tokens else tokens
        if hidden.shape[0] * hidden.shape[1] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {hidden.numel() * 4} bytes")

    return layer.register_forward_pre_hook(hook, with_kwargs=True)


def trial_for(model, items, packed=True):
    return efficiency.MemoryTrial(
        CausalLMLoss(model),
        efficiency.trial_examples(items),
        pad_id=0,
        amp=None,
        device=CPU,
        collate_fn=packing.collate_packed if packed else collate,
    )


def uniform(n: int, length: int) -> list[Example]:
    return [Example(list(range(3, 3 + length)), 2) for _ in range(n)]


@pytest.mark.parametrize("packed", [False, True])
def test_the_batch_size_finder_halves_on_out_of_memory_until_a_batch_fits(packed):
    model = tiny_llama()
    out_of_memory_above(model, tokens=5 * 20)  # 5 sequences of 20 tokens fit, 6 do not
    trial = trial_for(model, uniform(40, 20), packed)
    messages = []
    assert efficiency.plan_memory(model, trial, "auto", False, cap=32, log=messages.append) == (4, False)
    assert trial.sizes == [32, 16, 8, 4]
    assert messages[0] == "batch size 32: out of memory, trying 16"
    assert all(p.grad is None for p in model.parameters())  # the trials leave no gradients behind


def test_the_finder_sizes_for_the_longest_examples():
    model = tiny_llama()
    out_of_memory_above(model, tokens=4 * 30)
    short_and_long = uniform(30, 10) + uniform(4, 30)
    trial = trial_for(model, short_and_long)
    assert efficiency.plan_memory(model, trial, "auto", False, cap=16, log=lambda _m: None)[0] == 4


def test_checkpointing_is_turned_on_only_when_the_batch_does_not_fit_without_it():
    model = tiny_llama()
    out_of_memory_above(model, tokens=4 * 20, checkpointed_tokens=16 * 20)
    items = uniform(40, 20)
    assert efficiency.plan_memory(model, trial_for(model, items), 4, None, cap=32, log=print) == (4, False)
    assert efficiency.plan_memory(model, trial_for(model, items), 16, None, cap=32, log=print) == (16, True)
    assert model.is_gradient_checkpointing
    trial = trial_for(model, items)
    assert efficiency.plan_memory(model, trial, "auto", None, cap=32, log=print) == (4, False)
    with pytest.raises(
        ValueError, match=r"training.batchSize 32: not even 32 sequence\(s\) of 20 tokens fit"
    ):
        efficiency.plan_memory(model, trial_for(model, items), 32, None, cap=32, log=print)
    tiny = tiny_llama()
    out_of_memory_above(tiny, tokens=10, checkpointed_tokens=10)
    with pytest.raises(ValueError, match=r"training.batchSize auto: not even 1 sequence"):
        efficiency.plan_memory(tiny, trial_for(tiny, items), "auto", None, cap=8, log=print)


def test_on_policy_trials_hold_what_on_policy_batches_will():
    from distillery.training.onpolicy import OnPolicyConfig

    config = OnPolicyConfig(samples_per_prompt=2, max_new_tokens=6, top_logprobs=3, max_seq_length=12)
    grown = efficiency.trial_examples(
        [Example([1, 2, 3, 4, 5], 3), Example([1, 2, 3, 4, 5, 6, 7, 8], 8)], config
    )
    assert [(len(e.input_ids), e.prompt_length) for e in grown] == [(12, 8)] * 2 + [(9, 3)] * 2
    assert len(grown[0].teacher_top) == 4 and len(grown[0].teacher_top[8]) == 4


# ---------------------------------------------------------------- on-policy batches, packed


class LocalTeacher:
    """Grades like `PromptLogprobsClient.grade`, from a model in this process: its top-k and the sampled token."""

    def __init__(self, model):
        self.model = model.eval()

    def grade(self, sequences, starts, top_k):
        from types import SimpleNamespace

        out = []
        with torch.no_grad():
            for sequence, start in zip(sequences, starts, strict=True):
                logp = torch.log_softmax(self.model(input_ids=torch.tensor([sequence])).logits[0].float(), -1)
                positions = []
                for position in range(start, len(sequence)):
                    row = logp[position - 1]
                    listed = {int(i): float(row[i]) for i in row.topk(top_k).indices}
                    listed[sequence[position]] = float(row[sequence[position]])
                    positions.append(listed)
                out.append(SimpleNamespace(positions=positions))
        return out


def test_on_policy_batches_packed_train_like_padded_ones():
    from distillery.training.onpolicy import OnPolicyConfig, OnPolicySource

    teacher = LocalTeacher(tiny_llama(seed=9))
    results = []
    for packed in (False, True):
        student = tiny_llama(seed=1)
        if packed:
            packing.use_packed_attention(student)
        source = OnPolicySource(
            student,
            OnPolicyConfig(samples_per_prompt=2, max_new_tokens=5, top_logprobs=3),
            teacher.grade,
            stop_ids=set(),
            pad_id=0,
            seed=3,
            rank=0,
            device=CPU,
        )
        groups = [examples(3, seed=6)]
        micro = source.micro_batches(groups, {"step": 0}, packing.collate_packed if packed else collate)
        results.append(loss_and_gradients(student, micro[0], reverse=True))
    assert results[0][1] > 0
    assert_same(results[1], results[0])


def test_a_checkpoint_resumes_across_speed_settings_but_not_across_batch_sizes():
    from distillery.training.checkpoints import fingerprint
    from distillery.training.config import TrainConfig

    data = examples(4)
    base = fingerprint(TrainConfig(batch_size=4), data, 1)
    faster = TrainConfig(
        batch_size=4, packing=False, compile=True, gradient_checkpointing=True, optimizer="foreach"
    )
    assert fingerprint(faster, data, 1) == base
    assert fingerprint(TrainConfig(batch_size=8), data, 1) != base


def test_batch_size_must_be_positive_or_auto():
    from distillery.training.config import TrainConfig

    assert TrainConfig(batch_size="auto").batch_size == "auto"
    for bad in (0, "big", 2.5):
        with pytest.raises(ValueError, match=r"training\.batch_size"):
            TrainConfig(batch_size=bad)
