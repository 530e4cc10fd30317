"""The CRD checked the way the API server checks a CustomResourceDefinition before accepting it.

kubernetes-validate (test_crd.py) checks the CRD object against the apiextensions/v1 OpenAPI
schema: field names and types. The API server checks much more, in Go; this file ports what it
can, from kubernetes/apiextensions-apiserver:

Structural schema (pkg/apiserver/schema/validation.go: validateStructuralInvariants,
validateStructuralCompleteness, validateStructuralMetadataInvariants; and
pkg/apis/apiextensions/validation/validation.go: ValidateCustomResourceDefinitionOpenAPISchema):
  - every node under properties, items and additionalProperties has a type, except where
    x-kubernetes-int-or-string (type must then be empty) or x-kubernetes-preserve-unknown-fields
    (which must be true where set) allow none; the root is an object; types are OpenAPI's six;
  - properties and additionalProperties are mutually exclusive, additionalProperties is never
    false; an array has exactly one items schema (not a list);
  - $ref, definitions, dependencies, additionalItems, patternProperties, id, $schema are
    forbidden, uniqueItems may not be true, and anyOf/allOf/oneOf/not (value validations) may
    not carry type, properties, items, additionalProperties, default, description or nullable;
  - x-kubernetes-embedded-resource needs type object and properties or preserve-unknown-fields;
  - x-kubernetes-list-type map names x-kubernetes-list-map-keys, scalar properties of its
    object items that are required or defaulted;
  - metadata at the root specifies nothing but type object and, optionally, name and
    generateName as strings; apiVersion and kind at the root are strings;
  - every pattern compiles (Python's re standing in for Go's RE2: the CRD's patterns use the
    common subset).
Defaults (validation.go, validateDefaults): each default, with the defaults nested in its schema
applied (structural defaulting), validates against its own schema (jsonschema, OpenAPI 3.0's
draft-4 semantics), has no field its schema does not know (pruning), is not under metadata,
and satisfies the x-kubernetes-validations rules of its subtree (run with cel-python).
CEL: every rule compiles with cel-python. Cost: a port of the static estimate (cel-go
checker/cost.go, with the sizes the API server gives it in
apiserver/schema/cel/compilation.go and k8s.io/apiserver/pkg/cel/common/schemas.go):
  - a string's size is its maxLength (an enum: its longest value); a list's its maxItems, a map's
    its maxProperties; a map's keys are `StringType`, whose MaxElements the API server leaves 0;
    a string literal's its length;
  - 1 per identifier, field selection, has(), size(), arithmetic, ordering and logical operator
    (&& and || cost both sides, ?: its condition and the dearer branch);
  - ==/!= on strings 1 + ceil(0.1 x the shorter), on objects and lists 1 + ceil(0.1 x the
    worst-case JSON size) (cel-go's traversal factor 0.1); `in` a list: per item one comparison;
  - contains/startsWith/endsWith ceil(0.1 x receiver) x ceil(0.1 x argument), matches
    ceil(0.1 x string) x ceil(0.25 x regex) (cel-go's RegexStringLengthCostFactor), plus 1;
  - all/exists/exists_one/map/filter: the range, then per element of its bound the body plus 1;
  - a rule's cost times its cardinality (the bounds of the lists and maps above it) is held
    under StaticEstimatedCostLimit (1e7) and their sum under StaticEstimatedCRDCostLimit (1e8),
    the limits the API server refuses a CRD beyond; each rule's own cost under PerCallLimit
    (1e6) and the sum of all under RuntimeCELCostBudget (1e7), the runtime limits
    (k8s.io/apiserver/pkg/apis/cel/config.go) that would halt a rule on a worst-case object.
  Not ported: cel-go's cost of list/map literals, string concatenation growth, optional types,
  the Kubernetes CEL libraries (quantity, url, ...: the CRD uses none), and the estimate for
  unbounded strings (the CRD has none: test_crd_cel checks every string is bounded).
Printer columns (validation.go, ValidateCustomResourceColumnDefinition): names unique, type and
format of the allowed sets, and each jsonPath resolves in the schema (or ObjectMeta) to a node of
a type the column can show.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from typing import Any

import celpy
import jsonschema
import pytest
from lark import Token, Tree

from distillery.crd import build_crd
from tests.support.cel import apply_defaults, to_cel

pytestmark = pytest.mark.unit

CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
ENV = celpy.Environment()

TYPES = {"string", "number", "integer", "boolean", "array", "object"}
FORBIDDEN = ("$ref", "definitions", "dependencies", "additionalItems", "patternProperties", "id", "$schema")
NOT_IN_VALUE_VALIDATION = (
    "type",
    "properties",
    "items",
    "additionalProperties",
    "default",
    "description",
    "nullable",
)

STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
PER_CALL_LIMIT = 1_000_000
RUNTIME_CEL_COST_BUDGET = 10_000_000
TRAVERSAL = 0.1
REGEX = 0.25


def walk(node: dict, path: tuple = ()):
    """(path, node) for every schema node; `[]` stands for items, `{}` for additionalProperties."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], (*path, "{}"))


