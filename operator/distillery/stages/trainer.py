"""The training loop: length-grouped batches, assistant-only loss (+ top-k KD), checkpoints, DDP.

No dependency on the API models, so `hack/bench_train.py` can drive it directly. One
process per GPU under torchrun (DistributedDataParallel, NCCL), or one process on CPU.

What makes it cheaper than a plain Hugging Face Trainer on the same data:
* batches hold sequences of similar length, so little compute goes to padding;
* the vocabulary projection and the loss run only on the response tokens (the prompt's
  hidden states never meet the LM head, which is the largest matrix of a small model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillery import metrics
from distillery.stages.kd import topk_kd_loss
from distillery.stages.train_data import IGNORE, Example, collate, length_grouped_batches


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run (the spec's `training` section, minus where it runs).

    Args:
        learning_rate: peak AdamW learning rate.
        batch_size: sequences per device per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer update.
        epochs: passes over the examples.
        warmup_ratio: fraction of updates with linear warm-up, then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        max_grad_norm: gradient clipping norm.
        precision: auto (bf16 on GPUs that have it, fp32 on CPU), bf16, fp16 or fp32.
        seed: seed of the batch order.
        kd: add the top-k KD loss where examples carry the teacher's distributions.
        kd_temperature: softmax temperature of the KD loss.
        alpha: weight of the KD loss; (1 - alpha) weighs the cross-entropy.
        checkpoint_every_steps: save a resumable checkpoint every N updates (and after each epoch).
        log_every_seconds: how often a progress line is printed.
    """

    learning_rate: float = 2e-5
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    epochs: int = 3
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"
    seed: int = 42
    kd: bool = False
    kd_temperature: float = 1.0
    alpha: float = 0.5
    checkpoint_every_steps: int = 200
    log_every_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in (
            "learning_rate",
            "batch_size",
            "gradient_accumulation_steps",
            "epochs",
            "kd_temperature",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"training.{name}: expected > 0, got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"training.alpha: expected 0-1, got {self.alpha}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"training.precision: expected auto, bf16, fp16 or fp32, got {self.precision!r}")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, use_gpu: bool) -> torch.device:
        device = torch.device("cuda", self.local_rank) if use_gpu else torch.device("cpu")
        if use_gpu:
            torch.cuda.set_device(device)
        if self.world_size > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if use_gpu else "gloo")
        return device

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


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

    def forward(self, input_ids, attention_mask, labels, kd_slot, top_ids, top_logprobs):
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        selected = targets != IGNORE
        logits = self.head(hidden[:, :-1][selected]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        ce_sum = nn.functional.cross_entropy(logits, targets[selected], reduction="sum")
        slots = kd_slot[:, 1:][selected]
        scored = slots >= 0
        if top_ids.shape[0]:
            kd_sum = topk_kd_loss(
                logits[scored],
                top_ids[slots[scored]],
                top_logprobs[slots[scored]],
                self.kd_temperature,
                "sum",
            )
        else:
            kd_sum = logits.sum() * 0.0
        return ce_sum, kd_sum


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask", "labels", "kd_slot", "top_ids", "top_logprobs")
    return {k: batch[k].to(device, non_blocking=True) for k in keys}


class Checkpoints:
    """`step-NNNNNNNN/state.pt` directories, written atomically (tmp dir + rename); the last two are kept."""

    def __init__(self, directory: Path, keep: int = 2):
        self.directory = directory
        self.keep = keep

    def all(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.glob("step-*") if (p / "state.pt").is_file() and "." not in p.name
        )

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f"step-{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def fingerprint(config: TrainConfig, examples: list[Example], world_size: int) -> str:
    """What must be equal for a checkpoint to be resumed: settings, data and world size."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("log_every_seconds",)}
    digest = hashlib.sha256(json.dumps([settings, world_size], sort_keys=True).encode())
    for example in examples:
        digest.update(len(example.input_ids).to_bytes(4, "little"))
        digest.update(bytes(str(example.input_ids[:8]), "ascii"))
    return digest.hexdigest()[:16]


def rank_batches(
    examples: list[Example], config: TrainConfig, epoch: int, dist: Distributed
) -> list[list[int]]:
    """This rank's batches of an epoch: every rank gets the same number (DDP steps in lockstep)."""
    batches = length_grouped_batches(
        [len(e.input_ids) for e in examples], config.batch_size, config.seed, epoch
    )
    usable = len(batches) - len(batches) % dist.world_size
    if usable == 0:
        raise ValueError(
            f"{len(examples)} examples make {len(batches)} batches of training.batchSize {config.batch_size}, "
            f"fewer than the {dist.world_size} training processes; use fewer GPUs or a smaller batch size"
        )
    return batches[dist.rank : usable : dist.world_size]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` updates, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    model: nn.Module,
    examples: list[Example],
    validation: list[Example],
    config: TrainConfig,
    *,
    pad_id: int,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    dist: Distributed | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train `model` in place; returns the run's record (loss curve, tokens, timings, resume point)."""
    dist = dist or Distributed()
    amp = autocast_dtype(config.precision, device)
    loss_module = CausalLMLoss(model, config.kd_temperature).to(device)
    runner: nn.Module = loss_module
    if dist.world_size > 1:
        runner = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type == "cuda")
    updates_per_epoch = math.ceil(
        len(rank_batches(examples, config, 0, dist)) / config.gradient_accumulation_steps
    )
    total = updates_per_epoch * config.epochs
    warmup = math.ceil(total * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    state: dict[str, Any] = {
        "step": 0, "epoch": 0, "batch": 0, "history": [], "validation": [],
        "tokens": 0, "loss_tokens": 0, "computed_tokens": 0, "train_seconds": 0.0,
    }  # fmt: skip
    print_ = log if dist.is_main else (lambda _message: None)
    checkpoints = Checkpoints(checkpoint_dir) if checkpoint_dir else None
    key = fingerprint(config, examples, dist.world_size)
    resumed_from = 0
    latest = checkpoints.latest() if checkpoints else None
    if latest is not None:
        saved = torch.load(latest / "state.pt", map_location="cpu", weights_only=True)
        if saved["fingerprint"] != key:
            print_(f"checkpoint {latest} was made with other settings or data; starting from step 0")
            dist.barrier()
            if dist.is_main:
                checkpoints.clear()
        else:
            missing = model.load_state_dict(saved["model"], strict=False).missing_keys
            lost = sorted(set(missing) & {n for n, _ in trainable})
            if lost:
                raise RuntimeError(f"checkpoint {latest} lacks trainable weights, e.g. {lost[:3]}")
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = saved["state"]
            resumed_from = state["step"]
            print_(
                f"resuming from checkpoint {latest.name}: update {state['step']}/{total}, epoch {state['epoch']}"
            )

    def save_checkpoint() -> None:
        dist.barrier()
        if checkpoints and dist.is_main:
            checkpoints.save(state["step"], {
                "fingerprint": key,
                "model": {n: p.detach().cpu() for n, p in trainable},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "state": state,
            })  # fmt: skip
        dist.barrier()

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()

    print_(
        f"training on {device.type} x{dist.world_size} ({'fp32' if amp is None else str(amp).split('.')[-1]}): "
        f"{len(examples)} examples, {config.epochs} epochs, {total} updates of "
        f"{config.batch_size}x{config.gradient_accumulation_steps}x{dist.world_size} sequences"
    )
    model.train()
    last_log = time.perf_counter()
    window_tokens, window_seconds = 0, 0.0
    for epoch in range(state["epoch"], config.epochs):
        batches = rank_batches(examples, config, epoch, dist)
        for start in range(state["batch"], len(batches), config.gradient_accumulation_steps):
            began = time.perf_counter()
            micro = [
                collate([examples[i] for i in batch], pad_id)
                for batch in batches[start : start + config.gradient_accumulation_steps]
            ]
            loss_tokens = max(1, sum(b["loss_tokens"] for b in micro))
            kd_rows = sum(int(b["top_ids"].shape[0]) for b in micro)
            ce_total, kd_total = 0.0, 0.0
            for index, batch in enumerate(micro):
                last = index == len(micro) - 1
                sync = contextlib.nullcontext() if last or dist.world_size == 1 else runner.no_sync()
                with sync:
                    with autocast():
                        ce_sum, kd_sum = runner(**_move(batch, device))
                    loss = ce_sum / loss_tokens
                    if config.kd and kd_rows:
                        loss = (1 - config.alpha) * loss + config.alpha * kd_sum / kd_rows
                    scaler.scale(loss).backward()
                ce_total += float(ce_sum.detach())
                kd_total += float(kd_sum.detach())
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            real = sum(b["real_tokens"] for b in micro)
            computed = sum(b["input_ids"].numel() for b in micro)
            ce_total, kd_total, loss_tokens_all, kd_rows_all, real, computed = dist.all_sum(
                [ce_total, kd_total, loss_tokens, kd_rows, real, computed], device
            )
            elapsed = time.perf_counter() - began
            state["step"] += 1
            state["batch"] = start + len(micro)
            state["tokens"] += int(real)
            state["loss_tokens"] += int(loss_tokens_all)
            state["computed_tokens"] += int(computed)
            state["train_seconds"] += elapsed
            ce = ce_total / max(1, loss_tokens_all)
            kd = kd_total / kd_rows_all if kd_rows_all else None
            loss_value = (1 - config.alpha) * ce + config.alpha * kd if (config.kd and kd is not None) else ce
            point = {
                "step": state["step"], "epoch": round(epoch + state["batch"] / len(batches), 4),
                "loss": round(loss_value, 5), "ce": round(ce, 5), "lr": scheduler.get_last_lr()[0],
                "grad_norm": round(grad_norm, 4), "tokens": state["tokens"],
            }  # fmt: skip
            if kd is not None:
                point["kd"] = round(kd, 5)
            state["history"].append(point)
            window_tokens += int(real)
            window_seconds += elapsed
            metrics.TRAIN_LOSS.set(loss_value)
            metrics.TRAIN_STEP.set(state["step"])
            metrics.TRAIN_EPOCH.set(point["epoch"])
            metrics.TRAIN_TOKENS.inc(int(real))
            now = time.perf_counter()
            if now - last_log >= config.log_every_seconds or state["step"] == total:
                rate = window_tokens / max(window_seconds, 1e-9)
                metrics.TRAIN_TOKENS_PER_SECOND.set(rate)
                print_(
                    f"epoch {point['epoch']:.2f}/{config.epochs} update {state['step']}/{total} "
                    f"loss {loss_value:.4f}"
                    + (f" (ce {ce:.4f} kd {kd:.4f})" if kd is not None else "")
                    + f" lr {point['lr']:.2e} {rate:,.0f} tok/s"
                )
                last_log, window_tokens, window_seconds = now, 0, 0.0
            if state["step"] % config.checkpoint_every_steps == 0 and state["batch"] < len(batches):
                save_checkpoint()
        if validation:
            val = evaluate_loss(loss_module, validation, config, pad_id=pad_id, device=device, dist=dist)
            state["validation"].append({"epoch": epoch + 1, "step": state["step"], **val})
            metrics.TRAIN_VALIDATION_LOSS.set(val["loss"])
            print_(f"epoch {epoch + 1}/{config.epochs}: validation loss {val['loss']:.4f}")
        state["epoch"], state["batch"] = epoch + 1, 0
        save_checkpoint()
    model.eval()
    return {
        **{k: state[k] for k in ("history", "validation", "tokens", "loss_tokens", "computed_tokens")},
        "updates": state["step"],
        "train_seconds": round(state["train_seconds"], 3),
        "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
        "padding_fraction": round(1 - state["tokens"] / max(1, state["computed_tokens"]), 4),
        "resumed_from_step": resumed_from,
        "precision": "fp32" if amp is None else str(amp).split(".")[-1],
    }


@torch.no_grad()
def evaluate_loss(
    loss_module: CausalLMLoss,
    examples: list[Example],
    config: TrainConfig,
    *,
    pad_id: int,
    device: torch.device,
    dist: Distributed | None = None,
) -> dict[str, float]:
    """Token-weighted cross-entropy (and KD, where examples carry the teacher's top-k) on `examples`."""
    dist = dist or Distributed()
    amp = autocast_dtype(config.precision, device)
    was_training = loss_module.training
    loss_module.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))[
        dist.rank :: dist.world_size
    ]
    size = config.batch_size * 2
    ce_total = kd_total = tokens = rows = 0.0
    for start in range(0, len(order), size):
        batch = collate([examples[i] for i in order[start : start + size]], pad_id)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            ce_sum, kd_sum = loss_module(**_move(batch, device))
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
