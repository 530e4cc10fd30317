"""`distillery generate`: one shard of phase 1 (the library is `distillery.generation`).

    distillery generate --job J --storage DIR --teacher-url URL [--teacher-model NAME]
                        [--shard-index K] [--metrics-port P]

Writes `jobs/<job>/generated/<split>/shard-K-of-N.jsonl` (accepted records), `.rejected.jsonl`
(with the reason) and `.summary.json`; a killed shard started again continues where it
stopped. Ends with a `GenerateSummary` (contract.summaries) on stdout and in the
termination message, on success and on failure.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from distillery.contract.commands import GenerateCommand
from distillery.contract.summaries import FailureReason, GenerateSummary, StageFailed
from distillery.stages.common import run_stage, start_metrics_server

add_arguments = GenerateCommand.add_arguments


def main(args: argparse.Namespace) -> int:
    from distillery.generation import metrics
    from distillery.generation.shard import generate_shard
    from distillery.serving.client import teacher_connection

    context: dict[str, int] = {}  # which shard, for the summary of a failure

    def work() -> GenerateSummary:
        command = GenerateCommand.from_args(args)
        job = command.job
        context.update(shard=command.shard(), shards=job.spec.generation.shards)
        try:
            connection = teacher_connection(job.spec.teacher, command.teacher_url)
        except ValueError as error:  # a served teacher and no --teacher-url
            raise StageFailed(str(error), FailureReason.invalid_spec) from None
        if command.teacher_model:
            connection = replace(connection, model=command.teacher_model)
        start_metrics_server(command.metrics_port, metrics.REGISTRY)
        return generate_shard(job, Path(command.storage), context["shard"], connection)

    return run_stage(GenerateSummary, work, context=context)