# ---------------------------------------------------------------- structural schema


def structural_errors(schema: dict) -> list[str]:
    errors = []
    if schema.get("type") != "object":
        errors.append("root: type must be object")
    for path, node in walk(schema):
        where = ".".join(path) or "root"
        kind = node.get("type")
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if preserve is not None and preserve is not True:
            errors.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or undefined")
        if int_or_string and kind:
            errors.append(f"{where}: type must be empty with x-kubernetes-int-or-string")
        if not kind and not int_or_string and not preserve:
            errors.append(f"{where}: type must not be empty")
        if kind and kind not in TYPES:
            errors.append(f"{where}: type {kind!r} is not one of {sorted(TYPES)}")
        if "properties" in node and "additionalProperties" in node:
            errors.append(f"{where}: additionalProperties and properties are mutually exclusive")
        if node.get("additionalProperties") is False:
            errors.append(f"{where}: additionalProperties must not be false")
        if kind == "array" and not isinstance(node.get("items"), dict):
            errors.append(f"{where}: an array needs one items schema")
        if kind != "array" and "items" in node:
            errors.append(f"{where}: items on a non-array")
        errors += [f"{where}: {key} is forbidden" for key in FORBIDDEN if key in node]
        if node.get("uniqueItems") is True:
            errors.append(f"{where}: uniqueItems cannot be true (quadratic)")
        for combinator in ("anyOf", "allOf", "oneOf"):
            for branch in node.get(combinator, []):
                errors += [
                    f"{where}.{combinator}: must not specify {key}"
                    for key in NOT_IN_VALUE_VALIDATION
                    if key in branch
                ]
        if "not" in node:
            errors += [
                f"{where}.not: must not specify {key}"
                for key in NOT_IN_VALUE_VALIDATION
                if key in node["not"]
            ]
        if node.get("x-kubernetes-embedded-resource") and (
            kind != "object" or not ("properties" in node or preserve)
        ):
            errors.append(f"{where}: an embedded resource is an object with properties or preserved fields")
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            items = node.get("items", {})
            if not keys or items.get("type") != "object":
                errors.append(f"{where}: a map list needs x-kubernetes-list-map-keys and object items")
            for key in keys:
                prop = items.get("properties", {}).get(key, {})
                if prop.get("type") not in ("string", "integer", "number", "boolean"):
                    errors.append(f"{where}: map key {key} must be a scalar property")
                if key not in items.get("required", []) and "default" not in prop:
                    errors.append(f"{where}: map key {key} must be required or defaulted")
        elif "x-kubernetes-list-map-keys" in node:
            errors.append(f"{where}: x-kubernetes-list-map-keys needs x-kubernetes-list-type map")
        if "pattern" in node:
            try:
                re.compile(node["pattern"])
            except re.error as error:
                errors.append(f"{where}: pattern does not compile: {error}")
    root = schema.get("properties", {})
    metadata = root.get("metadata")
    if metadata is not None:
        extra = set(metadata) - {"type", "properties"}
        if metadata.get("type") != "object" or extra:
            errors.append(
                f"metadata: only type object (and name/generateName) may be given, not {sorted(extra)}"
            )
        for name, prop in metadata.get("properties", {}).items():
            if name not in ("name", "generateName") or prop.get("type") != "string":
                errors.append(f"metadata.{name}: only name and generateName, as strings")
            if "default" in prop:
                errors.append(f"metadata.{name}: no defaults under metadata")
    for name in ("apiVersion", "kind"):
        if name in root and root[name].get("type") != "string":
            errors.append(f"{name}: must be a string")
    return errors


