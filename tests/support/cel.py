"""The API server's view of a custom resource for CEL: structural defaulting, a JSON value as CEL sees it
under its schema, and the CRD's rules run on an object (used by the CRD and validate tests in tests/unit)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import celpy
from celpy import celtypes


def apply_defaults(value: Any, schema: dict) -> Any:
    """Structural defaulting as the API server does it: missing properties get their default, recursively."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(value[name], child)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_defaults(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(item, schema["items"]) for item in value]
    return value


def to_cel(value: Any, schema: dict) -> Any:
    """A JSON value as CEL sees it under this schema (integer vs double by the schema's type)."""
    kind = schema.get("type")
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, props.get(k) or extra or {}) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(item, schema.get("items", {})) for item in value])
    if kind == "number":
        return celtypes.DoubleType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    return celtypes.StringType(value)


# ---------------------------------------------------------------- the CRD's rules run on an object, as the API server runs them

ENV = celpy.Environment()


@cache
def program(rule: str) -> Any:
    """A compiled CEL rule (compiled once per rule text)."""
    return ENV.program(ENV.compile(rule))


def crd_rules(node: dict, path: tuple = ()) -> list[tuple[tuple, dict, dict]]:
    """(schema path, schema node, rule) for every rule; `[]` stands for list items, `{}` for map values."""
    found = [(path, node, rule) for rule in node.get("x-kubernetes-validations", [])]
    for name, child in node.get("properties", {}).items():
        found += crd_rules(child, (*path, name))
    if "items" in node:
        found += crd_rules(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found += crd_rules(node["additionalProperties"], (*path, "{}"))
    return found


def instances(value: Any, path: tuple, where: str = "spec") -> list[tuple[str, Any]]:
    """(field path as a user writes it, value) of every node of `value` at a schema path."""
    if not path:
        return [(where, value)]
    head, rest = path[0], path[1:]
    if head == "[]":
        return [m for i, item in enumerate(value or []) for m in instances(item, rest, f"{where}[{i}]")]
    if head == "{}":
        return [m for key, item in (value or {}).items() for m in instances(item, rest, f"{where}.{key}")]
    if not isinstance(value, dict) or head not in value:
        return []
    return instances(value[head], rest, f"{where}.{head}")


def cel_problems(document: dict, schema: dict) -> set[tuple[str, str]]:
    """(field path, message) of each rule of the CRD's `schema` (openAPIV3Schema) the API server would fail
    on this object's spec at create: defaults applied first, transition rules left out (updates only)."""
    spec = apply_defaults(copy.deepcopy(document["spec"]), schema["properties"]["spec"])
    failed = set()
    for path, node, rule in crd_rules(schema):
        if "oldSelf" in rule["rule"] or path[:1] != ("spec",):
            continue
        for where, value in instances(spec, path[1:]):
            if not program(rule["rule"]).evaluate({"self": to_cel(value, node)}):
                failed.add((where + rule.get("fieldPath", ""), rule["message"]))
    return failed
