"""Padding-free packing: a micro-batch's sequences side by side in one row, each attending only to itself.

`collate_packed` lays the examples of a micro-batch end to end in a single row of
`sum(lengths)` tokens: no padding is computed at all. Position ids restart at 0 for each
sequence (so rotary embeddings see the positions they would see alone) and the row carries
`cu_seq_lens`, the cumulative sequence boundaries, as flash-attention's varlen kernels
take them. The loss is unchanged: the same positions carry the same labels and teacher
rows as in the padded batch of the same examples, and the first token of every sequence
is never predicted (it would otherwise be predicted from the previous sequence's end).

Attention must not cross the boundaries. The student runs with `PACKED_ATTENTION`, an
attention function registered with transformers' `AttentionInterface`:
* on a GPU, torch's own flash-attention varlen kernel (`torch.nn.attention.varlen`, CUDA,
  fp16/bf16, no extra package): exactly the work of each sequence alone, no T^2 mask;
* otherwise (CPU, fp32, or a torch without it), scaled-dot-product attention per sequence.
Calls without `cu_seq_lens` (padded validation batches, the on-policy sampler's KV-cached
decoding) go to transformers' sdpa with its usual mask, so the model behaves as before there.
A student whose attention does more than plain causal attention (sliding windows, logit
soft-capping, sinks, attention dropout) trains unpacked; `packing_unsupported` says why.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import torch
from torch.nn import functional

from distillery.training.data import IGNORE, Example, targets_of, top_tensors

PACKED_ATTENTION = "distillery_packed"
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def collate_packed(examples: list[Example], pad_id: int = 0) -> dict[str, Any]:
    """The examples as one row [1, sum of lengths] with restarting position ids and sequence boundaries.

    Same keys as `data.collate` (plus `position_ids`, `cu_seq_lens`, `max_length`); `attention_mask`
    is None: the boundaries, not a mask, keep the sequences apart. `pad_id` is unused (nothing is padded).
    """
    lengths = [len(e.input_ids) for e in examples]
    total = sum(lengths)
    input_ids = torch.tensor([t for e in examples for t in e.input_ids], dtype=torch.long).view(1, total)
    labels = torch.full((1, total), IGNORE, dtype=torch.long)
    kd_slot = torch.full((1, total), -1, dtype=torch.long)
    position_ids = torch.cat([torch.arange(n, dtype=torch.long) for n in lengths]).view(1, total)
    tops: list[list[tuple[int, float]]] = []
    start = 0
    for example, n in zip(examples, lengths, strict=True):
        # The prompt carries no loss, and so the sequence's first token is never a target.
        labels[0, start + example.prompt_length : start + n] = input_ids[
            0, start + example.prompt_length : start + n
        ]
        for position, top in sorted(example.teacher_top.items()):
            kd_slot[0, start + position] = len(tops)
            tops.append(top)
        start += n
    cu_seq_lens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seq_lens[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    top_ids, top_logprobs = top_tensors(tops)
    return {
        "input_ids": input_ids,
        "attention_mask": None,
        "position_ids": position_ids,
        "cu_seq_lens": cu_seq_lens,
        "max_length": max(lengths),
        "labels": labels,
        "kd_slot": kd_slot,
        "top_ids": top_ids,
        "top_logprobs": top_logprobs,
        **targets_of(labels, kd_slot),
        "real_tokens": total,
        "loss_tokens": int((labels[:, 1:] != IGNORE).sum()),
    }


# ------------------------------------------------------------------ which students can pack


def packing_unsupported(model: Any) -> str | None:
    """Why `model` cannot train packed (None: it can): its attention must be plain causal attention
    that takes a pluggable attention function (transformers' `AttentionInterface`)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = core.config
    if getattr(config, "_attn_implementation", None) in FLASH_IMPLEMENTATIONS:
        return None  # transformers' own flash-attention path takes cu_seq_lens as they are
    if not getattr(core, "_supports_attention_backend", False):
        return f"{type(core).__name__} does not take a pluggable attention function"
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types) or (
        getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    ):
        return f"{type(core).__name__} uses sliding-window attention"
    if getattr(config, "attn_logit_softcapping", None):
        return f"{type(core).__name__} soft-caps its attention logits"
    if getattr(config, "attention_dropout", 0.0):
        return f"{type(core).__name__} has attention dropout {config.attention_dropout}"
    return None


