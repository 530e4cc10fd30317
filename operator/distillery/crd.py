"""Generate the DistillationJob CRD from the pydantic models in `distillery.api`.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0
schema: no `$ref`, no `anyOf` of types, every node typed, `nullable` instead of a
`null` type, boolean `exclusiveMinimum`, no `propertyNames` (a map's key format
becomes a CEL rule). This module does that translation and nothing else, so the
models stay the one source of truth: their rules (`Model.RULES`) arrive in the JSON
Schema as `x-kubernetes-validations` already, and the spec gets the transition rule
that keeps it immutable (`api.SPEC_TRANSITION_RULE`).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from distillery import api
from distillery.api.kube_types import EXPECTED

_DROP = {"title", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)  # a field's own description/default wins over the class's
        return _resolve(target, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}


def _structural(node: Any) -> Any:
    """Rewrite one (already $ref-free) JSON Schema node into Kubernetes' dialect."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "patternProperties" in node:  # pydantic's form of a map whose keys have a pattern
        ((pattern, values),) = node.pop("patternProperties").items()
        node["additionalProperties"] = values
        limit = node.pop("propertyNames", {})["maxLength"]
        node["x-kubernetes-validations"] = [
            *node.get("x-kubernetes-validations", []),
            _key_rule(pattern, limit),
        ]

    if "anyOf" in node:
        members = [m for m in node.pop("anyOf") if m.get("type") != "null"]
        types = sorted({m.get("type") for m in members})
        if types == ["integer", "string"]:
            node["x-kubernetes-int-or-string"] = True
        elif len(members) == 1:
            merged = dict(members[0])
            merged.update(node)  # outer description/default stay
            node = merged
        else:
            raise ValueError(f"cannot express anyOf {members} in a structural schema")
        if node.get("default", 0) is None:
            del node["default"]

    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        inner.update(node)
        node = inner

    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("default", 0) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas forbid it; the API server prunes unknown fields
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"

    ordered = {k: node[k] for k in ("type", "description") if k in node}
    ordered.update(node)
    return {k: _structural(v) for k, v in ordered.items()}


def _key_rule(pattern: str, limit: int) -> dict[str, str]:
    """A map's key format as the CEL rule a structural schema allows (it has no `propertyNames`)."""
    quoted = pattern.replace("\\", "\\\\").replace("'", "\\'")
    return {
        "rule": f"self.all(k, size(k) <= {limit} && k.matches('{quoted}'))",
        "message": f"expected every key to be {EXPECTED[pattern, limit]}",
    }


def openapi_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(_resolve(raw, raw.get("$defs", {})))


def _job_schema() -> dict[str, Any]:
    spec = openapi_schema(api.DistillationJobSpec)
    spec["x-kubernetes-validations"] = [
        *spec.get("x-kubernetes-validations", []),
        api.SPEC_TRANSITION_RULE.crd(),
    ]
    status = openapi_schema(api.DistillationJobStatus)
    # kopf writes its own bookkeeping (handler progress) under status; keep it.
    status["x-kubernetes-preserve-unknown-fields"] = True
    spec["description"] = "What to distil, from which teacher into which student, and how."
    status["description"] = "What the operator observed; written by the operator only."
    return {
        "type": "object",
        "description": "A DistillationJob turns a large teacher LLM into a small, fast student.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the job is."},
    {
        "name": "Progress",
        "type": "string",
        "jsonPath": ".status.progress.summary",
        "description": "The current stage: percent, what it has done and its ETA.",
    },
    {
        "name": "Teacher",
        "type": "string",
        "jsonPath": ".status.teacher.summary",
        "description": "Ready/total teacher pods while the served teacher runs (empty once it is released).",
    },
    {
        "name": "Retention",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.evaluation.retention",
        "description": "Student score / teacher score.",
    },
    {
        "name": "GPU-h",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.cost.gpuHours",
        "description": "GPU-hours used so far (the teacher's and every stage's).",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        # Long: shown by `kubectl get -o wide`, as Pods show their node and IP.
        "name": "Message",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.message",
        "description": "The latest thing a person should know.",
    },
]


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "distillery", "app.kubernetes.io/part-of": "distillery"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": _job_schema()},
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated from operator/distillery/api/ by `distillery crd`; do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
