"""Resumable training state: atomic checkpoint directories, and the fingerprint that says whether one may be resumed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distillery import atomic

if TYPE_CHECKING:
    from distillery.training.config import TrainConfig
    from distillery.training.data import Example


class Checkpoints:
    """`step-NNNNNNNN/state.pt` directories, written atomically (`atomic.replacing_directory`); the last two
    are kept. A `step-NNNNNNNN.tmp` a kill left behind is never read: the one before it is resumed."""

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
        with atomic.replacing_directory(final) as tmp:
            torch.save(state, tmp / "state.pt")
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


SPEED_ONLY = ("log_every_seconds", "packing", "compile", "gradient_checkpointing", "optimizer")


def fingerprint(config: TrainConfig, examples: list[Example], world_size: int) -> str:
    """What must be equal for a checkpoint to be resumed: settings, data and world size. Settings that
    change only how fast the same arithmetic runs (packing, compile, checkpointing, the optimizer's kernel)
    are left out, so a run may be resumed with them changed."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in SPEED_ONLY}
    digest = hashlib.sha256(json.dumps([settings, world_size], sort_keys=True).encode())
    for example in examples:
        digest.update(len(example.input_ids).to_bytes(4, "little"))
        digest.update(bytes(str(example.input_ids[:8]), "ascii"))
    return digest.hexdigest()[:16]
