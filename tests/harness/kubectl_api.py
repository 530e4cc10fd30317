"""What a real kubectl asks of the emulated API server beyond kmock's storage, served from real sources.

kmock's emulator stores, lists and watches objects; `kubectl` 1.32 needs more, and the emulator
(tests/harness/emulator.py) answers it with what is here:

- discovery with the names a person types: singular names, short names (`dj`, `po`, `pvc`),
  categories, the core group's `groupVersion: v1` (kmock writes `/v1`, and kubectl then knows no
  core resource), and the `pods/log` subresource. The DistillationJob's names come from our CRD
  (crds/); the built-in ones from Kubernetes' own registry (`ShortNames()` and `Categories()` in
  pkg/registry/<group>/<resource>/storage/storage.go of kubernetes/kubernetes), listed in NAMES;
- OpenAPI v3 (`/openapi/v3` and one document per group-version): the upstream schemas that
  kubernetes-validate ships (the 1.32 definitions) and our CRD's `openAPIV3Schema`, each with its
  `x-kubernetes-group-version-kind`, and a PATCH operation per kind that takes `fieldValidation`.
  That parameter is how kubectl (cli-runtime's query_param_verifier_v3.go) decides to leave
  validation to the server: `kubectl apply` then sends `fieldValidation=Strict`, and the emulator
  checks a DistillationJob against the CRD's schema (`validate`); other kinds are not checked;
- the Table form (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) for `kubectl get`, in
  lists, single objects and watches: a DistillationJob's columns are the CRD's
  `additionalPrinterColumns` (dates shown as ages, as the API server's CRD table convertor does);
  Pods show READY, STATUS, RESTARTS and AGE; every other kind NAME and AGE;
- label and field selectors (`-l`, `kubectl wait`, `kubectl describe`'s Events, `kubectl delete`'s
  wait), on lists and watches: equality (`=`, `==`, `!=`), existence (`k`, `!k`) and `in`/`notin`.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "distillationjobs.distillery.dev.yaml"
KUBERNETES_SCHEMAS = "v1.32.0-local-strict"  # kubectl 1.32 is what the tests run

# Built-in resources: plural -> (singular, short names, categories), from Kubernetes' registry.
NAMES: dict[str, tuple[str, list[str], list[str]]] = {
    "pods": ("pod", ["po"], ["all"]),
    "services": ("service", ["svc"], ["all"]),
    "deployments": ("deployment", ["deploy"], ["all"]),
    "jobs": ("job", [], ["all"]),
    "persistentvolumeclaims": ("persistentvolumeclaim", ["pvc"], []),
    "configmaps": ("configmap", ["cm"], []),
    "secrets": ("secret", [], []),
    "events": ("event", ["ev"], []),
    "namespaces": ("namespace", ["ns"], []),
    "networkpolicies": ("networkpolicy", ["netpol"], []),
    "leases": ("lease", [], []),
    "customresourcedefinitions": ("customresourcedefinition", ["crd", "crds"], ["api-extensions"]),
    "serviceaccounts": ("serviceaccount", ["sa"], []),
    "roles": ("role", [], []),
    "rolebindings": ("rolebinding", [], []),
    "clusterroles": ("clusterrole", [], []),
    "clusterrolebindings": ("clusterrolebinding", [], []),
}
TABLE = {"kind": "Table", "apiVersion": "meta.k8s.io/v1"}


@functools.cache
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def names(plural: str) -> tuple[str, list[str], list[str]]:
    """(singular, short names, categories) of a resource."""
    spec = crd()["spec"]
    if plural == spec["names"]["plural"]:
        n = spec["names"]
        return n["singular"], list(n.get("shortNames") or []), list(n.get("categories") or [])
    return NAMES.get(plural, (plural.rstrip("s"), [], []))


# ------------------------------------------------------------------ OpenAPI v3


@functools.cache
def upstream_definitions() -> dict[str, Any]:
    import kubernetes_validate

    path = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / KUBERNETES_SCHEMAS
    return json.loads((path / "_definitions.json").read_text())["$defs"]


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        out = {value["$ref"].rsplit("/", 1)[-1]} if isinstance(value.get("$ref"), str) else set()
        for item in value.values():
            out |= _refs(item)
        return out
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()


def openapi_root(group_versions: list[str]) -> dict[str, Any]:
    """`/openapi/v3`: where each group-version's document is."""
    paths = {}
    for gv in group_versions:
        path = "api/v1" if gv == "v1" else f"apis/{gv}"
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash=distillery-emulator"}
    return {"paths": paths}


