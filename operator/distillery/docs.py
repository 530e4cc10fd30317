"""Generate `docs/api.md` (the API reference) from the same schema as the CRD."""

from __future__ import annotations

import json
from typing import Any

from distillery import api
from distillery.crd import openapi_schema


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    target = node.get("items", node) if node.get("type") == "array" else node
    if "enum" in target:
        parts.append("one of " + ", ".join(f"`{v}`" for v in target["enum"]))
    if "minimum" in node:
        parts.append(("> " if node.get("exclusiveMinimum") else ">= ") + str(node["minimum"]))
    if "maximum" in node:
        parts.append(("< " if node.get("exclusiveMaximum") else "<= ") + str(node["maximum"]))
    if "minLength" in node:
        parts.append(f"length >= {node['minLength']}")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return "; ".join(parts)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'])}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(path: str, node: dict[str, Any], out: list[str]) -> None:
    props = node.get("properties", {})
    required = set(node.get("required", []))
    rows = []
    children = []
    for name, child in props.items():
        target = child.get("items", child) if child.get("type") == "array" else child
        is_object = target.get("type") == "object" and "properties" in target
        label = f"[`{name}`](#{(path + '.' + name).replace('.', '').lower()})" if is_object else f"`{name}`"
        rows.append(
            f"| {label}{' (required)' if name in required else ''} | {_type(child)} | {_default(child)} "
            f"| {_cell(_constraints(child))} | {_cell(child.get('description', ''))} |"
        )
        if is_object:
            children.append((f"{path}.{name}", target))
    out.append(f"\n### {path}\n")
    if node.get("description"):
        out.append(node["description"] + "\n")
    out.append("| field | type | default | allowed | description |")
    out.append("| --- | --- | --- | --- | --- |")
    out.extend(rows)
    for child_path, child in children:
        _sections(child_path, child, out)


def render_api_docs() -> str:
    out = [
        "<!-- Generated from operator/distillery/api.py by `distillery docs`; do not edit. -->",
        "# DistillationJob API reference",
        "",
        f"`apiVersion: {api.API_VERSION}`, `kind: {api.KIND}`, short name `{api.SHORT_NAMES[0]}`.",
        "Every field below is checked when the job is applied (by the CRD schema) and again by",
        "`distillery validate` and the operator, which also check the rules that span fields",
        "(for example: exactly one of `teacher.model` and `teacher.endpoint`; `training.method: kd`",
        "needs `generation.topLogprobs` >= 1). A sub-object left out takes all its defaults.",
    ]
    spec = openapi_schema(api.DistillationJobSpec)
    _sections("spec", spec, out)
    out += ["", "Everything under `status` is written by the operator only."]
    _sections("status", openapi_schema(api.DistillationJobStatus), out)
    return "\n".join(out) + "\n"
