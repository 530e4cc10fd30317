"""`distillery validate PATH...`: refuse offline what `kubectl apply` or the operator would refuse.

    distillery validate job.yaml                 # one file (several documents are fine)
    distillery validate deploy/                  # a GitOps directory: *.yaml, *.yml, *.json, recursively
    kubectl kustomize deploy | distillery validate -
    distillery validate --target cluster job.yaml

Each DistillationJob is read as kubectl reads YAML (`distillery.documents`: duplicate keys refused)
and typed as the API server types it (`errors.parse_job`: strict JSON types, camelCase names, the
CRD's rules); then `apiVersion`, `kind` and `metadata.name` must be there, as `kubectl apply`
requires. The target is where the job will run: `cluster` adds the operator's own rules
(`api.cluster_problems`); by default it is read from the spec (`storage.pvc` is a cluster's,
`distillery run` needs none). Documents of other kinds are skipped with a note, so a directory that
mixes kinds is fine. Problems go to stderr, one line each; exit 2 (ExitCode.INVALID_SPEC) when there is any.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.api import (
    API_VERSION,
    GROUP,
    KIND,
    DistillationJobSpec,
    Problem,
    cluster_problems,
    models_ref,
)
from distillery.contract.exit_codes import ExitCode
from distillery.errors import InvalidJob, format_problem, load_text, parse_job, read_file

SUFFIXES = (".yaml", ".yml", ".json")
TARGETS = ("cluster", "local")
STDIN = "-"


@dataclass
class Report:
    """What validate found, in the order it found it: lines for stdout and for stderr."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    valid: int = 0
    invalid: int = 0
    skipped: int = 0


def default_target(spec: DistillationJobSpec) -> tuple[str, str]:
    """(target, why) read from the spec: a claim is a cluster's storage; otherwise `distillery run`'s."""
    if spec.storage.pvc is not None:
        return "cluster", "storage.pvc is set"
    if spec.storage.path:
        return "local", "storage.path is set"
    return "local", "no storage.pvc; --target cluster checks it for a cluster"


def identity(document: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) as written, for notes; `?` for what is missing."""
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return str(document.get("kind") or "?"), str(name or "?")


def is_ours(document: dict[str, Any]) -> bool:
    """A DistillationJob, or something that meant to be one (our kind, or our API group)."""
    api_version = document.get("apiVersion")
    group = api_version.split("/")[0] if isinstance(api_version, str) else None
    return document.get("kind") == KIND or group == GROUP


def header_problems(document: dict[str, Any]) -> list[Problem]:
    """What `kubectl apply` requires before it looks at the spec: apiVersion, kind and a name."""
    problems = []
    kind = document.get("kind")
    if kind is None:
        problems.append(Problem("kind", f"is required (expected {KIND!r})"))
    elif kind != KIND:
        close = difflib.get_close_matches(str(kind), [KIND], n=1, cutoff=0.6)
        hint = f"; did you mean {KIND!r}?" if close else f" (expected {KIND!r})"
        problems.append(Problem("kind", f"{GROUP} has no kind {kind!r}{hint}"))
    if document.get("apiVersion") is None:
        problems.append(Problem("apiVersion", f"is required (expected {API_VERSION!r})"))
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        generate = isinstance(metadata, dict) and metadata.get("generateName")
        why = (
            "kubectl apply needs a name; generateName works only with kubectl create"
            if generate
            else "kubectl apply and the API server refuse an object without one"
        )
        problems.append(Problem("metadata.name", f"is required ({why})"))
    return problems


def check_document(document: Any, target: str | None, where: str, report: Report) -> None:
    """One document: skipped with a note, valid, or one line per problem."""
    if not isinstance(document, dict):
        report.invalid += 1
        report.err.append(f"{where}: expected a DistillationJob mapping, got {type(document).__name__}")
        return
    if document.get("kind") == "List" and isinstance(document.get("items"), list):  # as kubectl expands it
        for index, item in enumerate(document["items"]):
            check_document(item, target, f"{where}: items[{index}]", report)
        return
    if not is_ours(document):
        report.skipped += 1
        report.out.append(f"{where}: skipped: {' '.join(identity(document))}")
        return
    problems = header_problems(document)
    chosen, why = target, "--target"
    try:
        job = parse_job(document)
    except InvalidJob as error:
        said = {p.path for p in problems}  # a wrong kind is said once, with its suggestion
        problems += [p for p in error.problems if p.path not in said]
    else:
        problems += models_ref.syntax_problems(
            job.spec
        )  # neither a path nor a hub id: no server could load it
        if chosen is None:
            chosen, why = default_target(job.spec)
        if chosen == "cluster":
            problems += cluster_problems(job.spec)
    if problems:
        report.invalid += 1
        report.err += [f"{where}: {format_problem(p)}" for p in problems]
        return
    report.valid += 1
    report.out.append(f"{where}: valid: {KIND} {identity(document)[1]} (target {chosen}: {why})")


def check_text(text: str, source: str, target: str | None, report: Report, named: bool) -> None:
    """Every document of one file (or stdin); `named`: given on the command line, not found in a directory."""
    try:
        documents = load_text(text, source)
    except InvalidJob as error:
        report.invalid += 1
        report.err += [f"{source}: {format_problem(p)}" for p in error.problems]
        return
    if not documents:
        if named:
            report.invalid += 1
            report.err.append(f"{source}: file is empty")
        else:
            report.skipped += 1
            report.out.append(f"{source}: skipped: empty")
        return
    for index, document in enumerate(documents):
        where = f"{source}: document {index + 1}" if len(documents) > 1 else source
        check_document(document, target, where, report)


def sources(path: str) -> list[tuple[str, bool]]:
    """(file, named) for a PATH argument: itself, or a directory's YAML and JSON files, sorted."""
    if path != STDIN and Path(path).is_dir():
        found = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        return [(str(p), False) for p in found]
    return [(path, True)]


def read(path: str) -> str:
    return sys.stdin.read() if path == STDIN else read_file(path)


def validate(paths: list[str], target: str | None, stdin_name: str = "<stdin>") -> Report:
    """Every PATH checked; `target` None reads each job's from its spec."""
    report = Report()
    for path in paths:
        files = sources(path)
        if not files:
            report.invalid += 1
            report.err.append(f"{path}: no *.yaml, *.yml or *.json file in this directory")
        for file, named in files:
            try:
                text = read(file)
            except InvalidJob as error:
                report.invalid += 1
                report.err += [f"{file}: {format_problem(p)}" for p in error.problems]
                continue
            check_text(text, stdin_name if file == STDIN else file, target, report, named)
    if report.valid + report.invalid == 0 and report.skipped:
        report.out.append(f"no {KIND} found in {' '.join(paths)}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a YAML or JSON file (several documents are fine), a directory (its *.yaml, *.yml and *.json "
        "files, recursively), or - for stdin",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        help="where the job will run: cluster adds the operator's rules (storage.pvc required); "
        "default: cluster when storage.pvc is set, else local",
    )


def main(args: argparse.Namespace) -> int:
    report = validate(args.paths, args.target)
    for line in report.out:
        print(line)
    for line in report.err:
        print(line, file=sys.stderr)
    if report.valid + report.invalid + report.skipped > 1:
        print(f"{report.valid} valid, {report.invalid} invalid, {report.skipped} skipped")
    return ExitCode.INVALID_SPEC if report.invalid else ExitCode.OK