def openapi_document(group: str, version: str, kinds: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """`/openapi/v3/apis/<group>/<version>`: the kinds' schemas and a PATCH operation each.

    `kinds` are (plural, kind, namespaced). The schemas are the upstream definitions (with what
    they refer to) or, for our group, the CRD's openAPIV3Schema.
    """
    definitions = upstream_definitions()
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    prefix = "/api/v1" if not group else f"/apis/{group}/{version}"
    for plural, kind, namespaced in kinds:
        gvk = {"group": group, "version": version, "kind": kind}
        if group == crd()["spec"]["group"]:
            (served,) = [v for v in crd()["spec"]["versions"] if v["name"] == version]
            name = f"{'.'.join(reversed(group.split('.')))}.{version}.{kind}"
            schemas[name] = {**served["schema"]["openAPIV3Schema"], "x-kubernetes-group-version-kind": [gvk]}
        else:
            wanted = [
                name
                for name, schema in definitions.items()
                if gvk in (schema.get("x-kubernetes-group-version-kind") or [])
            ]
            while wanted:
                name = wanted.pop()
                if name in schemas or name not in definitions:
                    continue
                schemas[name] = definitions[name]
                wanted.extend(_refs(definitions[name]))
        where = (
            f"{prefix}/namespaces/{{namespace}}/{plural}/{{name}}"
            if namespaced
            else f"{prefix}/{plural}/{{name}}"
        )
        paths[where] = {
            "patch": {
                "operationId": f"patch{kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    text = json.dumps({"components": {"schemas": schemas}}).replace('"#/$defs/', '"#/components/schemas/')
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        **json.loads(text),
    }


def validate(obj: dict[str, Any]) -> list[str]:
    """A DistillationJob checked against the CRD's schema (types, enums, required fields, ranges)."""
    import jsonschema

    version = str(obj.get("apiVersion", "")).rpartition("/")[2]
    served = [v for v in crd()["spec"]["versions"] if v["name"] == version]
    if not served:
        return [f"apiVersion {obj.get('apiVersion')!r} is not served"]
    schema = served[0]["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    # OpenAPI 3.0's schemas are draft 4's (a boolean exclusiveMinimum).
    errors = jsonschema.Draft4Validator(schema).iter_errors(body)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


# ------------------------------------------------------------------ selectors

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector: str) -> list[str]:
    """Requirements separated by commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def matches(values: dict[str, Any], selector: str | None) -> bool:
    """Whether `values` (labels, or field paths to values) meet a label or field selector."""
    for requirement in _split(selector or ""):
        found = _SET.match(requirement)
        if found:
            key, op, listed = found.groups()
            options = {v.strip() for v in listed.split(",")}
            if (key in values and str(values[key]) in options) != (op == "in"):
                return False
        elif "!=" in requirement:
            key, _, value = requirement.partition("!=")
            if str(values.get(key.strip())) == value.strip():
                return False
        elif "=" in requirement:
            key, _, value = requirement.replace("==", "=").partition("=")
            if key.strip() not in values or str(values[key.strip()]) != value.strip():
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in values:
                return False
        elif requirement not in values:
            return False
    return True


def fields(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's values by field path, for field selectors (metadata.name, involvedObject.uid, ...)."""
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else key)
        elif not isinstance(value, list):
            out[prefix] = value

    walk({k: v for k, v in obj.items() if k in ("metadata", "involvedObject", "status", "spec")}, "")
    return out


def selected(obj: dict[str, Any], params: Any) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return matches(labels, params.get("labelSelector")) and matches(fields(obj), params.get("fieldSelector"))


# ------------------------------------------------------------------ tables


def wants_table(headers: Any) -> bool:
    return "as=Table" in (headers.get("Accept") or headers.get("accept") or "")


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """An age as kubectl and the API server print it (apimachinery's duration.HumanDuration)."""
    if not timestamp:
        return "<unknown>"
    when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.timezone.utc)) - when).total_seconds())
    seconds = max(seconds, 0)
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _json_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _columns(plural: str) -> list[dict[str, Any]]:
    name = {"name": "Name", "type": "string", "format": "name", "priority": 0, "description": "Name"}
    spec = crd()["spec"]
    if plural == spec["names"]["plural"]:
        printer = spec["versions"][0].get("additionalPrinterColumns") or []
        return [name] + [
            {
                "name": c["name"],
                "type": c["type"],
                "format": c.get("format", ""),
                "priority": c.get("priority", 0),
                "description": c.get("description", ""),
                "jsonPath": c["jsonPath"],
            }
            for c in printer
        ]
    if plural == "pods":
        return [
            name,
            {"name": "Ready", "type": "string", "format": "", "priority": 0, "description": ""},
            {"name": "Status", "type": "string", "format": "", "priority": 0, "description": ""},
            {"name": "Restarts", "type": "string", "format": "", "priority": 0, "description": ""},
            {"name": "Age", "type": "string", "format": "", "priority": 0, "description": ""},
        ]
    return [name, {"name": "Age", "type": "string", "format": "", "priority": 0, "description": ""}]


def _cells(plural: str, obj: dict[str, Any], columns: list[dict[str, Any]]) -> list[Any]:
    meta = obj.get("metadata") or {}
    if plural == "pods":
        statuses = (obj.get("status") or {}).get("containerStatuses") or []
        containers = (obj.get("spec") or {}).get("containers") or []
        ready = sum(1 for s in statuses if s.get("ready"))
        reason = (obj.get("status") or {}).get("phase") or "Pending"
        if meta.get("deletionTimestamp"):
            reason = "Terminating"
        restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
        return [
            meta.get("name"),
            f"{ready}/{len(containers)}",
            reason,
            restarts,
            age(meta.get("creationTimestamp")),
        ]
    cells: list[Any] = [meta.get("name")]
    for column in columns[1:]:
        if "jsonPath" not in column:
            cells.append(age(meta.get("creationTimestamp")))
            continue
        value = _json_path(obj, column["jsonPath"])
        cells.append(age(value) if column["type"] == "date" and value else value)
    return cells


def table(plural: str, objects: list[dict[str, Any]], resource_version: str = "") -> dict[str, Any]:
    """The objects as the API server's Table (meta.k8s.io/v1), each row with its object's metadata."""
    columns = _columns(plural)
    rows = [
        {
            "cells": _cells(plural, obj, columns),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {},
            },
        }
        for obj in objects
    ]
    definitions = [{k: v for k, v in c.items() if k != "jsonPath"} for c in columns]
    return {
        **TABLE,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
