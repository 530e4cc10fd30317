"""Model references (`teacher.model`, `student.model`, `student.tokenizer`): a path, or a Hugging Face hub id.

The rule, purely on the text (no file system), so `distillery validate`, the check stage and
`distillery run` agree:

- path-like: starts with `/`, `./`, `../` or `~`, has three or more `/`-separated parts (`x/y/z`),
  an empty part (`x//y`, `x/`), or a backslash. A path must exist (checked where the storage is).
- hub id: `name` or `org/name`, each part letters, digits, `-`, `_`, `.`, starting and ending with a
  letter, digit or `_`, no `--` or `..`, not ending in `.git`, the name at most 96 characters
  (the Hub's own rule, huggingface_hub's `validate_repo_id`).
- anything else (a space, `org/na me`, `s3://...`, `org/-x`) is refused, naming the field.

A value shaped like a hub id whose first directory exists on the storage (`models/teacher` with
`models/` there) is a path: `check.inputs` decides that, with the storage at hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from distillery.api.base import Problem

HUB_NAME_MAX = 96
_HUB_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
EXPECTED = "expected a path (./dir, /abs/dir, dir/sub/model) or a Hugging Face id (name or org/name)"
_HUB_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """What a model reference is: `kind` path or hub, or `problem` (why it is neither)."""

    value: str
    kind: Literal["path", "hub"] | None
    problem: str | None = None

    def describe(self) -> str:
        """For the "serving X" lines: which of the two the value was taken as."""
        return "a local path" if self.kind == "path" else "a Hugging Face hub id"


def looks_like_path(value: str) -> bool:
    """Whether the text alone says it is a path (see the module's rule)."""
    parts = value.split("/")
    return (
        value.startswith(("/", "./", "../", "~"))
        or value in (".", "..")
        or "\\" in value
        or len(parts) >= 3
        or any(part == "" for part in parts)
    )


def hub_id_problem(value: str) -> str | None:
    """Why `value` is not a well-formed hub id, or None when it is one."""
    parts = value.split("/")
    if len(parts) > 2:
        return "has more than one '/'"
    for part in parts:
        if not _HUB_CHARS.match(part):
            return "a hub id has only letters, digits, '-', '_' and '.'"
        if not _HUB_PART.match(part):
            return f"{part!r} starts or ends with '-' or '.'"
    if "--" in value or ".." in value:
        return "contains '--' or '..'"
    if value.endswith(".git"):
        return "ends with '.git'"
    if len(parts[-1]) > HUB_NAME_MAX:
        return f"the name is longer than {HUB_NAME_MAX} characters"
    return None


def classify(value: str) -> ModelRef:
    """A model reference's kind by its text alone; a problem when it is neither a path nor a hub id."""
    if "://" in value:
        return ModelRef(
            value, None, f"{value!r} is a URI; {EXPECTED} (copy the model onto the job's storage)"
        )
    if looks_like_path(value):
        return ModelRef(value, "path")
    why = hub_id_problem(value)
    if why is not None:
        return ModelRef(value, None, f"{value!r} is neither a path nor a Hugging Face id ({why}); {EXPECTED}")
    return ModelRef(value, "hub")


def model_fields(spec: object) -> list[tuple[str, str]]:
    """Every model reference a job's spec sets, as (field path, value): the one list of them."""
    teacher, student = spec.teacher, spec.student
    found = [("spec.teacher.model", teacher.model), ("spec.student.model", student.model)]
    found.append(("spec.student.tokenizer", student.tokenizer))
    return [(field, value) for field, value in found if value]


def syntax_problems(spec: object) -> list[Problem]:
    """One Problem per model reference that is neither a path nor a hub id (what `distillery validate` can use)."""
    problems = []
    for field, value in model_fields(spec):
        ref = classify(value)
        if ref.problem:
            problems.append(Problem(field, ref.problem))
    return problems
