"""`distillery train`: phase 2, fine-tune the student on the teacher's records (the library is `distillery.training`).

    distillery train --job JOB --storage DIR [--metrics-port P]
    torchrun --standalone --nproc_per_node=G --module distillery train --job JOB --storage DIR
    torchrun --nnodes=N --nproc_per_node=G --rdzv_backend=c10d --rdzv_endpoint=POD0:29400 ... (training.nodes)

Ends with a `TrainSummary` (contract.summaries) on stdout and in the termination message,
written by rank 0 only, on success and on failure.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from distillery.contract.commands import TrainCommand
from distillery.contract.summaries import TrainSummary
from distillery.stages.common import run_stage, start_metrics_server

add_arguments = TrainCommand.add_arguments


def main(args: argparse.Namespace) -> int:
    from distillery.training import metrics
    from distillery.training.student import train_student

    main_rank = int(os.environ.get("RANK", 0)) == 0  # torchrun: one summary, from rank 0

    context: dict[str, int] = {}  # the GPUs the pod holds, for the summary's cost

    def work() -> TrainSummary:
        command = TrainCommand.from_args(args)
        # Rank 0's summary is the only one, so it reports every node's GPUs (the other pods write none).
        context["gpus"] = command.job.spec.training.all_gpus
        start_metrics_server(command.metrics_port if main_rank else 0, metrics.REGISTRY)
        return train_student(command.job, Path(command.storage), command.teacher_url, command.teacher_model)

    return run_stage(TrainSummary, work, context=context, report=main_rank)
