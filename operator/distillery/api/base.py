"""What every API model shares: camelCase on the wire, problems that name a field, and rules.

A `Rule` is one check across fields of one object, declared once with its CEL
expression (the CRD carries it as an `x-kubernetes-validations` entry, so the API
server refuses the object at `kubectl apply`) and the same check in Python (so
`distillery validate`, `distillery run` and the operator refuse it with the same
message). A test evaluates both on a table of specs and proves they agree.
Checks that CEL cannot express (quantities compared, names parsed) are Python-only:
a model returns them from `problems()`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import to_jsonable_python

# Bounds on every string and list of the spec: the API server estimates the cost of the
# CRD's CEL rules (the spec-wide transition rule compares everything) from them.
NAME_MAX = 256  # served model names, record field names, labels
PATH_MAX = 2048  # model ids, paths on the storage, URLs
TEXT_MAX = 65536  # system prompt, prompt template
ARG_MAX = 4096  # one vLLM server argument
LIST_MAX = 64  # extra args, labels, target modules, tolerations, node-selector entries
Arg = Annotated[str, Field(max_length=ARG_MAX)]
Name = Annotated[str, Field(max_length=NAME_MAX)]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: the field path (camelCase, dotted) and what was expected."""

    path: str
    message: str


class CrossFieldError(ValueError):
    """Raised inside validators; `distillery.errors` expands it into one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise CrossFieldError(problems)


@dataclass(frozen=True)
class Rule:
    """A rule over one object: `cel` and `holds` say the same thing, in CEL and in Python.

    `field` is the camelCase path (relative to the object) of the field the user has to
    change; the API server reports the rule there (`fieldPath`), and so do the models.
    `cel` sees the object as `self` after the API server applied the schema's defaults.
    """

    field: str
    message: str
    cel: str
    holds: Callable[[Any], bool]

    def problem(self) -> Problem:
        return Problem(self.field, self.message)

    def crd(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": "." + self.field}


@dataclass(frozen=True)
class TransitionRule:
    """A rule comparing an object with its previous version (`oldSelf`); the API server only."""

    message: str
    cel: str
    holds: Callable[[Any, Any], bool]

    def crd(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message}


class Model(BaseModel):
    """Base for every API object: camelCase aliases, unknown fields refused, rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    # Each class lists its own rules; a subclass inherits its bases' rules.
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def all_rules(cls) -> list[Rule]:
        return list(_rules_of(cls))

    def problems(self) -> list[Problem]:
        """Checks CEL cannot express; overridden where a model has some."""
        return []

    @model_validator(mode="after")
    def _check_rules(self) -> Model:
        found = [rule.problem() for rule in _rules_of(type(self)) if not rule.holds(self)]
        raise_problems(found + self.problems())
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        target = handler.resolve_ref_schema(schema)
        for name, info in cls.model_fields.items():
            # pydantic leaves a default_factory's value out of the schema; the API server fills
            # defaults from the schema, so CEL rules and `kubectl get` see what the models use.
            field = target.get("properties", {}).get(info.alias or name)
            value = info.default_factory() if info.default_factory is not None else None  # type: ignore[call-arg]
            if field is not None and "default" not in field and value and not isinstance(value, BaseModel):
                field["default"] = to_jsonable_python(value)
        rules = cls.all_rules()
        if rules:
            target["x-kubernetes-validations"] = [r.crd() for r in rules]
        return schema


def section(cls: type[Model], description: str) -> Any:
    """A sub-object that is always present; `{}` lets the API server fill its defaults."""
    return Field(default_factory=cls, description=description, json_schema_extra={"default": {}})


def immutable_except(model: type[Model], mutable: tuple[str, ...], message: str) -> TransitionRule:
    """A transition rule: every field of `model` but `mutable` (camelCase) keeps its old value.

    A field always there (required, or with a default in the schema) is compared as is;
    an optional one must be absent in both versions or equal (CEL errors on absent fields).
    """
    schema = model.model_json_schema(by_alias=True)
    parts, exclude = [], set()
    for name, info in model.model_fields.items():
        field = info.alias or name
        if field in mutable:
            exclude.add(name)
        elif field in schema.get("required", ()) or schema["properties"][field].get("default") is not None:
            parts.append(f"self.{field} == oldSelf.{field}")
        else:
            parts.append(
                f"(has(self.{field}) ? has(oldSelf.{field}) && self.{field} == oldSelf.{field} "
                f": !has(oldSelf.{field}))"
            )

    def holds(old: Model, new: Model) -> bool:
        return old.model_dump(exclude=exclude) == new.model_dump(exclude=exclude)

    return TransitionRule(message, " && ".join(parts), holds)


@functools.cache
def _rules_of(cls: type) -> tuple[Rule, ...]:
    """A model's rules, its bases' first: read once per class (every status a reconcile builds is checked)."""
    return tuple(rule for klass in reversed(cls.__mro__) for rule in vars(klass).get("RULES", ()))
