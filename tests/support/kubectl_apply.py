"""What `kubectl apply` (strict field validation, its default since Kubernetes 1.27) and the API server
refuse in a custom resource of the generated CRD, ported for tests; no control plane can run here
(docs: ../shared/DESIGN.md, "Facts about this environment").

Written from the other side's rules, independently of `distillery.documents` and the models:
- kubectl's reading of YAML: sigs.k8s.io/yaml's YAMLToJSON over go-yaml v2 (resolve.go): its plain
  scalar table (YAML 1.1 booleans with y/n, Go's ParseInt with base prefixes, its float regexp,
  timestamps left strings), JSON's encoding of a whole float64 as an integer, and a key given twice
  refused (strict field validation's "duplicate field");
- the object: apiVersion and kind present and served by the CRD, metadata.name present (apply has no
  generateName) and a DNS-1123 subdomain (apimachinery's ValidateObjectMeta for custom resources);
- strict field validation: a field the structural schema does not declare is an error, not pruned;
- the structural schema's types and bounds (jsonschema, OpenAPI 3.0 = draft 4), plus the type of
  x-kubernetes-int-or-string nodes, which JSON Schema cannot say;
- the CRD's x-kubernetes-validations after defaulting (tests/support/cel.py, cel-python).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema
import yaml

from tests.support.cel import cel_problems
from tests.unit import apiserver

_NULL = {"~", "null", "Null", "NULL", ""}
_TRUE = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"}
_FALSE = {"n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"}
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[0-9]+)")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


class Refused(Exception):
    """kubectl refuses the file before sending anything."""


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.style:  # quoted or a block scalar: always a string
        return node.value
    text = node.value
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text.lower()]
    plain = text.replace("_", "")
    if _GO_INT.fullmatch(plain):
        sign = -1 if plain.startswith("-") else 1
        digits = plain.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1] in "0123456789":
            digits = "0o" + digits[1:]  # Go's ParseInt(s, 0, 64): a leading 0 is octal
        return sign * int(digits, 0)
    if _GO_FLOAT.fullmatch(text):
        value = float(text)
        # YAMLToJSON encodes float64 with Go's json: a whole value below 1e21 has no fraction.
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    return text


def _convert(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item) for item in node.value]
    out: dict[str, Any] = {}
    merged: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and not key_node.style:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                merged = {**_convert(source), **merged}
            continue
        key = _convert(key_node)
        key = json.dumps(key) if isinstance(key, bool) else str(key)  # JSON keys are strings
        if key in lines:
            raise Refused(
                f'line {key_node.start_mark.line + 1}: duplicate field "{key}" (first at line {lines[key]})'
            )
        lines[key] = key_node.start_mark.line + 1
        out[key] = _convert(value_node)
    return {**merged, **out}


def yaml_to_json(text: str) -> list[Any]:
    """Every document of a YAML file as the JSON kubectl sends (empty documents left out)."""
    try:
        return [_convert(node) for node in yaml.compose_all(text) if node is not None]
    except yaml.YAMLError as error:
        raise Refused(f"error parsing YAML: {error}") from None


def object_problems(document: dict, crd: dict) -> list[str]:
    """What is refused before the CRD's schema is looked at: the kind and version, the name."""
    kind = crd["spec"]["names"]["kind"]
    api_versions = [f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")]
    problems = []
    if not document.get("kind") or not document.get("apiVersion"):
        problems.append("Object 'Kind' is missing or apiVersion is not set")
    elif document["apiVersion"] not in api_versions or document["kind"] != kind:
        problems.append(f'no matches for kind "{document["kind"]}" in version "{document["apiVersion"]}"')
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name")
    if not name:
        problems.append("metadata.name: Required value: name is required")
    elif not isinstance(name, str) or not apiserver.is_dns1123_subdomain(name):
        problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    namespace = metadata.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and apiserver.is_dns1123_label(namespace)):
        problems.append(f"metadata.namespace: Invalid value: {namespace!r}")
    return problems


def unknown_fields(value: Any, schema: dict, where: str) -> list[str]:
    """Strict field validation: every field the structural schema does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f'unknown field "{where}.{key}"' if where else f'unknown field "{key}"')
            else:
                found += unknown_fields(item, schema["properties"][key], f"{where}.{key}" if where else key)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{where}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{where}[{index}]")
    return found


def int_or_string_errors(value: Any, schema: dict, where: str) -> list[str]:
    """A node marked x-kubernetes-int-or-string holds an integer or a string (JSON Schema has no such type)."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{where}: Invalid value: {value!r}: must be an integer or a string"]
    found = []
    if isinstance(value, dict):
        children = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = children.get(key) or (extra if isinstance(extra, dict) else None)
            if child is not None:
                found += int_or_string_errors(item, child, f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += int_or_string_errors(item, schema["items"], f"{where}[{index}]")
    return found


def refusals(text: str, crd: dict) -> list[str]:
    """Why `kubectl apply -f` of this YAML text fails (an empty list: the API server admits it)."""
    try:
        documents = yaml_to_json(text)
    except Refused as error:
        return [str(error)]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)
    found = []
    for document in documents:
        if not isinstance(document, dict):
            found.append("error: unable to decode: not an object")
            continue
        problems = object_problems(document, crd)
        if not problems:  # otherwise the request is not even routed to the CRD's schema
            problems += unknown_fields({k: v for k, v in document.items() if k != "metadata"}, schema, "")
            problems += int_or_string_errors(document, schema, "")
            problems += [
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)
            ]
        if not problems and isinstance(document.get("spec"), dict):  # CEL runs on a schema-valid object
            problems += [f"{path}: {message}" for path, message in sorted(cel_problems(document, schema))]
        found += problems
    return found