def test_the_schema_is_structural():
    assert structural_errors(SCHEMA) == []


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        (("spec", "teacher", "gpus"), {"type": None}, "type must not be empty"),
        (("spec", "teacher", "tolerations"), {"items": [{"type": "object"}]}, "one items schema"),
        (
            ("spec", "teacher", "nodeSelector"),
            {"properties": {"a": {"type": "string"}}},
            "mutually exclusive",
        ),
        (("spec", "teacher"), {"additionalProperties": False}, "mutually exclusive"),
        (("spec", "generation", "shards"), {"x-kubernetes-int-or-string": True}, "type must be empty"),
        (("spec", "evaluation", "compare"), {"uniqueItems": True}, "uniqueItems"),
        (("spec",), {"x-kubernetes-preserve-unknown-fields": False}, "must be true"),
        (("metadata",), {"properties": {"labels": {"type": "object"}}}, "only name and generateName"),
        (("spec", "data", "train"), {"pattern": "(unclosed"}, "does not compile"),
        (("spec", "teacher"), {"anyOf": [{"type": "object"}]}, "must not specify type"),
    ],
)
def test_the_structural_check_refuses_what_the_api_server_refuses(path, change, expected):
    """Each rule above can fail: a copy of the schema broken one way is refused, naming the rule."""
    schema = copy.deepcopy(SCHEMA)
    node = schema
    for name in path:
        node = node["properties"][name]
    for key, value in change.items():
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    errors = structural_errors(schema)
    assert any(expected in e for e in errors), errors


# ---------------------------------------------------------------- defaults


