"""Turn validation failures into one clear line per problem.

Each line names the field path as a user writes it (camelCase, dotted, list
indices in brackets), says what was wrong and what is expected. Used by
`distillery validate`, `distillery run` and the operator's Failed message.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from distillery.api import CrossFieldError, DistillationJob, Problem
from distillery.api.kube_types import key_path


class InvalidJob(Exception):
    """A DistillationJob that cannot be accepted; `problems` holds one entry per field."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(format_problem(p) for p in problems))


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (transformers and the Hub write paragraphs), cut at `limit`."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_problem(problem: Problem) -> str:
    return f"{problem.path}: {problem.message}" if problem.path else problem.message


def _path(loc: tuple[Any, ...]) -> str:
    """`spec.teacher.tolerations[0].key`; a map key that is no plain word in brackets: `limits[nvidia.com/gpu]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += key_path(str(part)) if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems_from_validation_error(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        # pydantic appends the validator's type to the path of union/function members;
        # drop those internal segments so the path is the one the user wrote.
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
        )
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, CrossFieldError):
            for p in cause.problems:
                problems.append(Problem(_join(_path(loc), p.path), p.message))
            continue
        message = item["msg"]
        if item["loc"][-1:] == ("[key]",):  # the map key itself is wrong, not its value
            message = f"invalid key; {message[0].lower()}{message[1:]}"
        if item["type"] == "missing":
            message = "is required but missing"
        elif item["type"] == "extra_forbidden":
            message = "is not a known field (check the spelling; see docs/api.md)"
        else:
            message = f"{message[0].lower()}{message[1:]} (got {_show(item.get('input'))})"
        problems.append(Problem(_path(loc), message))
    return problems


def _join(prefix: str, path: str) -> str:
    # Cross-field paths from the top-level validator are already absolute under `spec`.
    if not prefix:
        return path
    return f"{prefix}.{path}"


def parse_job(document: Any, source: str = "") -> DistillationJob:
    """Validate one parsed YAML/JSON document as a DistillationJob, or raise InvalidJob."""
    if not isinstance(document, dict):
        raise InvalidJob(
            [Problem("", f"expected a DistillationJob mapping, got {type(document).__name__}")], source
        )
    try:
        return DistillationJob.model_validate(document)
    except ValidationError as error:
        raise InvalidJob(problems_from_validation_error(error), source) from None


def load_documents(path: str) -> list[Any]:
    """Every YAML document in a file (empty documents skipped); YAML errors become InvalidJob."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    except OSError as error:
        raise InvalidJob([Problem("", f"cannot read {path}: {error.strerror}")], path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidJob([Problem("", f"not valid YAML{where}: {problem}")], path) from None


def load_job_file(path: str) -> DistillationJob:
    """The single DistillationJob in a YAML file, validated."""
    documents = load_documents(path)
    if len(documents) != 1:
        raise InvalidJob([Problem("", f"expected exactly one YAML document, found {len(documents)}")], path)
    return parse_job(documents[0], path)
