"""Generate `docs/api.md` (the API reference) from the same schema as the CRD."""

from __future__ import annotations

import json
from typing import Any

from distillery import api
from distillery.api.kube_types import expected_text
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


def _scalar(node: dict[str, Any]) -> list[str]:
    """What one value must be: its enum, bounds, lengths and format, as the schema (the validator's) says."""
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        parts.append((">" if node.get("exclusiveMinimum") else ">=") + f" {node['minimum']}")
    if "maximum" in node:
        parts.append(("<" if node.get("exclusiveMaximum") else "<=") + f" {node['maximum']}")
    if "minLength" in node:
        parts.append(f"length >= {node['minLength']}")
    if "maxLength" in node:
        parts.append(f"length <= {node['maxLength']}")
    if "pattern" in node:
        # The Kubernetes formats are said in the words of their error message (the pattern is in the CRD).
        parts.append(expected_text(node) or f"matches `{node['pattern']}`")
    return parts


def _constraints(node: dict[str, Any]) -> str:
    """A row's allowed values; a list's or map's own limits first, then what each element must be."""
    if node.get("type") == "array":
        parts = [
            f"{word} {node[key]} items"
            for key, word in (("minItems", "at least"), ("maxItems", "at most"))
            if key in node
        ]
        inner = _scalar(node.get("items", {}))
        return "; ".join(parts + ([f"each item: {'; '.join(inner)}"] if inner else []))
    if node.get("type") == "object" and "additionalProperties" in node:
        parts = [f"at most {node['maxProperties']} entries"] if "maxProperties" in node else []
        parts += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
        inner = _scalar(node["additionalProperties"])
        return "; ".join(parts + ([f"each value: {'; '.join(inner)}"] if inner else []))
    return "; ".join(_scalar(node))


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
    rules = [r for r in node.get("x-kubernetes-validations", []) if "fieldPath" in r]
    if rules:
        out.append("\nRules across fields (the CRD refuses these at apply; `distillery validate` too):\n")
        out.extend(f"- `{r['fieldPath'][1:]}`: {r['message']}" for r in rules)
    for child_path, child in children:
        _sections(child_path, child, out)


def render_api_docs() -> str:
    out = [
        "<!-- Generated from operator/distillery/api/ by `distillery docs`; do not edit. -->",
        "# DistillationJob API reference",
        "",
        f"`apiVersion: {api.API_VERSION}`, `kind: {api.KIND}`, short name `{api.SHORT_NAMES[0]}`.",
        "Every field below is checked when the job is applied (by the CRD schema: types, ranges,",
        "patterns, and the rules across fields listed under each section, as CEL) and again by",
        "`distillery validate`, `distillery run` and the operator. Those also check what CEL cannot:",
        "resource quantities compared (requests <= limits; extended resources such as",
        "`nvidia.com/gpu` whole, with requests equal to limits and to `gpus`) and the exact length",
        "of each part of a label key. A sub-object left out takes all its defaults.",
        "Once created, the spec is immutable except `suspend` and `ttlSecondsAfterFinished`.",
    ]
    spec = openapi_schema(api.DistillationJobSpec)
    _sections("spec", spec, out)
    out += ["", "Everything under `status` is written by the operator only."]
    _sections("status", openapi_schema(api.DistillationJobStatus), out)
    return "\n".join(out) + "\n"
