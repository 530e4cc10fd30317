"""The exit status of every `distillery` command, in one place (docs/errors.md shows the table).

A script, CI step or Job's podFailurePolicy can tell what to do from the number alone: fix the
spec (INVALID_SPEC), install something (MISSING_DEPENDENCY), free or fix the storage
(STORAGE_UNWRITABLE), look at the stage's log (STAGE_FAILED), or accept that the student is
not good enough yet (GATE_FAILED: every artifact is kept).

Expected failures print one line naming the field or the cause and the log to read; a Python
traceback only with `distillery --debug ...` or DISTILLERY_DEBUG=1 (`debug_enabled`).
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Mapping

DEBUG_ENV = "DISTILLERY_DEBUG"


class ExitCode(enum.IntEnum):
    """What a `distillery` process's exit status means."""

    OK = 0  # done; for `distillery run` and `distillery evaluate`, the quality gate passed
    STAGE_FAILED = (
        1  # a stage could not finish: a server that would not start, a model that would not load, ...
    )
    INVALID_SPEC = 2  # the spec, or an input or model it names, is refused; nothing was started
    MISSING_DEPENDENCY = 3  # a Python package (or vLLM) this command needs is not installed
    GATE_FAILED = 4  # the run finished but the student failed evaluation.gate; every artifact is kept
    STORAGE_UNWRITABLE = 5  # the storage (or spec.output) cannot be written: read-only, missing or full
    INTERNAL_ERROR = 70  # a bug (sysexits' EX_SOFTWARE): rerun with --debug and report the traceback
    INTERRUPTED = 130  # Ctrl-C / SIGINT (128 + 2, as shells report it); run the same command to resume


# Why a stage failed (its summary's `FailureReason` value) -> the exit status of the process that ran it.
# By value, not by member: `summaries` imports `commands`, which takes the gate's code from here.
BY_REASON: dict[str, ExitCode] = {
    "InvalidSpec": ExitCode.INVALID_SPEC,
    "InvalidInput": ExitCode.INVALID_SPEC,
    "InputNotFound": ExitCode.INVALID_SPEC,
    "StorageUnwritable": ExitCode.STORAGE_UNWRITABLE,
    "ExportFailed": ExitCode.STORAGE_UNWRITABLE,
}


def for_failure(reason: object) -> ExitCode:
    """The exit status for a stage that failed for `reason` (a FailureReason, or None): STAGE_FAILED unless the
    spec, an input or the storage is at fault."""
    return BY_REASON.get(getattr(reason, "value", reason), ExitCode.STAGE_FAILED)


def debug_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether tracebacks are shown (`--debug` sets DISTILLERY_DEBUG=1 for the stage processes too)."""
    return environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# The storage, not the code, is at fault: say which file and why in one line.
STORAGE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def storage_refusal(error: OSError) -> str | None:
    """`the storage refused PATH: Read-only file system (...)` for an OSError the storage caused (STORAGE_ERRNOS,
    naming a file); None for any other."""
    if error.errno not in STORAGE_ERRNOS or not error.filename:
        return None
    return f"the storage refused {error.filename}: {error.strerror} (check that it is mounted, writable and not full)"
