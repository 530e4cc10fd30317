"""Turn validation failures into one clear line per problem.

Each line names the field path as a user writes it (camelCase, dotted, list
indices in brackets), says what was wrong and what is expected. Used by
`distillery validate`, `distillery run` and the operator's Failed message.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distillery.api import CrossFieldError, DistillationJob, Problem
from distillery.api.kube_types import key_path
from distillery.documents import load_all


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
            message = "is not a known field" + _did_you_mean(loc) + " (see docs/api.md)"
        else:
            message = f"{message[0].lower()}{message[1:]} (got {_show(item.get('input'))})"
        problems.append(Problem(_path(loc), message))
    return problems


def known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names (camelCase) a DistillationJob allows beside the last part of `loc`."""
    annotation: Any = DistillationJob
    for part in loc[:-1]:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return [info.alias or name for name, info in model.model_fields.items()] if model else []


def _step(annotation: Any, part: Any) -> Any:
    """The type found at `part` (a field name, a list index, a map key) under `annotation`."""
    model = _model_in(annotation)
    if model is not None and isinstance(part, str):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(member)[1]
    return None


def _members(annotation: Any) -> list[Any]:
    """`X | None`, `Annotated[X, ...]` and `Literal`-free unions opened up into their types."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    if not loc:
        return ""
    written = str(loc[-1])
    known = known_fields(loc)
    # A snake_case name is the Python attribute; the API (and so kubectl) knows only camelCase.
    camel = written.split("_")[0] + "".join(w[:1].upper() + w[1:] for w in written.split("_")[1:])
    close = [camel] if camel in known else difflib.get_close_matches(written, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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
        text = json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidJob([Problem("", f"is not a JSON document: {error}")], source) from None
    try:
        # As the API server types it: strict JSON (no "3" for 3, no "true" for true; enums by their
        # value), camelCase names only (a snake_case one is an unknown field there).
        return DistillationJob.model_validate_json(text, strict=True, by_alias=True, by_name=False)
    except ValidationError as error:
        raise InvalidJob(problems_from_validation_error(error), source) from None


def load_documents(path: str) -> list[Any]:
    """Every YAML document in a file (empty documents skipped); YAML errors become InvalidJob."""
    return load_text(read_file(path), path)


def read_file(path: str) -> str:
    """A spec file's text; a file that cannot be read becomes InvalidJob."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise InvalidJob([Problem("", f"cannot read {path}: {error.strerror}")], path) from None
    except UnicodeDecodeError as error:
        raise InvalidJob(
            [Problem("", f"cannot read {path}: not UTF-8 text ({error.reason})")], path
        ) from None


def load_text(text: str, source: str) -> list[Any]:
    """Every YAML (or JSON) document in `text`, read as kubectl reads it (`distillery.documents`)."""
    try:
        return load_all(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidJob([Problem("", f"not valid YAML{where}: {problem}")], source) from None


def load_job_file(path: str) -> DistillationJob:
    """The single DistillationJob in a YAML file, validated."""
    documents = load_documents(path)
    if len(documents) != 1:
        raise InvalidJob([Problem("", f"expected exactly one YAML document, found {len(documents)}")], path)
    return parse_job(documents[0], path)