def _unknown_fields(value: Any, schema: dict, where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        return [f"{where}.{k}" for k in value if k not in schema["properties"]] + [
            e
            for k, v in value.items()
            if k in schema["properties"]
            for e in _unknown_fields(v, schema["properties"][k], f"{where}.{k}")
        ]
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [
            e
            for k, v in value.items()
            for e in _unknown_fields(v, schema["additionalProperties"], f"{where}.{k}")
        ]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [e for i, v in enumerate(value) for e in _unknown_fields(v, schema["items"], f"{where}[{i}]")]
    if isinstance(value, dict) and "properties" not in schema and "additionalProperties" not in schema:
        return [f"{where}: an object where the schema has no fields"] if value else []
    return []


def _rules_under(node: dict) -> list[tuple[tuple, dict, dict]]:
    return [(path, sub, rule) for path, sub in walk(node) for rule in sub.get("x-kubernetes-validations", [])]


def _instances(value: Any, path: tuple) -> list[Any]:
    if not path:
        return [value]
    head, rest = path[0], path[1:]
    if head == "[]":
        return [m for item in (value or []) for m in _instances(item, rest)]
    if head == "{}":
        return [m for item in (value or {}).values() for m in _instances(item, rest)]
    return _instances(value[head], rest) if isinstance(value, dict) and head in value else []


def default_errors(schema: dict) -> list[str]:
    errors = []
    defaulted = [(path, node) for path, node in walk(schema) if "default" in node]
    assert defaulted, "the schema has defaults"
    for path, node in defaulted:
        where = ".".join(path)
        if path[:1] == ("metadata",):
            errors.append(f"{where}: no defaults under metadata")
        value = apply_defaults(copy.deepcopy(node["default"]), node)
        errors += [
            f"{where}: default: {e.message}" for e in jsonschema.Draft4Validator(node).iter_errors(value)
        ]
        errors += [f"{where}: default has unknown field {f}" for f in _unknown_fields(value, node, "default")]
        for rule_path, rule_node, rule in _rules_under(node):
            if "oldSelf" in rule["rule"]:
                continue  # transition rules are not run on defaults
            program = ENV.program(ENV.compile(rule["rule"]))
            for instance in _instances(value, rule_path):
                if not program.evaluate({"self": to_cel(instance, rule_node)}):
                    errors.append(f"{where}: default fails {rule['rule']!r}: {rule['message']}")
    return errors


def test_every_default_is_valid_under_its_own_schema():
    assert default_errors(SCHEMA) == []


def test_the_default_check_refuses_a_bad_default():
    schema = copy.deepcopy(SCHEMA)
    spec = schema["properties"]["spec"]["properties"]
    spec["generation"]["properties"]["shards"]["default"] = 0  # below its minimum of 1
    spec["teacher"]["properties"]["tolerations"]["default"] = [
        {"key": "k", "colour": "blue"}
    ]  # unknown field
    # Defaulted parallelism above the defaulted shards: the section's CEL rule fails on the default.
    spec["generation"]["default"] = {"parallelism": 5}
    errors = default_errors(schema)
    assert any("shards: default" in e and "minimum" in e for e in errors), errors
    assert any("unknown field default[0].colour" in e for e in errors), errors
    assert any("generation: default fails" in e for e in errors), errors


# ---------------------------------------------------------------- CEL: compiles, and what it costs


def _tree(node: Any) -> Any:
    """Skip the single-child layers of celpy's grammar (expr -> conditionalor -> ... -> primary)."""
    while (
        isinstance(node, Tree)
        and len(node.children) == 1
        and node.data
        in (
            "expr",
            "conditionalor",
            "conditionaland",
            "relation",
            "addition",
            "multiplication",
            "unary",
            "member",
            "primary",
            "paren_expr",
        )
    ):
        node = node.children[0]
    return node


def _size(schema: dict | None) -> int:
    """The size bound the API server gives a value of this schema node (see the module docstring)."""
    if schema is None:
        return 0
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "string" or schema.get("x-kubernetes-int-or-string"):
        return schema.get("maxLength", 0)
    if kind == "array":
        return schema["maxItems"]
    if kind == "object" and "additionalProperties" in schema:
        return schema["maxProperties"]
    return 0


def _json_bytes(schema: dict) -> int:
    """The largest JSON text of a value of this schema node (for the cost of comparing it)."""
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if kind == "string" or schema.get("x-kubernetes-int-or-string"):
        return schema["maxLength"] + 2
    if kind == "array":
        return schema["maxItems"] * (_json_bytes(schema["items"]) + 1) + 2
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        key = 317 + 3  # the longest key the map rules allow (size(k) <= 317), quoted, and a colon
        return schema["maxProperties"] * (key + _json_bytes(schema["additionalProperties"]) + 1) + 2
    if kind == "object":
        return sum(len(k) + 4 + _json_bytes(v) for k, v in schema.get("properties", {}).items()) + 2
    return 24


KEY = {"type": "string", "maxLength": 0}  # a map key: StringType, MaxElements never set


class Estimate:
    def __init__(self, cost: int, schema: dict | None = None, literal: int | None = None):
        self.cost, self.schema, self.literal = cost, schema, literal

    @property
    def size(self) -> int:
        return self.literal if self.literal is not None else _size(self.schema)


def _is_string(estimate: Estimate) -> bool:
    return estimate.literal is not None or (estimate.schema or {}).get("type") == "string"


def estimate(node: Any, scope: dict[str, dict]) -> Estimate:
    node = _tree(node)
    if isinstance(node, Token):
        return Estimate(0)
    kind = node.data
    children = node.children
    if kind == "literal":
        text = str(children[0])
        return Estimate(0, literal=len(text) - 2 if text[:1] in "'\"" else None)
    if kind == "ident":
        name = str(children[0])
        assert name in scope, f"unknown identifier {name}"
        return Estimate(1, scope[name])
    if kind == "expr":  # c ? a : b
        condition, a, b = (estimate(c, scope) for c in children)
        return Estimate(condition.cost + max(a.cost, b.cost), a.schema or b.schema)
    if kind in ("conditionalor", "conditionaland"):
        return Estimate(sum(estimate(c, scope).cost for c in children) + 1)
    if kind == "unary":
        return Estimate(estimate(children[-1], scope).cost + 1)
    if kind in ("relation", "addition", "multiplication"):
        operator, right = children
        left = estimate(operator.children[0], scope)
        right = estimate(right, scope)
        cost = left.cost + right.cost + 1
        if operator.data in ("relation_eq", "relation_ne"):
            if _is_string(left) and _is_string(right):
                cost += math.ceil(TRAVERSAL * min(left.size, right.size))
            elif (left.schema or {}).get("type") in ("object", "array"):
                cost += math.ceil(TRAVERSAL * _json_bytes(left.schema))
        elif operator.data == "relation_in":
            items = (right.schema or {}).get("items")
            cost += right.size * (1 + math.ceil(TRAVERSAL * _size(items)))
        return Estimate(cost)
    if kind == "member_dot":
        target, name = children
        base = estimate(target, scope)
        schema = base.schema or {}
        child = schema.get("properties", {}).get(str(name)) or (
            schema["additionalProperties"] if isinstance(schema.get("additionalProperties"), dict) else None
        )
        assert child is not None, f"no field {name}"
        return Estimate(base.cost + 1, child)
    if kind == "member_index":
        base, index = (estimate(c, scope) for c in children)
        schema = base.schema or {}
        return Estimate(base.cost + index.cost + 1, schema.get("items") or schema.get("additionalProperties"))
    if kind == "ident_arg":  # has(x), size(x), int(x), ...
        _function, *args = children
        args = [estimate(a, scope) for a in (args[0].children if args else [])]
        return Estimate(1 + sum(a.cost for a in args))
    if kind == "member_dot_arg":
        target, method, *rest = children
        args = rest[0].children if rest else []
        method = str(method)
        base = estimate(target, scope)
        if method in ("all", "exists", "exists_one", "map", "filter"):
            variable = str(_tree(args[0]).children[0])
            schema = base.schema or {}
            element = schema["items"] if schema.get("type") == "array" else KEY
            body = estimate(args[-1], {**scope, variable: element})
            return Estimate(base.cost + base.size * (body.cost + 1) + 1)
        arguments = [estimate(a, scope) for a in args]
        cost = base.cost + sum(a.cost for a in arguments) + 1
        if method in ("contains", "startsWith", "endsWith"):
            cost += math.ceil(TRAVERSAL * base.size) * math.ceil(TRAVERSAL * arguments[0].size)
        elif method == "matches":
            cost += math.ceil(TRAVERSAL * base.size) * math.ceil(REGEX * arguments[0].size)
        return Estimate(cost)
    if kind == "exprlist":
        return Estimate(sum(estimate(c, scope).cost for c in children))
    raise AssertionError(f"the cost estimate does not know {kind!r}: add it (see the module docstring)")


def _cardinality(path: tuple, schema: dict) -> int:
    """How many times a rule at `path` can run on one object: the bounds of the lists and maps above it."""
    count, node = 1, schema
    for step in path:
        if step == "[]":
            count *= node["maxItems"]
            node = node["items"]
        elif step == "{}":
            count *= node["maxProperties"]
            node = node["additionalProperties"]
        else:
            node = node["properties"][step]
    return count


def rule_costs(schema: dict) -> list[tuple[str, str, int, int]]:
    """(where, rule, estimated cost of one evaluation, times it can run on one object) for every rule."""
    costs = []
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            tree = ENV.compile(rule["rule"])  # raises where cel-python cannot compile it
            ENV.program(tree)
            cost = estimate(tree, {"self": node, "oldSelf": node}).cost
            costs.append((".".join(path), rule["rule"], cost, _cardinality(path, schema)))
    return costs


def test_every_rule_compiles_and_costs_less_than_the_api_servers_limits():
    costs = rule_costs(SCHEMA)
    assert len(costs) >= 20
    for where, rule, cost, times in costs:
        assert cost * times <= STATIC_ESTIMATED_COST_LIMIT, (where, rule, cost, times)
        assert cost <= PER_CALL_LIMIT, (where, rule, cost)
    assert sum(cost * times for *_, cost, times in costs) <= STATIC_ESTIMATED_CRD_COST_LIMIT
    assert sum(cost * times for *_, cost, times in costs) <= RUNTIME_CEL_COST_BUDGET


def test_the_cost_estimate_grows_with_the_bounds_it_is_given():
    """The estimate can fail: a regex over an unbounded-looking string or a wide list costs too much."""
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 3 * 2**20},
            "items": {"type": "array", "maxItems": 10_000, "items": {"type": "string", "maxLength": 10_000}},
        },
    }
    regex = "self.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z]([-a-z0-9]*[a-z0-9])?)*$')"
    every = "self.items.all(x, x.startsWith('abcdefghijklmnopqrstuvwxyz'))"
    cheap = "self.items.all(x, size(x) > 0)"
    assert estimate(ENV.compile(regex), {"self": node}).cost > PER_CALL_LIMIT
    assert estimate(ENV.compile(every), {"self": node}).cost > PER_CALL_LIMIT
    assert estimate(ENV.compile(cheap), {"self": node}).cost < PER_CALL_LIMIT
    # The whole-spec transition rule is the costliest of the CRD's: comparing every section.
    costs = {rule: cost for _, rule, cost, _ in rule_costs(SCHEMA)}
    transition = next(rule for rule in costs if "oldSelf" in rule)
    assert costs[transition] == max(costs.values())


