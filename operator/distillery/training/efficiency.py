"""What makes a training step cheap on the hardware it runs on, decided once before the first update.

* **Packing** (`training.packing`, default on): each micro-batch is one padding-free row
  (`training.packing`); off, with the reason logged, for students whose attention cannot pack.
* **Optimizer kernel**: AdamW's fused kernel (one kernel for every parameter) where torch has
  one for the device, else its multi-tensor `foreach` form, else the per-parameter loop. The
  arithmetic is the same; only the number of kernel launches differs.
* **torch.compile** (`training.compile`, default off: compiling costs minutes before the first
  update, which pays only on long runs): each decoder layer is compiled in place ("regional"
  compilation: one compiled graph serves every layer of the same shape), with dynamic shapes,
  since packed rows change length with every batch. Attention stays a fused kernel outside the graph.
* **Gradient checkpointing** (`training.gradientCheckpointing`; empty: when needed): layers'
  activations are recomputed in the backward pass instead of kept, about a third more compute
  for far less memory. "When needed" means: on a GPU, when the micro-batch does not fit without it.
* **Batch size** (`training.batchSize: auto`, GPU only): the largest power of two, up to
  `AUTO_BATCH_CAP`, whose worst micro-batch (the longest examples) runs a forward and a backward
  pass without running out of memory, with the optimizer's state held aside; halved on every
  out-of-memory error. On a CPU, `auto` is `CPU_AUTO_BATCH`.

Every choice lands in the run's record (`efficiency`), and in `reports/training.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distillery.training import packing
from distillery.training.data import Example, collate
from distillery.training.loss import move

OPTIMIZERS = ("auto", "fused", "foreach", "for-loop")
AUTO_BATCH_CAP = 256  # sequences per micro-batch the finder starts from (fewer when there are fewer examples)
CPU_AUTO_BATCH = 8  # batchSize auto without a GPU: no memory to probe, and little to gain from more
MEMORY_MARGIN = (
    0.05  # of the GPU's memory kept free during the finder's trials (fragmentation, the allocator)
)


# ------------------------------------------------------------------ the optimizer


def make_optimizer(
    groups: list[dict[str, Any]], lr: float, device: torch.device, kind: str = "auto"
) -> tuple[torch.optim.Optimizer, str]:
    """AdamW over `groups`, with the fastest kernel torch has for `device` ("auto"), or the one asked."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
    for name in ("fused", "foreach", "for-loop") if kind == "auto" else (kind,):
        try:
            return torch.optim.AdamW(groups, lr=lr, **flags[name]), name
        except (RuntimeError, ValueError):  # torch refuses a kernel it lacks for this device or dtype
            if kind != "auto":
                raise
    raise AssertionError("unreachable: the for-loop AdamW takes any parameters")


# ------------------------------------------------------------------ compile, gradient checkpointing


def _core(model: nn.Module) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def compile_layers(model: nn.Module) -> int:
    """Compile each decoder layer in place (`nn.Module.compile`: the state dict keeps its names); returns
    how many modules were compiled. Without a `layers` list the whole body is compiled."""
    core = _core(model)
    body = getattr(core, core.base_model_prefix)
    layers = getattr(body, "layers", None)
    targets = list(layers) if isinstance(layers, nn.ModuleList) and len(layers) else [body]
    for module in targets:
        module.compile(dynamic=True)
    return len(targets)


