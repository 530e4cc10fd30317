"""The hyperparameters of one training run: what the loop, the loss and the checkpoints all read.

Its own module (no torch) so that `loop`, `loss` and `checkpoints` each import it, not one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run (the spec's `training` section, minus where it runs).

    Args:
        learning_rate: peak AdamW learning rate.
        batch_size: sequences per device per micro-batch, or "auto": the largest that fits the GPU's memory
            (`efficiency.find_batch_size`; `efficiency.CPU_AUTO_BATCH` without a GPU).
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
        fingerprint: the training stage's fingerprint (spec and upstream data); a checkpoint made
            for another is not resumed.
        on_policy: on-policy distillation's settings (`training.onpolicy.OnPolicyConfig`); None: off.
        packing: padding-free packed micro-batches (`training.packing`), where the student can pack.
        compile: torch.compile each decoder layer (`efficiency.compile_layers`).
        gradient_checkpointing: recompute activations in the backward pass; None: only when the
            micro-batch does not fit the GPU's memory without it.
        optimizer: AdamW's kernel: auto (fused, else foreach, else for-loop), fused, foreach or for-loop.
    """

    learning_rate: float = 2e-5
    batch_size: int | str = 2
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
    fingerprint: str = ""
    on_policy: Any = None
    packing: bool = True
    compile: bool = False
    gradient_checkpointing: bool | None = None
    optimizer: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ValueError(f"training.batch_size: expected > 0 or 'auto', got {self.batch_size!r}")
        for name in (
            "learning_rate",
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
