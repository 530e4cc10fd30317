"""The loss of a batch: cross-entropy on the response tokens plus top-k KD (or on-policy reverse KL), and the validation loss.

The LM head runs only on the positions that carry a label: the prompt's hidden states never
meet the vocabulary projection, the largest matrix of a small model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distillery.training.data import Example, collate
from distillery.training.kd import topk_kd_loss, topk_reverse_kl

if TYPE_CHECKING:
    from distillery.training.config import TrainConfig
    from distillery.training.distributed import Distributed


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None trains in fp32."""
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("training.precision: fp16 needs a GPU; use fp32 or bf16 on CPU")
        return torch.float16
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16


class CausalLMLoss(nn.Module):
    """Sums of cross-entropy (response tokens) and top-k KD (teacher-scored tokens) for one batch.

    Wraps the model so DistributedDataParallel sees one forward. Runs the model's body, then
    the LM head only on the positions that carry a label.
    """

    def __init__(self, model: nn.Module, kd_temperature: float = 1.0):
        super().__init__()
        self.model = model
        core = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the model
        self.body = getattr(core, core.base_model_prefix)
        self.head = core.get_output_embeddings()
        self.softcap = getattr(core.config, "final_logit_softcapping", None)
        self.kd_temperature = kd_temperature

    def forward(
        self,
        input_ids,
        attention_mask,
        select,
        targets,
        scored,
        scored_slots,
        top_ids,
        top_logprobs,
        position_ids=None,
        cu_seq_lens=None,
        max_length=None,
        reverse=False,
    ):
        """(cross-entropy sum, divergence sum): forward KL on stored top-k, or with `reverse` the
        on-policy reverse KL on the teacher's grades of the student's own samples.

        A packed batch (`training.packing`) comes with `position_ids` and `cu_seq_lens`, its sequence
        boundaries, which reach the attention function as flash-attention's varlen arguments."""
        # use_cache=False: transformers would otherwise build a KV cache in every training forward.
        if cu_seq_lens is None:
            hidden = self.body(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
        else:
            hidden = self.body(
                input_ids=input_ids,
                position_ids=position_ids,
                use_cache=False,
                cu_seq_lens_q=cu_seq_lens,
                cu_seq_lens_k=cu_seq_lens,
                max_length_q=max_length,
                max_length_k=max_length,
            ).last_hidden_state
        logits = self.head(hidden.flatten(0, 1).index_select(0, select)).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        ce_sum = nn.functional.cross_entropy(logits, targets, reduction="sum")
        if top_ids.shape[0]:
            graded = logits.index_select(0, scored)
            ids, logprobs = top_ids.index_select(0, scored_slots), top_logprobs.index_select(0, scored_slots)
            if reverse:
                kd_sum = topk_reverse_kl(graded, ids, logprobs, "sum")
            else:
                kd_sum = topk_kd_loss(graded, ids, logprobs, self.kd_temperature, "sum")
        else:
            kd_sum = logits.sum() * 0.0
        return ce_sum, kd_sum


# What a batch hands the loss module; `move` carries them to the device.
MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "select",
    "targets",
    "scored",
    "scored_slots",
    "top_ids",
    "top_logprobs",
    "position_ids",
    "cu_seq_lens",
    "max_length",
)


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The loss module's inputs from a batch (`data.collate` or `packing.collate_packed`), on `device`.
    On a GPU the host copies are pinned first, so the copy overlaps the previous step's work."""
    pin = device.type == "cuda"
    out: dict[str, Any] = {}
    for key in MODEL_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            value = (value.pin_memory() if pin else value).to(device, non_blocking=pin)
        out[key] = value
    return out


@torch.no_grad()
def evaluate_loss(
    loss_module: CausalLMLoss,
    examples: list[Example],
    config: TrainConfig,
    *,
    pad_id: int,
    device: torch.device,
    dist: Distributed | None = None,
    collate_fn: Callable[[list[Example], int], dict[str, Any]] = collate,
) -> dict[str, float]:
    """Token-weighted cross-entropy (and KD, where examples carry the teacher's top-k) on `examples`."""
    if dist is None:
        from distillery.training.distributed import Distributed

        dist = Distributed()
    amp = autocast_dtype(config.precision, device)
    was_training = loss_module.training
    loss_module.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))[
        dist.rank :: dist.world_size
    ]
    size = config.batch_size * 2
    ce_total = kd_total = tokens = rows = 0.0
    for start in range(0, len(order), size):
        batch = collate_fn([examples[i] for i in order[start : start + size]], pad_id)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            ce_sum, kd_sum = loss_module(**move(batch, device))
        ce_total += float(ce_sum)
        kd_total += float(kd_sum)
        tokens += batch["loss_tokens"]
        rows += batch["top_ids"].shape[0]
    ce_total, kd_total, tokens, rows = dist.all_sum([ce_total, kd_total, tokens, rows], device)
    loss_module.train(was_training)
    result = {"loss": round(ce_total / max(1.0, tokens), 5), "tokens": int(tokens)}
    if config.kd and rows:
        result["kd"] = round(kd_total / rows, 5)
        result["ce"] = result["loss"]
        result["loss"] = round((1 - config.alpha) * result["ce"] + config.alpha * result["kd"], 5)
    return result
