"""`kubectl distillery ...` (the `kubectl-distillery` executable) and the same verbs as `distillery` subcommands.

    submit FILE [--wait]            create a DistillationJob (validated first)
    get [NAME]                      NAME, PHASE, PROGRESS, RETENTION, COST, AGE
    describe NAME                   conditions, Events, stage timings, scores, artifacts
    logs NAME [--stage S] [-f]      the stage pods' logs
    report NAME [-o DIR] [--student]  print the summary; copy reports/ (and the student) here
    cancel NAME                     suspend the job (spec.suspend: true)
    delete NAME                     delete the job and its children

Global options, as kubectl's: --kubeconfig, --context, -n/--namespace. Exit codes: 0 done, 1 an error
(one line on stderr: not found, no cluster, timeout, a failed job after --wait), 2 an invalid spec,
130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any

import yaml

from distillery.client.errors import ClientError
from distillery.contract.exit_codes import ExitCode
from distillery.errors import InvalidJob, format_problem

RESOURCE = "distillationjob.distillery.dev"
# The numbers are distillery's (docs/errors.md): any client error is 1, as a failed stage is.
EXIT_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = (
    ExitCode.STAGE_FAILED,
    ExitCode.INVALID_SPEC,
    ExitCode.INTERRUPTED,
)


def _client(args: argparse.Namespace) -> Any:
    from distillery.client.api import Client

    return Client(
        context=getattr(args, "context", None),
        namespace=getattr(args, "namespace", None),
        kubeconfig=getattr(args, "kubeconfig", None),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.submit(args.file, wait=False)
    print(f"{RESOURCE}/{job.metadata.name} created")
    if not args.wait:
        return 0
    job = client.wait(job.metadata.name, args.timeout, namespace=job.metadata.namespace)
    status = job.status
    print(f"{RESOURCE}/{job.metadata.name} {status.phase.value}: {status.message or ''}".rstrip(": "))
    return 0 if status.phase.value == "Succeeded" else EXIT_ERROR


def _get(args: argparse.Namespace) -> int:
    from distillery.client import render

    client = _client(args)
    jobs = [client.get(args.name)] if args.name else client.list(all_namespaces=args.all_namespaces)
    if args.output in ("yaml", "json"):
        bodies = [j.model_dump(mode="json", by_alias=True, exclude_none=True) for j in jobs]
        document: Any = bodies[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": bodies}
        text = (
            json.dumps(document, indent=2) + "\n"
            if args.output == "json"
            else yaml.safe_dump(document, sort_keys=False)
        )
        sys.stdout.write(text)
    elif not jobs:
        print(f"No resources found in {client.namespace} namespace.", file=sys.stderr)
    else:
        text = render.get_table(jobs, _now())
        if args.all_namespaces:
            lines = text.splitlines()
            width = max(len("NAMESPACE"), *(len(j.metadata.namespace or "") for j in jobs)) + 3
            text = (
                "\n".join(
                    [f"{'NAMESPACE':<{width}}{lines[0]}"]
                    + [
                        f"{(j.metadata.namespace or ''):<{width}}{line}"
                        for j, line in zip(jobs, lines[1:], strict=True)
                    ]
                )
                + "\n"
            )
        sys.stdout.write(text)
    return 0


def _describe(args: argparse.Namespace) -> int:
    from distillery.client import render

    client = _client(args)
    job = client.get(args.name)
    sys.stdout.write(render.describe(job, client.events(args.name), _now()))
    return 0


def _logs(args: argparse.Namespace) -> int:
    for line in _client(args).logs(args.name, stage=args.stage, follow=args.follow):
        print(line.text if args.no_prefix else f"[{line.pod}] {line.text}", flush=args.follow)
    return 0


def _report(args: argparse.Namespace) -> int:
    copied = _client(args).report(
        args.name, args.output or f"{args.name}-report", student=args.student, image=args.image
    )
    sys.stdout.write(
        copied.summary if copied.summary.endswith("\n") or not copied.summary else copied.summary + "\n"
    )
    print(f"reports copied to {copied.reports} (from {copied.source})", file=sys.stderr)
    if copied.student is not None:
        print(f"student copied to {copied.student}", file=sys.stderr)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    _client(args).cancel(args.name)
    print(f"{RESOURCE}/{args.name} suspended (spec.suspend: true; set it to false to resume)")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client(args).delete(args.name)
    print(f'{RESOURCE} "{args.name}" deleted')
    return 0


def _globals(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """kubectl's connection options; SUPPRESS on subcommands so a value given before the verb survives."""
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context (default: the current one)")
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")


def _name(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?" if optional else None, help="the DistillationJob")


def _args_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a YAML file with one DistillationJob")
    p.add_argument(
        "--wait", action="store_true", help="wait until it has succeeded or failed (exit 1 if failed)"
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds --wait waits (default: no limit)")


def _args_get(p: argparse.ArgumentParser) -> None:
    _name(p, optional=True)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="jobs of every namespace")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")


def _args_logs(p: argparse.ArgumentParser) -> None:
    from distillery.client.api import stage_names

    _name(p)
    p.add_argument("--stage", choices=stage_names(), help="one stage's pods (default: every stage's)")
    p.add_argument("-f", "--follow", action="store_true", help="stream the logs until the pods end")
    p.add_argument("--no-prefix", action="store_true", help="print lines without their [pod] prefix")


def _args_report(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument(
        "-o", "--output", metavar="DIR", help="where reports/ (and student/) go (default: NAME-report)"
    )
    p.add_argument("--student", action="store_true", help="copy the distilled student too")
    p.add_argument("--image", help="image of the copy pod (default: the job's worker image)")


# verb -> (one-line help, arguments, what it does)
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "submit": ("create a DistillationJob on the cluster from a file", _args_submit, _submit),
    "get": ("list jobs, or show one: phase, progress, retention, cost, age", _args_get, _get),
    "describe": ("show a job: conditions, Events, stage timings", _name, _describe),
    "logs": ("print the logs of a job's stage pods", _args_logs, _logs),
    "report": ("print a job's report and copy reports/ (and the student) here", _args_report, _report),
    "cancel": ("stop a job (spec.suspend: true); it can be resumed", _name, _cancel),
    "delete": ("delete a job and its children", _name, _delete),
}


def run(args: argparse.Namespace) -> int:
    """Carry out one verb; client errors become one line on stderr and exit 1."""
    try:
        return COMMANDS[args.verb][2](args)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def add_commands(sub: Any, extra: str = "operator") -> None:
    """Add every verb to a subparsers object (`distillery`'s or the plugin's)."""
    for verb, (help_text, arguments, _) in COMMANDS.items():
        command = sub.add_parser(verb, help=help_text, description=help_text)
        arguments(command)
        _globals(command, default=argparse.SUPPRESS)
        command.set_defaults(func=run, verb=verb, extra=extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl distillery", description="Work with DistillationJobs on a cluster, as kubectl would."
    )
    _globals(parser)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `kubectl-distillery` executable (kubectl runs it for `kubectl distillery ...`)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidJob as error:
        for problem in error.problems:
            print(f"{error.source + ': ' if error.source else ''}{format_problem(problem)}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
