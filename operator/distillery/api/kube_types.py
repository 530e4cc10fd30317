"""Kubernetes value types of the spec: each refuses what the API server would refuse in a child.

Every spec value that ends up in a child object (a Secret name, a claim name, a
label, a node-selector key, a resource quantity, an image) has one of these types.
The rules are Kubernetes' own (k8s.io/apimachinery `IsDNS1123Subdomain`,
`IsQualifiedName`, `IsValidLabelValue`, `IsConfigMapKey`, `ParseQuantity`; core/v1's
container-resource and toleration validation). Patterns use only what RE2 (the API
server, CEL), Rust's regex (pydantic) and Python's `re` all read the same way, so the
CRD carries the very patterns the models check. Below them: the objects of the spec that
become parts of a pod spec (Secret references, tolerations, resources, a stage's placement).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from distillery.api.base import Model, Problem, Rule

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"  # a label key's name part: 63 at most
_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_NONZERO = r"(0*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"  # a digit other than 0 somewhere
_SUFFIX = r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,3})?"

DNS_SUBDOMAIN = rf"^{_SUBDOMAIN}$"
DNS_LABEL = rf"^{_LABEL}$"
QUALIFIED_NAME = rf"^({_SUBDOMAIN}/)?{_NAME}$"
LABEL_VALUE = rf"^({_NAME})?$"
SECRET_KEY = r"^(\.[-_a-zA-Z0-9][-._a-zA-Z0-9]*|[-_a-zA-Z0-9][-._a-zA-Z0-9]*)$"
QUANTITY = rf"^\+?{_NUMBER}{_SUFFIX}$"
POSITIVE_QUANTITY = rf"^\+?{_NONZERO}{_SUFFIX}$"
RESOURCE_NAME = rf"^(cpu|memory|ephemeral-storage|hugepages-{_NONZERO}{_SUFFIX}|{_SUBDOMAIN}/{_NAME})$"
# A container image reference as the kubelet parses it (distribution/reference, which the kubelet
# calls; a reference it cannot parse leaves the pod in InvalidImageName): [host[:port]/]path[:tag][@digest].
_IMAGE_PATH = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
_IMAGE_HOST_PART = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_HOST = rf"{_IMAGE_HOST_PART}(\.{_IMAGE_HOST_PART})*"
_IMAGE_DOMAIN = rf"({_IMAGE_HOST}|\[[a-fA-F0-9:]+\])(:[0-9]+)?"
_IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMAGE_DIGEST = r"[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE = rf"^({_IMAGE_DOMAIN}/)?{_IMAGE_PATH}(/{_IMAGE_PATH})*(:{_IMAGE_TAG})?(@{_IMAGE_DIGEST})?$"
ABSOLUTE_PATH = r"^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$"  # no empty, '.' or '..' segment

# (pattern, maxLength) -> what a user is told is expected; docs.py and crd.py's map-key rules read it.
# Keyed by both: one pattern serves types of different lengths and words (a queue name is a
# subdomain cut to 63), and a key by pattern alone let the last type's words describe them all.
EXPECTED: dict[tuple[str, int], str] = {}


def _register(pattern: str, max_length: int, expected: str) -> None:
    known = EXPECTED.setdefault((pattern, max_length), expected)
    if known != expected:
        raise ValueError(
            f"two types share pattern {pattern!r} and maxLength {max_length}: {known!r} / {expected!r}"
        )


def expected_text(node: dict[str, Any]) -> str | None:
    """The words for a schema node's pattern (as its type's error message says them), or None."""
    return EXPECTED.get((node.get("pattern", ""), node.get("maxLength", -1)))


def _fail(expected: str) -> PydanticCustomError:
    return PydanticCustomError("kubernetes_format", "expected {expected}", {"expected": expected})


def kube_string(
    pattern: str, max_length: int, expected: str, extra: Callable[[str], bool] | None = None
) -> Any:
    """A string type checked by `pattern` and `max_length`, both also put in the JSON schema."""
    compiled = re.compile(pattern)
    _register(pattern, max_length, expected)

    def check(value: str) -> str:
        if (
            len(value) > max_length
            or not compiled.fullmatch(value)
            or (extra is not None and not extra(value))
        ):
            raise _fail(expected)
        return value

    schema = {"type": "string", "maxLength": max_length, "pattern": pattern}
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


def _prefix_fits(value: str) -> bool:
    return "/" not in value or len(value.split("/")[0]) <= 253


def _image_name_fits(value: str) -> bool:
    name = value.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:  # a tag (a colon before the last '/' is a registry's port)
        name = name.rsplit(":", 1)[0]
    return len(name) <= 255


def _resource_name_fits(value: str) -> bool:
    # An extended resource name must stay a qualified name once quota prefixes it with `requests.`.
    if value.startswith("requests."):
        return False
    if "/" in value and "kubernetes.io/" not in value:
        return len("requests." + value.split("/")[0]) <= 253
    return True


_SUBDOMAIN_TEXT = "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
DnsSubdomain = kube_string(
    DNS_SUBDOMAIN,
    253,
    f"a DNS-1123 subdomain (at most 253 {_SUBDOMAIN_TEXT}), as Kubernetes object names are",
)
DnsLabel = kube_string(DNS_LABEL, 63, "a DNS-1123 label (at most 63 lowercase letters, digits and '-')")
QualifiedName = kube_string(
    QUALIFIED_NAME,
    253 + 1 + 63,
    "a label key: an optional DNS-1123 subdomain prefix (at most 253 characters) and '/', then at most "
    "63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    _prefix_fits,
)
LabelValue = kube_string(
    LABEL_VALUE,
    63,
    "a label value: empty, or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
)
SecretKey = kube_string(
    SECRET_KEY,
    253,
    "a Secret key: at most 253 letters, digits, '-', '_' and '.'; not '.' nor starting with '..'",
)
ResourceName = kube_string(
    RESOURCE_NAME,
    253 + 1 + 63,
    "a container resource name: cpu, memory, ephemeral-storage, hugepages-<size>, or a domain-prefixed "
    "extended resource such as nvidia.com/gpu",
    _resource_name_fits,
)
IMAGE_MAX = 1024
Image = kube_string(
    IMAGE,
    IMAGE_MAX,
    "a container image reference: [registry[:port]/]repository[:tag][@digest], the repository in lowercase "
    "letters, digits and separators ('.', '_', '__', '-'), at most 255 characters before the tag, "
    "e.g. vllm/vllm-openai:v0.32.0",
    _image_name_fits,
)


_IMAGE_ADAPTER = TypeAdapter(Image)


def image_problem(value: str) -> str | None:
    """Why `value` is not an image reference the kubelet can parse, or None when it is."""
    try:
        _IMAGE_ADAPTER.validate_python(value)
    except ValidationError:
        return f"expected {EXPECTED[IMAGE, IMAGE_MAX]} (got {value!r})"
    return None


AbsolutePath = kube_string(
    ABSOLUTE_PATH, 1024, "an absolute path without empty, '.' or '..' segments, e.g. /data"
)
QueueName = kube_string(
    DNS_SUBDOMAIN,
    63,
    f"a Kueue LocalQueue name that fits in a label value: at most 63 {_SUBDOMAIN_TEXT}",
)

# ---------------------------------------------------------------- quantities

_QUANTITY_TEXT = (
    "a Kubernetes quantity such as 2, 500m, 1.5, 16Gi or 1e3: a number, then optionally one of "
    "n u m k M G T P E, Ki Mi Gi Ti Pi Ei or an exponent; no spaces"
)
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_CONTEXT = decimal.Context(prec=200, Emax=10**6, Emin=-(10**6))
_NANO = Decimal("1e-9")


def parse_quantity(value: str | int) -> Decimal:
    """The exact value of a quantity, rounded up to the nano as the API server does (`1.5Gi` -> 1610612736)."""
    if isinstance(value, int):
        return Decimal(value)
    match = re.fullmatch(rf"\+?(?P<number>{_NUMBER})(?P<suffix>{_SUFFIX})", value)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity")
    number, suffix = Decimal(match["number"]), match["suffix"]
    with decimal.localcontext(_CONTEXT):
        if suffix in _BINARY:
            amount = number * 2 ** _BINARY[suffix]
        elif suffix in _DECIMAL:
            amount = number.scaleb(_DECIMAL[suffix])
        else:
            amount = number.scaleb(int(suffix[1:]))
        if amount.as_tuple().exponent < -9:  # type: ignore[operator]
            amount = amount.quantize(_NANO, rounding=decimal.ROUND_CEILING)
        return amount


def _quantity_type(pattern: str, minimum: int, expected: str) -> Any:
    compiled = re.compile(pattern)
    _register(pattern, 64, expected)

    def check(value: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _fail(expected)
        if isinstance(value, int):
            if not minimum <= value <= INT64_MAX:
                raise _fail(expected)
        elif len(value) > 64 or not compiled.fullmatch(value):
            raise _fail(expected)
        return value

    schema = {
        "x-kubernetes-int-or-string": True,
        "maxLength": 64,
        "pattern": pattern,
        "minimum": minimum,
        "maximum": INT64_MAX,
    }
    return Annotated[str | int, PlainValidator(check), WithJsonSchema(schema)]


Quantity = _quantity_type(QUANTITY, 0, _QUANTITY_TEXT + "; not negative")
PositiveQuantity = _quantity_type(POSITIVE_QUANTITY, 1, _QUANTITY_TEXT + "; greater than 0")

# ---------------------------------------------------------------- objects that go into pod specs

GPU_RESOURCE = "nvidia.com/gpu"
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def key_path(name: str) -> str:
    """How a map key is written in a field path: `.cpu`, but `[nvidia.com/gpu]`."""
    return f".{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"[{name}]"


class SecretKeyRef(Model):
    name: DnsSubdomain = Field(description="Name of a Secret in the job's namespace.")
    key: SecretKey = Field(description="Key inside that Secret.")


class Toleration(Model):
    RULES = (
        Rule(
            "operator",
            "expected Exists when key is empty (a toleration without a key matches every taint)",
            "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            lambda t: t.key is not None or t.operator == "Exists",
        ),
        Rule(
            "value",
            "expected empty with operator Exists (it matches any value)",
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            lambda t: t.operator != "Exists" or not t.value,
        ),
        Rule(
            "effect",
            "expected NoExecute when tolerationSeconds is set (only NoExecute taints evict)",
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )

    key: QualifiedName | None = Field(
        None, description="Taint key the toleration applies to; empty matches all."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="`Exists` or `Equal` (the default)."
    )
    value: LabelValue | None = Field(None, description="Taint value to match (with `Equal`).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=INT64_MAX, description="How long a NoExecute taint is tolerated."
    )


def _is_extended(name: str) -> bool:
    return "/" in name and "kubernetes.io/" not in name


def _overcommit_allowed(name: str) -> bool:
    # Kubernetes lets requests be below limits only for native resources other than huge pages.
    return not _is_extended(name) and not name.startswith("hugepages-")


class Resources(Model):
    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict, max_length=32, description="Resource requests, e.g. `cpu: 4`."
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict, max_length=32, description="Resource limits."
    )

    def problems(self) -> list[Problem]:
        """What core/v1 refuses in a container's resources (values compared, so not in CEL)."""
        problems = []
        for kind, values in (("requests", self.requests), ("limits", self.limits)):
            for name, raw in values.items():
                amount = parse_quantity(raw)
                if _is_extended(name) and amount != amount.to_integral_value():
                    problems.append(Problem(f"{kind}{key_path(name)}", f"is {raw}; expected a whole number"))
                if name.startswith("hugepages-") and amount % parse_quantity(name[len("hugepages-") :]):
                    problems.append(
                        Problem(f"{kind}{key_path(name)}", f"is {raw}; expected a multiple of the page size")
                    )
        for name, raw in self.requests.items():
            path = f"requests{key_path(name)}"
            limit = self.limits.get(name)
            if limit is None:
                continue  # whether a limit is needed depends on the section's gpus: placement_problems
            if not _overcommit_allowed(name) and parse_quantity(raw) != parse_quantity(limit):
                problems.append(
                    Problem(path, f"is {raw}; expected equal to limits{key_path(name)} ({limit})")
                )
            elif parse_quantity(raw) > parse_quantity(limit):
                problems.append(Problem(path, f"is {raw}; expected at most limits{key_path(name)} ({limit})"))
        return problems


def placement_problems(resources: Resources, gpus: int | None) -> list[Problem]:
    """Resource checks that depend on a section's `gpus`, which the builder adds as the GPU limit.

    `gpus` is the one place for the GPU count: an nvidia.com/gpu amount in resources must
    agree with it. A request of a resource Kubernetes does not overcommit (extended
    resources, huge pages) needs an equal limit, which only the GPU count can imply.
    """
    problems = []
    for kind, values in (("requests", resources.requests), ("limits", resources.limits)):
        raw = values.get(GPU_RESOURCE)
        if gpus is not None and raw is not None and parse_quantity(raw) != gpus:
            problems.append(
                Problem(
                    f"resources.{kind}{key_path(GPU_RESOURCE)}",
                    f"is {raw} but gpus is {gpus}; set the GPU count with gpus alone",
                )
            )
    implied = {GPU_RESOURCE} if gpus else set()
    for name in resources.requests:
        if name not in resources.limits and name not in implied and not _overcommit_allowed(name):
            problems.append(
                Problem(
                    f"resources.limits{key_path(name)}",
                    f"is required when resources.requests{key_path(name)} is set, and equal to it",
                )
            )
    return problems