def use_packed_attention(model: Any) -> str:
    """Switch `model` to the packed attention (unless it already runs flash attention); returns the
    implementation it had, for `restore_attention`."""
    register()
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = core.config._attn_implementation
    if before not in FLASH_IMPLEMENTATIONS:
        core.set_attn_implementation(PACKED_ATTENTION)
    return before


def restore_attention(model: Any, implementation: str) -> None:
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    if core.config._attn_implementation != implementation:
        core.set_attn_implementation(implementation)


# ------------------------------------------------------------------ the attention function


def register() -> None:
    """Make `PACKED_ATTENTION` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)


def _packed_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """No mask for a packed row (its boundaries are `cu_seq_lens`); sdpa's mask for padded batches."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each sequence of a packed row (query [1, H, T, D] -> output [1, T, H, D]);
    without `cu_seq_lens_q`, transformers' sdpa attention with the mask it was given."""
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"packed attention does not implement {name}; train with packing off")
    if dropout:
        raise NotImplementedError(
            "packed attention does not implement attention dropout; train with packing off"
        )
    if query.shape[0] != 1:
        raise ValueError(f"a packed batch is one row, got {query.shape[0]}")
    groups = query.shape[1] // key.shape[1]
    dtype = _flash_dtype(query)
    if dtype is not None:
        out = _varlen(
            query.to(dtype), key.to(dtype), value.to(dtype), cu_seq_lens_q, max_length_q, scaling, groups
        )
    else:
        out = _per_sequence(query, key, value, cu_seq_lens_q, scaling, groups)
    return out.unsqueeze(0), None


def _flash_dtype(query: torch.Tensor) -> torch.dtype | None:
    """The dtype to run torch's varlen flash kernel in, or None where it cannot run."""
    if not query.is_cuda or query.shape[-1] % 8 or query.shape[-1] > 256 or not varlen_available():
        return None
    if query.dtype in (torch.float16, torch.bfloat16):
        return query.dtype
    if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") in (
        torch.float16,
        torch.bfloat16,
    ):
        return torch.get_autocast_dtype("cuda")  # rotary embeddings in fp32 promote q and k back to fp32
    return None


@functools.cache
def varlen_available() -> bool:
    """torch's flash-attention varlen kernel: torch >= 2.10 built with CUDA, on an sm80+ (Ampere or newer) GPU."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


@torch.compiler.disable  # a fused kernel already; its integer arguments would make compiled graphs specialise
def _varlen(query, key, value, cu_seq_lens, max_length, scaling, groups) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from torch.nn.attention.varlen import varlen_attn

    q, k, v = (x.transpose(1, 2).squeeze(0).contiguous() for x in (query, key, value))  # [T, heads, D]
    cu = cu_seq_lens.to(torch.int32)
    return varlen_attn(
        q,
        k,
        v,
        cu,
        cu,
        int(max_length),
        int(max_length),
        scale=scaling,
        window_size=(-1, 0),
        enable_gqa=groups > 1,
    )


@torch.compiler.disable  # a loop over the sequences, whose number and lengths change with every batch
def _per_sequence(query, key, value, cu_seq_lens, scaling, groups) -> torch.Tensor:  # type: ignore[no-untyped-def]
    bounds = cu_seq_lens.tolist()  # on a GPU without the varlen kernel: a host sync per layer
    outputs = [
        functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            is_causal=True,
            scale=scaling,
            enable_gqa=groups > 1,
        )
        for start, end in itertools.pairwise(bounds)
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).squeeze(0)  # [T, heads, D]
