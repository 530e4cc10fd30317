"""`distillery evaluate`: student vs baseline vs teacher, the report and the gate (the library is `distillery.evaluation`).

    distillery evaluate --job J --storage DIR [--teacher-url URL --teacher-model NAME]
                        [--spent JSON --gpu-hour-prices TABLE --currency CODE]
                        [--gate-exit-code N] [--metrics-port P]

Ends with an `EvaluateSummary` (contract.summaries) on stdout and in the termination
message. A failed quality gate is a verdict in that summary, not a failure: the exit code
is then `--gate-exit-code` (1 by default; the operator's Job passes 0).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from distillery.api import CostStatus
from distillery.contract.commands import EvaluateCommand
from distillery.contract.cost import (
    DEFAULT_CURRENCY,
    evaluation_cost,
    parse_prices,
    priced,
    process_cpu_seconds,
)
from distillery.contract.report import EvaluationReport
from distillery.contract.summaries import EvaluateSummary, StageSummary
from distillery.stages.common import run_stage, start_metrics_server
from distillery.storage import Layout

add_arguments = EvaluateCommand.add_arguments


def main(args: argparse.Namespace) -> int:
    from distillery.evaluation import metrics
    from distillery.evaluation.evaluate import evaluate_job, evaluate_summary, live_requests
    from distillery.evaluation.report import summary_lines
    from distillery.serving.client import teacher_connection

    gate_exit_code = args.gate_exit_code

    context: dict[str, int] = {}  # the GPUs the pod holds, for the summary's cost

    started = time.monotonic()

    def work() -> EvaluateSummary:
        command = EvaluateCommand.from_args(args)
        job = command.job
        context["gpus"] = job.spec.evaluation.gpus
        start_metrics_server(command.metrics_port, metrics.REGISTRY)
        teacher = None
        if command.teacher_url:
            teacher = teacher_connection(job.spec.teacher, command.teacher_url)
            if command.teacher_model:
                teacher = replace(teacher, model=command.teacher_model)
            if command.teacher_pid:  # one local server: asked as the servers this stage starts are
                teacher = replace(teacher, spread=False, server_pid=command.teacher_pid)

        def cost(report: dict) -> CostStatus:
            spent = evaluation_cost(
                command.spent,
                time.monotonic() - started,
                job.spec.evaluation.gpus,
                process_cpu_seconds(),
                live_requests(report),
                EvaluationReport.of(report).retention,
            )
            prices = parse_prices(command.gpu_hour_prices or "")
            return priced(spent, job.spec, prices, command.currency or DEFAULT_CURRENCY)

        report = evaluate_job(job, Path(command.storage), teacher=teacher, cost=cost)
        for line in summary_lines(report):
            print(line)
        layout = Layout.of(job, command.storage)
        return evaluate_summary(report, layout.evaluation_report.relative_to(layout.root).as_posix())

    def verdict(summary: StageSummary) -> int:
        passed = (
            isinstance(summary, EvaluateSummary) and summary.evaluation and summary.evaluation.gate_passed
        )
        return 0 if passed else gate_exit_code

    return run_stage(EvaluateSummary, work, context=context, verdict=verdict)
