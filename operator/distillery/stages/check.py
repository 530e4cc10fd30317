"""`distillery check`: before the teacher starts, the inputs exist and are readable (the library is `distillery.check`).

    distillery check --job J --storage DIR

Opens `data.train` and `data.validation` (paths on the storage or `s3://` URIs) and parses their
first records; checks that models given as paths are on the storage. Ends with a `CheckSummary`
(contract.summaries) whose failure names each field and location, with InputNotFound,
AccessDenied, InputUnreadable or InvalidInput as the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distillery.contract.commands import CheckCommand
from distillery.contract.summaries import CheckSummary, InputSummary, StageFailed
from distillery.stages.common import run_stage

add_arguments = CheckCommand.add_arguments


def main(args: argparse.Namespace) -> int:
    from distillery.check.inputs import check_job, failure_text

    def work() -> CheckSummary:
        command = CheckCommand.from_args(args)
        result = check_job(command.job, Path(command.storage))
        if not result.ok:
            raise StageFailed(failure_text(result), result.findings[0].reason)
        inputs = {
            name: InputSummary(
                location=found.get("location"),
                format=found.get("format"),
                bytes=found.get("bytes"),
                checked=found.get("checked", 0),
            )
            for name, found in result.inputs.items()
        }
        for name, found in inputs.items():
            print(
                f"check: {name}: {found.location} readable ({found.format}, {found.checked} records parsed)"
            )
        return CheckSummary(inputs=inputs)

    return run_stage(CheckSummary, work)
