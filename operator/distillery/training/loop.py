"""The training loop: length-grouped batches, assistant-only loss (+ top-k KD), checkpoints, DDP.

No dependency on the API models, so `hack/bench_train.py` can drive it directly. One
process per GPU under torchrun (DistributedDataParallel, NCCL), or one process on CPU.

What makes it cheaper than a plain Hugging Face Trainer on the same data:
* each micro-batch is one padding-free row whose sequences attend only to themselves
  (`training.packing`); unpacked, batches hold sequences of similar length;
* the vocabulary projection and the loss run only on the response tokens (`training.loss`);
* the fastest AdamW kernel, torch.compile, gradient checkpointing and a batch size found for the
  GPU's memory, as `training.efficiency` decides; the host waits for the GPU once per update.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillery.training import efficiency, metrics
from distillery.training.checkpoints import Checkpoints, fingerprint
from distillery.training.config import TrainConfig
from distillery.training.data import Example, collate, length_grouped_batches
from distillery.training.distributed import Distributed  # re-exported: the loop's callers import it here
from distillery.training.loss import CausalLMLoss, autocast_dtype, evaluate_loss, move
from distillery.training.packing import collate_packed


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


class Trainer:
    """One training run of `model` in place: set up, resumed from the latest checkpoint when it fits, run."""

    def __init__(
        self,
        model: nn.Module,
        examples: list[Example],
        validation: list[Example],
        config: TrainConfig,
        *,
        pad_id: int,
        device: torch.device,
        checkpoint_dir: Path | None,
        dist: Distributed,
        log: Callable[[str], None],
        on_policy: Any = None,
        compiled: bool = False,
    ):
        self.model, self.examples, self.validation, self.config = model, examples, validation, config
        self.collate = collate_packed if config.packing else collate
        # Sampling and validation run compiled layers eagerly: other shapes, no gradients, not hot.
        self.eager = efficiency.eager if compiled else contextlib.nullcontext
        self.on_policy = on_policy  # an OnPolicySource: draws the batches of on-policy updates
        self.pad_id, self.device, self.dist = pad_id, device, dist
        self.say = log if dist.is_main else (lambda _message: None)
        self.amp = autocast_dtype(config.precision, device)
        self.loss_module = CausalLMLoss(model, config.kd_temperature).to(device)
        self.runner: nn.Module = self.loss_module
        if dist.world_size > 1:
            self.runner = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for _, p in self.trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for _, p in self.trainable if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer, self.optimizer_kind = efficiency.make_optimizer(
            groups, config.learning_rate, device, config.optimizer
        )
        per_epoch = math.ceil(
            len(rank_batches(examples, config, 0, dist)) / config.gradient_accumulation_steps
        )
        self.total = per_epoch * config.epochs
        warmup = math.ceil(self.total * config.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, warmup)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "batch": 0,
            "history": [],
            "validation": [],
            "tokens": 0,
            "loss_tokens": 0,
            "computed_tokens": 0,
            "train_seconds": 0.0,
        }
        self.checkpoints = Checkpoints(checkpoint_dir) if checkpoint_dir else None
        self.key = fingerprint(config, examples, dist.world_size)
        self.resumed_from = 0
        self.window = [time.perf_counter(), 0, 0.0]  # last log time, tokens and seconds since then

    # ---- checkpoints

    def resume(self) -> None:
        """Continue from the latest checkpoint made with the same settings and data; clear any other."""
        latest = self.checkpoints.latest() if self.checkpoints else None
        if latest is None:
            return
        saved = torch.load(latest / "state.pt", map_location="cpu", weights_only=True)
        if saved["fingerprint"] != self.key:
            self.say(f"checkpoint {latest} was made with other settings or data; starting from step 0")
            self.dist.barrier()
            if self.dist.is_main:
                self.checkpoints.clear()
            return
        missing = self.model.load_state_dict(saved["model"], strict=False).missing_keys
        lost = sorted(set(missing) & {n for n, _ in self.trainable})
        if lost:
            raise RuntimeError(f"checkpoint {latest} lacks trainable weights, e.g. {lost[:3]}")
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = saved["state"]
        self.resumed_from = self.state["step"]
        self.say(
            f"resuming from checkpoint {latest.name}: update {self.state['step']}/{self.total}, "
            f"epoch {self.state['epoch']}"
        )

    def save_checkpoint(self) -> None:
        self.dist.barrier()
        if self.checkpoints and self.dist.is_main:
            self.checkpoints.save(
                self.state["step"],
                {
                    "fingerprint": self.key,
                    "model": {n: p.detach().cpu() for n, p in self.trainable},
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "state": self.state,
                },
            )
        self.dist.barrier()

    # ---- the loop

    def run(self) -> dict[str, Any]:
        config, dist, state = self.config, self.dist, self.state
        precision = "fp32" if self.amp is None else str(self.amp).split(".")[-1]
        self.say(
            f"training on {self.device.type} x{dist.world_size} ({precision}): {len(self.examples)} examples, "
            f"{config.epochs} epochs, {self.total} updates of "
            f"{config.batch_size}x{config.gradient_accumulation_steps}x{dist.world_size} sequences"
        )
        metrics.TRAIN_STEPS.set(self.total)
        metrics.TRAIN_STEP.set(state["step"])  # a resumed run starts at its checkpoint's update
        self.model.train()
        for epoch in range(state["epoch"], config.epochs):
            batches = rank_batches(self.examples, config, epoch, dist)
            for start in range(state["batch"], len(batches), config.gradient_accumulation_steps):
                self.update(batches, start, epoch)
                if state["step"] % config.checkpoint_every_steps == 0 and state["batch"] < len(batches):
                    self.save_checkpoint()
            if self.validation:
                self.validate(epoch)
            state["epoch"], state["batch"] = epoch + 1, 0
            self.save_checkpoint()
        self.model.eval()
        return {
            **{k: state[k] for k in ("history", "validation", "tokens", "loss_tokens", "computed_tokens")},
            "updates": state["step"],
            "train_seconds": round(state["train_seconds"], 3),
            "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
            "padding_fraction": round(1 - state["tokens"] / max(1, state["computed_tokens"]), 4),
            "resumed_from_step": self.resumed_from,
            "precision": precision,
            "on_policy": state.get("on_policy"),
        }

    def update(self, batches: list[list[int]], start: int, epoch: int) -> None:
        """One optimizer update over the micro-batches from `start`, recorded in the state and metrics."""
        config = self.config
        began = time.perf_counter()
        groups = [
            [self.examples[i] for i in batch]
            for batch in batches[start : start + config.gradient_accumulation_steps]
        ]
        on_policy = self.on_policy is not None and self.on_policy.wants(self.state["step"])
        if on_policy:  # the same prompts, completed by the student and graded by the teacher
            with self.eager():
                micro = self.on_policy.micro_batches(groups, self.state, self.collate)
        else:
            micro = [self.collate(group, self.pad_id) for group in groups]
        loss_tokens = max(1, sum(b["loss_tokens"] for b in micro))
        kd_rows = sum(int(b["top_ids"].shape[0]) for b in micro)
        # DDP averages the ranks' gradients: each rank divides its sums by the whole update's counts over
        # the number of ranks, so the update is the mean over every rank's tokens, the same as one process
        # accumulating all of them (ranks with more tokens are not weighed down).
        norm_tokens, norm_rows = float(loss_tokens), float(kd_rows)
        if self.dist.world_size > 1:
            counts = self.dist.all_sum([loss_tokens, kd_rows], self.device)
            norm_tokens, norm_rows = (count / self.dist.world_size for count in counts)
        # Summed on the device: a float() per micro-batch would make the host wait for the GPU each time.
        ce_total = kd_total = torch.zeros((), device=self.device)
        for index, batch in enumerate(micro):
            last = index == len(micro) - 1
            sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.runner.no_sync()
            with sync:
                with (
                    torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
                ):
                    ce_sum, kd_sum = self.runner(**move(batch, self.device), reverse=on_policy)
                loss = ce_sum / norm_tokens
                if on_policy:  # reverse KL per graded token; no cross-entropy on the student's own text
                    loss = kd_sum / (norm_rows or 1)
                elif config.kd and norm_rows:
                    loss = (1 - config.alpha) * loss + config.alpha * kd_sum / norm_rows
                self.scaler.scale(loss).backward()
            ce_total = ce_total + ce_sum.detach().float()
            kd_total = kd_total + kd_sum.detach().float()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        real = sum(b["real_tokens"] for b in micro)
        computed = sum(b["input_ids"].numel() for b in micro)
        ce_value, kd_value = torch.stack([ce_total, kd_total]).tolist()
        totals = self.dist.all_sum([ce_value, kd_value, loss_tokens, kd_rows, real, computed], self.device)
        self.record(
            totals,
            grad_norm,
            time.perf_counter() - began,
            start + len(micro),
            epoch + (start + len(micro)) / len(batches),
            on_policy,
        )

    def record(
        self,
        totals: list[float],
        grad_norm: float,
        elapsed: float,
        batch: int,
        epoch: float,
        on_policy: bool = False,
    ) -> None:
        """Add an update's sums (over every rank) to the state, the loss curve, the metrics and the log."""
        config, state = self.config, self.state
        ce_total, kd_total, loss_tokens, kd_rows, real, computed = totals
        state["step"] += 1
        state["batch"] = batch
        state["tokens"] += int(real)
        state["loss_tokens"] += int(loss_tokens)
        state["computed_tokens"] += int(computed)
        state["train_seconds"] += elapsed
        ce = ce_total / max(1, loss_tokens)
        kd = kd_total / kd_rows if kd_rows else None
        loss = (1 - config.alpha) * ce + config.alpha * kd if (config.kd and kd is not None) else ce
        if on_policy:
            loss, kd = kd_total / max(1, kd_rows), None
            metrics.TRAIN_ON_POLICY_LOSS.set(loss)
        point = {
            "step": state["step"],
            "epoch": round(epoch, 4),
            "loss": round(loss, 5),
            ("on_policy" if on_policy else "ce"): round(loss if on_policy else ce, 5),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": round(grad_norm, 4),
            "tokens": state["tokens"],
            "seconds": round(elapsed, 4),
        }
        if kd is not None:
            point["kd"] = round(kd, 5)
        state["history"].append(point)
        metrics.TRAIN_LOSS.set(loss)
        metrics.TRAIN_STEP.set(state["step"])
        metrics.TRAIN_EPOCH.set(point["epoch"])
        metrics.TRAIN_TOKENS.inc(int(real))
        self.window[1] += int(real)
        self.window[2] += elapsed
        now = time.perf_counter()
        if now - self.window[0] >= config.log_every_seconds or state["step"] == self.total:
            rate = self.window[1] / max(self.window[2], 1e-9)
            metrics.TRAIN_TOKENS_PER_SECOND.set(rate)
            self.say(
                f"epoch {point['epoch']:.2f}/{config.epochs} update {state['step']}/{self.total} loss {loss:.4f}"
                + (f" (ce {ce:.4f} kd {kd:.4f})" if kd is not None else "")
                + (" (on-policy reverse KL)" if on_policy else "")
                + f" lr {point['lr']:.2e} {rate:,.0f} tok/s"
            )
            self.window = [now, 0, 0.0]

    def validate(self, epoch: int) -> None:
        with self.eager():
            val = evaluate_loss(
                self.loss_module,
                self.validation,
                self.config,
                pad_id=self.pad_id,
                device=self.device,
                dist=self.dist,
                collate_fn=self.collate,
            )
        self.state["validation"].append({"epoch": epoch + 1, "step": self.state["step"], **val})
        metrics.TRAIN_VALIDATION_LOSS.set(val["loss"])
        self.say(f"epoch {epoch + 1}/{self.config.epochs}: validation loss {val['loss']:.4f}")


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
    on_policy: Any = None,
) -> dict[str, Any]:
    """Train `model` in place; returns the run's record (loss curve, tokens, timings, resume point, and
    `efficiency`: what `training.efficiency` chose for this hardware).

    `on_policy`: a `training.onpolicy.OnPolicySource` that draws the batches of on-policy updates."""
    dist = dist or Distributed()
    say = log if dist.is_main else (lambda _message: None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config, plan = efficiency.prepare(
        model,
        CausalLMLoss(model, config.kd_temperature).to(device),
        examples,
        config,
        pad_id=pad_id,
        device=device,
        amp=autocast_dtype(config.precision, device),
        world_size=dist.world_size,
        trainable=trainable,
        log=say,
        agree=lambda b, c: dist.agree(b, c, device),
    )
    try:
        trainer = Trainer(
            model,
            examples,
            validation,
            config,
            pad_id=pad_id,
            device=device,
            checkpoint_dir=checkpoint_dir,
            dist=dist,
            log=log,
            on_policy=on_policy,
            compiled=plan.compiled_modules > 0,
        )
        plan.optimizer = trainer.optimizer_kind
        say(f"efficiency: {plan.describe()}")
        trainer.resume()
        return {**trainer.run(), "efficiency": plan.record()}
    finally:
        efficiency.undo(model, plan)