def uncompile(model: nn.Module) -> None:
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules eagerly inside (sampling and validation: other shapes, no gradients, not hot)."""
    with torch.compiler.set_stance("force_eager"):
        yield


def set_gradient_checkpointing(model: nn.Module, on: bool) -> None:
    core = _core(model)
    if on and not core.is_gradient_checkpointing:
        # Non-reentrant: works with frozen embeddings (LoRA) and keyword inputs, and under torch.compile.
        core.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif not on and core.is_gradient_checkpointing:
        core.gradient_checkpointing_disable()


# ------------------------------------------------------------------ the batch size finder


def trial_examples(examples: list[Example], on_policy: Any = None) -> list[Example]:
    """The examples sorted longest first; for on-policy updates, what their batches will hold: each prompt
    `samples_per_prompt` times, followed by a completion of `max_new_tokens`, every token graded."""
    if on_policy is not None:
        grown = []
        for e in examples:
            prompt = e.input_ids[: e.prompt_length]
            length = min(on_policy.max_seq_length, len(prompt) + on_policy.max_new_tokens)
            top = [(i, -1.0) for i in range(on_policy.top_logprobs + 1)]
            graded = {p: top for p in range(len(prompt), length)}
            grown += [
                Example(prompt + [0] * (length - len(prompt)), len(prompt), graded)
            ] * on_policy.samples_per_prompt
        examples = grown
    return sorted(examples, key=lambda e: len(e.input_ids), reverse=True)


class MemoryTrial:
    """One forward and backward pass of the `n` longest examples as one micro-batch, as the loop runs it
    (same loss module, collate, autocast), with the optimizer's state held aside on a GPU."""

    def __init__(
        self,
        loss_module: nn.Module,
        examples: list[Example],
        *,
        collate_fn: Callable[..., Any],
        pad_id: int,
        amp: torch.dtype | None,
        device: torch.device,
        reserve_bytes: int = 0,
    ):
        self.loss_module, self.examples, self.collate_fn = loss_module, examples, collate_fn
        self.pad_id, self.amp, self.device, self.reserve_bytes = pad_id, amp, device, reserve_bytes
        self.sizes: list[int] = []  # every size tried, in order

    def run(self, n: int) -> None:
        self.sizes.append(n)
        reserve = (
            torch.empty(self.reserve_bytes, dtype=torch.uint8, device=self.device)
            if self.reserve_bytes
            else None
        )
        batch = move(self.collate_fn(self.examples[:n], self.pad_id), self.device)
        autocast = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
        with autocast:
            ce_sum, kd_sum = self.loss_module(**batch)
        (ce_sum + kd_sum).backward()
        del reserve

    def fits(self, n: int) -> bool:
        """Whether `n` sequences fit; memory is freed either way (after the `except` block, whose traceback
        would otherwise keep the failed pass's tensors alive)."""
        try:
            self.run(n)
            fitted = True
        except torch.OutOfMemoryError:
            fitted = False
        self.loss_module.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return fitted


def find_batch_size(trial: MemoryTrial, start: int, log: Callable[[str], None]) -> int:
    """The largest of start, start/2, start/4, ..., 1 that fits; 0 when not even one sequence does."""
    size = start
    while size >= 1:
        if trial.fits(size):
            return size
        log(
            f"batch size {size}: out of memory, trying {size // 2}"
            if size > 1
            else "batch size 1: out of memory"
        )
        size //= 2
    return 0


def plan_memory(
    model: nn.Module,
    trial: MemoryTrial,
    batch_size: int | str,
    checkpointing: bool | None,
    cap: int,
    log: Callable[[str], None],
) -> tuple[int, bool]:
    """(batch size, gradient checkpointing) for the memory: the batch size asked (or the largest that fits,
    for "auto"), with checkpointing only when asked, or when nothing fits without it (`checkpointing` None)."""
    modes = [False, True] if checkpointing is None else [checkpointing]
    for on in modes:
        set_gradient_checkpointing(model, on)
        if batch_size == "auto":
            found = find_batch_size(trial, cap, log)
        else:
            found = int(batch_size) if len(modes) == 1 or trial.fits(int(batch_size)) else 0
        if found:
            return found, on
        if not on and len(modes) > 1:
            log("out of memory without gradient checkpointing; trying with it")
    longest = len(trial.examples[0].input_ids) if trial.examples else 0
    how = (
        "even with gradient checkpointing"
        if modes[-1]
        else "without gradient checkpointing (training.gradientCheckpointing is false)"
    )
    raise ValueError(
        f"training.batchSize {batch_size}: not even {1 if batch_size == 'auto' else batch_size} sequence(s) of "
        f"{longest} tokens fit in the GPU's memory {how}; lower training.maxSeqLength or training.batchSize, "
        "train LoRA adapters (training.lora), or use more GPUs"
    )