# ---------------------------------------------------------------- printer columns

COLUMN_TYPES = {
    "integer": {"integer"},
    "number": {"number", "integer"},
    "string": {"string"},
    "boolean": {"boolean"},
    "date": {"string"},
}
COLUMN_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password", "name"}
# ObjectMeta's fields a column may show (metadata is not in the CRD's schema: the API server knows it).
OBJECT_META = {
    "name": {"type": "string"},
    "namespace": {"type": "string"},
    "generation": {"type": "integer"},
    "creationTimestamp": {"type": "string", "format": "date-time"},
    "deletionTimestamp": {"type": "string", "format": "date-time"},
    "uid": {"type": "string"},
}


def column_errors(version: dict) -> list[str]:
    errors = []
    columns = version.get("additionalPrinterColumns", [])
    names = [c["name"] for c in columns]
    errors += [f"{name}: duplicate column" for name in names if names.count(name) > 1]
    for column in columns:
        name, kind, path = column["name"], column["type"], column["jsonPath"]
        if kind not in COLUMN_TYPES:
            errors.append(f"{name}: type {kind!r}")
            continue
        if "format" in column and column["format"] not in COLUMN_FORMATS:
            errors.append(f"{name}: format {column['format']!r}")
        if not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", path):
            errors.append(f"{name}: jsonPath {path!r} is not a simple field path")
            continue
        steps = path.split(".")[1:]
        if steps[0] == "metadata":
            node = OBJECT_META.get(steps[1]) if len(steps) == 2 else None
        else:
            node = version["schema"]["openAPIV3Schema"]
            for step in steps:
                node = (node or {}).get("properties", {}).get(step)
        if node is None:
            errors.append(f"{name}: {path} names no field of the schema")
        elif node.get("type") not in COLUMN_TYPES[kind]:
            errors.append(f"{name}: {path} is {node.get('type')}, not shown as {kind}")
        elif kind == "date" and node.get("format") not in ("date-time", "date"):
            errors.append(f"{name}: {path} is not a date")
    return errors


def test_every_printer_column_resolves_to_a_field_of_its_type():
    assert VERSION["additionalPrinterColumns"]
    assert column_errors(VERSION) == []


def test_the_column_check_refuses_a_path_that_names_nothing_or_the_wrong_type():
    version = copy.deepcopy(VERSION)
    version["additionalPrinterColumns"] = [
        {"name": "Gone", "type": "string", "jsonPath": ".status.nothingHere"},
        {"name": "Phase", "type": "integer", "jsonPath": ".status.phase"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    ]
    errors = column_errors(version)
    assert any("Gone" in e and "names no field" in e for e in errors), errors
    assert any("not shown as integer" in e for e in errors), errors
    assert any("duplicate" in e for e in errors), errors


def test_the_walk_sees_every_node():
    paths = [path for path, _ in walk(SCHEMA)]
    assert ("spec", "teacher", "tolerations", "[]", "key") in paths
    assert ("spec", "teacher", "nodeSelector", "{}") in paths
    assert len(paths) == len(set(paths)) > 100
    assert all(isinstance(node, dict) for _, node in itertools.islice(walk(SCHEMA), 10))
