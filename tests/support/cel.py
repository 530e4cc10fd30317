"""The API server's view of a custom resource for CEL: structural defaulting, and a JSON value as CEL
sees it under its schema (used by the CRD tests in tests/unit)."""

from __future__ import annotations

import copy
from typing import Any

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
