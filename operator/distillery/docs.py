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
    if "maxLength" in target:
        parts.append(f"length <= {target['maxLength']}")
    if "maxItems" in node or "maxProperties" in node:
        parts.append(f"at most {node.get('maxItems', node.get('maxProperties'))} item(s)")
    if "pattern" in target:
        # The Kubernetes formats are said in words (the pattern itself is in the CRD).
        expected = expected_text(target)
        parts.append(expected if expected else f"matches `{target['pattern']}`")
    if node.get("type") == "object" and "additionalProperties" in node:
        parts.extend(rule["message"] for rule in node.get("x-kubernetes-validations", []))
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
