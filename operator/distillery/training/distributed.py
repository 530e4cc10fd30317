"""This process's place in a torchrun launch, and the few collectives the training loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


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

    def agree(self, batch_size: int, checkpointing: bool, device: torch.device) -> tuple[int, bool]:
        """Each process found its own plan for its memory: all take the smallest batch, any checkpointing."""
        if self.world_size == 1:
            return batch_size, checkpointing
        tensor = torch.tensor([-batch_size, int(checkpointing)], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return -int(tensor[0]), bool(tensor[1])