# ------------------------------------------------------------------ all of it, for one run


@dataclass
class Efficiency:
    """What this run does to be fast, and why (the `efficiency` record of the run)."""

    packing: bool
    packing_off_reason: str | None
    attention: str
    compiled_modules: int
    gradient_checkpointing: bool
    batch_size: int
    batch_size_found: bool
    optimizer: str = ""
    attention_before: str = ""

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "attention_before"}

    def describe(self) -> str:
        packed = (
            "packed rows" if self.packing else f"padded batches ({self.packing_off_reason or 'packing off'})"
        )
        return (
            f"{packed}, attention {self.attention}, {self.optimizer} AdamW, "
            f"{'torch.compile on ' + str(self.compiled_modules) + ' modules' if self.compiled_modules else 'no compile'}, "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}, "
            f"batch size {self.batch_size}{' (found for the memory)' if self.batch_size_found else ''}"
        )


def prepare(
    model: nn.Module,
    loss_module: nn.Module,
    examples: list[Example],
    config: Any,
    *,
    pad_id: int,
    device: torch.device,
    amp: torch.dtype | None,
    world_size: int,
    trainable: int,
    log: Callable[[str], None],
    agree: Callable[[int, bool], tuple[int, bool]] = lambda b, c: (b, c),
) -> tuple[Any, Efficiency]:
    """Apply packing, compile and checkpointing to `model` and settle the batch size; returns the config
    with every "auto" resolved and the record. `agree` reconciles the plan across training processes."""
    reason = packing.packing_unsupported(model) if config.packing else "training.packing is false"
    use_packing = config.packing and reason is None
    core = _core(model)
    plan = Efficiency(
        packing=use_packing,
        packing_off_reason=None if use_packing else reason,
        attention="",
        compiled_modules=0,
        gradient_checkpointing=False,
        batch_size=0,
        batch_size_found=False,
        attention_before=core.config._attn_implementation,
    )
    try:
        if use_packing:
            packing.use_packed_attention(model)
        plan.attention = core.config._attn_implementation
        plan.compiled_modules = compile_layers(model) if config.compile else 0
        batch_size, checkpointing = config.batch_size, config.gradient_checkpointing
        if device.type == "cuda" and (batch_size == "auto" or checkpointing is None):
            per_rank = max(1, len(examples) // world_size)
            cap = min(AUTO_BATCH_CAP, 1 << (per_rank.bit_length() - 1))
            # AdamW keeps two fp32 moments per trainable parameter; DDP a bucketed copy of the gradients.
            reserve = trainable * (8 + (4 if world_size > 1 else 0))
            reserve += int(MEMORY_MARGIN * torch.cuda.get_device_properties(device).total_memory)
            trial = MemoryTrial(
                loss_module,
                trial_examples(examples, config.on_policy),
                pad_id=pad_id,
                amp=amp,
                device=device,
                collate_fn=packing.collate_packed if use_packing else collate,
                reserve_bytes=reserve,
            )
            plan.batch_size_found = batch_size == "auto"
            batch_size, checkpointing = agree(*plan_memory(model, trial, batch_size, checkpointing, cap, log))
        elif batch_size == "auto":
            batch_size = CPU_AUTO_BATCH
        set_gradient_checkpointing(model, bool(checkpointing))
    except BaseException:
        undo(model, plan)
        raise
    plan.gradient_checkpointing, plan.batch_size = bool(checkpointing), int(batch_size)
    resolved = dataclasses.replace(
        config,
        batch_size=plan.batch_size,
        packing=use_packing,
        gradient_checkpointing=plan.gradient_checkpointing,
    )
    return resolved, plan


def undo(model: nn.Module, plan: Efficiency) -> None:
    """Leave the model as it came (saved and served with its own attention, eager, without checkpointing)."""
    packing.restore_attention(model, plan.attention_before)
    uncompile(model)
    set_gradient_checkpointing(model, False)
