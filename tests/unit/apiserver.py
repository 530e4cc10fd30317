"""What the Kubernetes API server checks in the objects Distillery creates, ported for tests.

kubernetes-validate checks types and field names against the upstream OpenAPI schemas,
but not formats: those live in Go (k8s.io/apimachinery/pkg/util/validation,
pkg/api/resource, and k8s.io/kubernetes/pkg/apis/core/validation). This module
follows that Go code step by step, written independently of `distillery.api.kube_types`
(procedural, as the Go is, rather than with the models' patterns), so a test can
check the models against it; test_kube_types.py checks it against the good and bad
values of apimachinery's own unit tests.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_KEY_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_ENV_RE = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_RE.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    # Go: len <= 253 and the regexp label(\.label)*; split on dots is the same thing.
    return 0 < len(value) <= 253 and all(_LABEL_RE.fullmatch(part) for part in value.split("."))


def is_dns1035_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1035_RE.fullmatch(value))


def is_qualified_name(value: str) -> bool:
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix or not is_dns1123_subdomain(prefix):
            return False
    else:
        return False
    return 0 < len(name) <= 63 and bool(_KEY_NAME_RE.fullmatch(name))


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_KEY_NAME_RE.fullmatch(value)))


def is_config_map_key(value: str) -> bool:
    return (
        len(value) <= 253
        and bool(_CONFIG_KEY_RE.fullmatch(value))
        and value not in (".", "..")
        and not value.startswith("..")
    )


def is_env_var_name(value: str) -> bool:
    return bool(_ENV_RE.fullmatch(value))


# ---------------------------------------------------------------- resource.ParseQuantity

_DEC = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BIN = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse_quantity(text: str) -> Decimal:
    """resource.ParseQuantity: the value (rounded up to the nano), or ValueError as Go returns an error."""
    if text == "":
        raise ValueError("empty")
    pos, end, positive = 0, len(text), True
    if text[0] in "+-":
        positive = text[0] == "+"
        pos = 1
    start = pos
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    number = text[start:pos] or "0"
    fraction = ""
    if pos < end and text[pos] == ".":
        pos += 1
        fstart = pos
        while pos < end and text[pos] in "0123456789":
            pos += 1
        fraction = text[fstart:pos]
    suffix_start = pos
    while pos < end and text[pos] in "eEinumkKMGTP":
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in "0123456789":
        pos += 1
    if pos != end:
        raise ValueError("quantities must match the regular expression")
    suffix = text[suffix_start:]
    with localcontext() as context:
        context.prec, context.Emax, context.Emin = 200, 10**6, -(10**6)
        amount = Decimal(f"{number}.{fraction or '0'}")
        if suffix in _DEC:
            amount = amount.scaleb(_DEC[suffix])
        elif suffix in _BIN:
            amount = amount * 2 ** _BIN[suffix]
        elif suffix[:1] in ("e", "E") and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
            exponent = int(suffix[1:])
            if not -(2**63) <= exponent < 2**63:
                raise ValueError("unable to parse quantity's suffix")
            amount = amount.scaleb((exponent + 2**31) % 2**32 - 2**31)  # Go: int32(parsed)
        else:
            raise ValueError("unable to parse quantity's suffix")
        if amount.as_tuple().exponent < -9:
            amount = amount.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)
    return amount if positive else -amount


# ---------------------------------------------------------------- core/v1 validation of what we set

_STANDARD_CONTAINER = {"cpu", "memory", "ephemeral-storage"}


def _native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _extended(name: str) -> bool:
    return not _native(name) and not name.startswith("requests.") and is_qualified_name("requests." + name)


def _resource_name_errors(name: str) -> list[str]:
    if not is_qualified_name(name):
        return [f"{name}: not a qualified name"]
    if "/" not in name:
        if name not in _STANDARD_CONTAINER and not name.startswith("hugepages-"):
            return [f"{name}: must be a standard resource for containers"]
        if name.startswith("hugepages-"):
            try:
                if parse_quantity(name[len("hugepages-") :]) <= 0:
                    return [f"{name}: invalid page size"]
            except ValueError:
                return [f"{name}: invalid page size"]
    elif not _native(name) and not _extended(name):
        return [f"{name}: doesn't follow extended resource name standard"]
    return []


def _quantity(raw: Any, where: str, errors: list[str]) -> Decimal | None:
    try:
        return parse_quantity(str(raw))
    except ValueError:
        errors.append(f"{where}: {raw!r} is not a quantity")
        return None


def resource_errors(resources: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    values: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    for kind in ("limits", "requests"):
        for name, raw in resources.get(kind, {}).items():
            errors += _resource_name_errors(name)
            value = _quantity(raw, f"{kind}.{name}", errors)
            if value is None:
                continue
            values[kind][name] = value
            if value < 0:
                errors.append(f"{kind}.{name}: must be greater than or equal to 0")
            if _extended(name) and (value * 1000).to_integral_value(ROUND_CEILING) % 1000:
                errors.append(f"{kind}.{name}: must be an integer")
            page = name.startswith("hugepages-") and not _resource_name_errors(name)
            if page and value % parse_quantity(name[len("hugepages-") :]):
                errors.append(f"{kind}.{name}: must be a multiple of the page size")
    overcommit = lambda name: _native(name) and not name.startswith("hugepages-")  # noqa: E731
    for name, request in values["requests"].items():
        limit = values["limits"].get(name)
        if limit is None:
            if not overcommit(name):
                errors.append(f"limits.{name}: Limit must be set for non overcommitable resources")
        elif request != limit and not overcommit(name):
            errors.append(f"requests.{name}: must be equal to {name} limit")
        elif request > limit:
            errors.append(f"requests.{name}: must be less than or equal to {name} limit")
    return errors


def toleration_errors(toleration: dict[str, Any]) -> list[str]:
    errors = []
    key, operator, value = (
        toleration.get("key", ""),
        toleration.get("operator", ""),
        toleration.get("value", ""),
    )
    if key and not is_qualified_name(key):
        errors.append(f"key {key!r}: not a qualified name")
    if not key and operator != "Exists":
        errors.append("operator must be Exists when `key` is empty")
    if "tolerationSeconds" in toleration and toleration.get("effect") != "NoExecute":
        errors.append("effect must be 'NoExecute' when `tolerationSeconds` is set")
    if operator in ("Equal", "") and not is_label_value(value):
        errors.append(f"value {value!r}: not a label value")
    if operator == "Exists" and value:
        errors.append("value must be empty when `operator` is 'Exists'")
    if toleration.get("effect", "NoSchedule") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        errors.append("unknown effect")
    return errors


def _labels_errors(labels: dict[str, str], where: str) -> list[str]:
    return [f"{where}: key {k!r}" for k in labels if not is_qualified_name(k)] + [
        f"{where}: value {v!r}" for v in labels.values() if not is_label_value(v)
    ]


def pod_spec_errors(pod: dict[str, Any]) -> list[str]:
    errors = _labels_errors(pod.get("nodeSelector", {}), "nodeSelector")
    for toleration in pod.get("tolerations", []):
        errors += toleration_errors(toleration)
    volumes = {v["name"] for v in pod["volumes"]}
    for volume in pod["volumes"]:
        claim = volume.get("persistentVolumeClaim")
        if claim is not None and not is_dns1123_subdomain(claim["claimName"]):
            errors.append(f"claimName {claim['claimName']!r}")
    for container in pod["containers"]:
        if not is_dns1123_label(container["name"]):
            errors.append(f"container name {container['name']!r}")
        image = container.get("image", "")
        if not image or image != image.strip():
            errors.append(f"image {image!r}")
        for env in container.get("env", []):
            if not is_env_var_name(env["name"]):
                errors.append(f"env name {env['name']!r}")
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and not (is_dns1123_subdomain(ref["name"]) and is_config_map_key(ref["key"])):
                errors.append(f"secretKeyRef {ref}")
        errors += resource_errors(container.get("resources", {}))
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        if len(set(paths)) != len(paths) or not all(paths):
            errors.append(f"mountPath must be unique and set: {paths}")
        errors += [
            f"volumeMount of unknown volume {m['name']}"
            for m in container.get("volumeMounts", [])
            if m["name"] not in volumes
        ]
    return errors


def object_errors(manifest: dict[str, Any]) -> list[str]:
    """The API server's refusals for one object Distillery builds (empty when it would be created)."""
    kind, meta = manifest["kind"], manifest["metadata"]
    name_ok = is_dns1035_label if kind == "Service" else is_dns1123_subdomain
    errors = [] if name_ok(meta["name"]) else [f"metadata.name {meta['name']!r}"]
    errors += _labels_errors(meta.get("labels", {}), "metadata.labels")
    spec = manifest["spec"]
    if kind == "Job":
        # The Job controller labels pods with the Job's name; Indexed pods' hostnames add -<index>.
        if not is_label_value(meta["name"]):
            errors.append("a Job name must be a label value")
        if spec.get("completionMode") == "Indexed" and not is_dns1123_label(
            f"{meta['name']}-{spec['completions'] - 1}"
        ):
            errors.append("Indexed Job hostname too long")
    if kind in ("Job", "Deployment", "StatefulSet"):
        template = spec["template"]
        errors += _labels_errors(template["metadata"].get("labels", {}), "template labels")
        errors += pod_spec_errors(template["spec"])
    if kind in ("Deployment", "StatefulSet"):
        selector = spec["selector"]["matchLabels"]
        if any(template["metadata"]["labels"].get(k) != v for k, v in selector.items()):
            errors.append("selector does not match template labels")
    if kind == "PersistentVolumeClaim":
        storage = spec["resources"]["requests"]["storage"]
        amount = _quantity(storage, "storage", errors)
        if amount is not None and amount <= 0:
            errors.append("storage must be greater than zero")
        if "storageClassName" in spec and not is_dns1123_subdomain(spec["storageClassName"]):
            errors.append("storageClassName")
        if "ReadWriteOncePod" in spec["accessModes"] and len(spec["accessModes"]) > 1:
            errors.append("ReadWriteOncePod may not be used with other access modes")
    return errors
