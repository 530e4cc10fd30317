"""What every stage entry point does around its work: metrics server, timing, the summary on success and failure."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from distillery.contract.cost import process_cpu_seconds, with_usage
from distillery.contract.exit_codes import ExitCode, debug_enabled, for_failure, storage_refusal
from distillery.contract.summaries import Failure, FailureReason, StageFailed, StageSummary, write_summary
from distillery.errors import InvalidJob


def start_metrics_server(port: int | None, registry: Any) -> None:
    """Serve this stage's own registry (plus process CPU/memory) on /metrics; 0 or None: don't."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=registry)


def run_stage(
    summary_type: type[StageSummary],
    work: Callable[[], StageSummary],
    *,
    context: dict[str, Any] | None = None,
    report: bool = True,
    verdict: Callable[[StageSummary], int] = lambda summary: 0,
) -> int:
    """Run `work`, then write its summary; on failure write a summary whose `failure` says why.

    `context` fills the failure summary (e.g. which shard, and `gpus`: what the stage's pod holds,
    for its cost; `work` sets it once it has read the job); `report` is False on processes
    that must not write one (torchrun ranks other than 0); `verdict` maps a successful
    summary to the exit code (evaluation's failed gate). Each failure is one line on stderr and an
    `ExitCode`; the storage refusing a write is `StorageUnwritable`. An unexpected error is reported
    as `Crashed` with its traceback printed to the log.
    """
    stage = summary_type.model_fields["stage"].default

    started = time.monotonic()

    def finish(summary: StageSummary) -> None:
        gpus = (context or {}).get("gpus", summary.gpus or 0)
        summary = with_usage(summary, time.monotonic() - started, gpus, process_cpu_seconds())
        if report:
            write_summary(summary)

    def failed(reason: FailureReason, message: str) -> StageSummary:
        print(f"distillery {stage}: {message}", file=sys.stderr, flush=True)
        return summary_type(**(context or {}), failure=Failure.of(reason, message))

    def crashed(error: Exception) -> int:
        """A bug, not a failure the stage understands: its traceback stays in the stage's log (a pod's log);
        `distillery run` keeps it in the stage's log file and shows one line."""
        traceback.print_exc()
        finish(failed(FailureReason.crashed, f"{type(error).__name__}: {error}"))
        return ExitCode.STAGE_FAILED

    try:
        summary = work()
    # InvalidJob: one line per problem, each naming its field, as `distillery validate` prints
    except InvalidJob as error:
        _debug_traceback()
        print(str(error), file=sys.stderr, flush=True)
        finish(summary_type(**(context or {}), failure=Failure.of(FailureReason.invalid_spec, str(error))))
        return ExitCode.INVALID_SPEC
    except StageFailed as error:
        _debug_traceback()
        finish(failed(error.reason, str(error)))
        return for_failure(error.reason)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as error:  # the CLI prints it with an install hint: the summary only, here
        message = f"needs the Python package {error.name!r}"
        finish(summary_type(**(context or {}), failure=Failure.of(FailureReason.crashed, message)))
        raise
    except OSError as error:
        refused = storage_refusal(error)
        if refused is None:
            return crashed(error)
        _debug_traceback()
        finish(failed(FailureReason.storage_unwritable, refused))
        return ExitCode.STORAGE_UNWRITABLE
    except Exception as error:
        return crashed(error)
    finish(summary)
    return verdict(summary)


def _debug_traceback() -> None:
    if debug_enabled():
        traceback.print_exc()
