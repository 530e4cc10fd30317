"""Pod settings platform teams set on every pod: per section of a job and as the chart's cluster-wide defaults
(imagePullSecrets, serviceAccountName, priorityClassName, runtimeClassName, affinity, nodeSelector,
tolerations, labels, annotations), typed and bounded as the API server validates them, and a stage's
runtime (image, GPUs, resources, placement) built on them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from distillery.api.base import LIST_MAX, Model, Problem, Rule, section
from distillery.api.kube_types import (
    INT64_MAX,
    DnsLabel,
    DnsSubdomain,
    Image,
    LabelValue,
    QualifiedName,
    Resources,
    Toleration,
    placement_problems,
)

# ---------------------------------------------------------------- pod settings (a section's, the chart's defaults)

AFFINITY_LIST_MAX = 4  # terms, expressions and values of an affinity: bounded for the CRD's CEL cost
AFFINITY_VALUES_MAX = 8
ANNOTATION_VALUE_MAX = 512
# What the API server allows of one object's annotations (keys and values, in bytes).
ANNOTATIONS_BYTES_MAX = 256 * 1024
# The most a job's own annotations can take (LIST_MAX keys of 317 and values of 512 characters of 4
# bytes each); the chart's defaults may take the rest, so the two merged always fit.
JOB_ANNOTATIONS_BYTES_MAX = LIST_MAX * (253 + 1 + 63 + 4 * ANNOTATION_VALUE_MAX)
DEFAULT_ANNOTATIONS_BYTES_MAX = ANNOTATIONS_BYTES_MAX - JOB_ANNOTATIONS_BYTES_MAX

# Labels the operator sets on every pod, and those the Job and Deployment controllers set: extra labels
# may not name them (the operator's selectors, its cache and Kueue rely on them; the controllers
# refuse a template whose labels contradict their selector).
RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "kueue.x-k8s.io/queue-name",
    "controller-uid",
    "job-name",
    "pod-template-hash",
)
RESERVED_LABEL_PREFIXES = ("distillery.dev/", "batch.kubernetes.io/")


def reserved_label(key: str) -> bool:
    return key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIXES)


def _reserved_cel(field: str) -> str:
    names = " && ".join(f"k != '{name}'" for name in RESERVED_LABELS)
    prefixes = " && ".join(f"!k.startsWith('{prefix}')" for prefix in RESERVED_LABEL_PREFIXES)
    return f"!has(self.{field}) || self.{field}.all(k, {names} && {prefixes})"


RESERVED_LABELS_TEXT = (
    "expected no label the operator or the Job/Deployment controllers set ("
    + ", ".join(RESERVED_LABELS)
    + ", or any key under "
    + " or ".join(RESERVED_LABEL_PREFIXES)
    + ")"
)


def _values_rule(kinds: str) -> tuple[Rule, ...]:
    """A requirement's values as the API server checks them for its operator."""
    rules = [
        Rule(
            "values",
            "expected at least one value with operator In or NotIn",
            "(self.operator != 'In' && self.operator != 'NotIn') || (has(self.values) && size(self.values) > 0)",
            lambda r: r.operator not in ("In", "NotIn") or len(r.values) > 0,
        ),
        Rule(
            "values",
            "expected no values with operator Exists or DoesNotExist",
            "(self.operator != 'Exists' && self.operator != 'DoesNotExist') || !has(self.values) "
            "|| size(self.values) == 0",
            lambda r: r.operator not in ("Exists", "DoesNotExist") or not r.values,
        ),
    ]
    if kinds == "node":
        rules.append(
            Rule(
                "values",
                "expected exactly one whole number with operator Gt or Lt",
                "(self.operator != 'Gt' && self.operator != 'Lt') || (has(self.values) && size(self.values) == 1 "
                "&& self.values[0].matches('^[-+]?[0-9]{1,18}$'))",
                lambda r: (
                    r.operator not in ("Gt", "Lt")
                    or (len(r.values) == 1 and re.fullmatch(r"[-+]?[0-9]{1,18}", r.values[0]) is not None)
                ),
            )
        )
    return tuple(rules)


class NodeSelectorRequirement(Model):
    RULES = _values_rule("node")

    key: QualifiedName = Field(description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="How the label's value is compared with `values`."
    )
    values: list[LabelValue] = Field(
        default_factory=list, max_length=AFFINITY_VALUES_MAX, description="Values to compare with."
    )


class NodeSelectorFieldRequirement(Model):
    key: Literal["metadata.name"] = Field(description="Node field; only `metadata.name`.")
    operator: Literal["In", "NotIn"] = Field(description="`In` or `NotIn`.")
    values: list[DnsSubdomain] = Field(min_length=1, max_length=1, description="One node name.")


class NodeSelectorTerm(Model):
    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorFieldRequirement] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Requirements on node fields."
    )


class NodeSelector(Model):
    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=AFFINITY_LIST_MAX, description="Terms, ORed."
    )


class PreferredSchedulingTerm(Model):
    weight: int = Field(ge=1, le=100, description="Weight of the term, 1-100.")
    preference: NodeSelectorTerm = Field(description="The term.")


class NodeAffinity(Model):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Nodes the pods prefer."
    )


class LabelSelectorRequirement(Model):
    RULES = _values_rule("pod")

    key: QualifiedName = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the label's value is compared with `values`."
    )
    values: list[LabelValue] = Field(
        default_factory=list, max_length=AFFINITY_VALUES_MAX, description="Values to compare with."
    )


class LabelSelector(Model):
    match_labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict, max_length=AFFINITY_VALUES_MAX, description="Labels to match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Requirements on labels, ANDed."
    )


class PodAffinityTerm(Model):
    label_selector: LabelSelector | None = Field(None, description="Pods this term is about.")
    namespace_selector: LabelSelector | None = Field(None, description="Namespaces of those pods, by label.")
    namespaces: list[DnsLabel] = Field(
        default_factory=list, max_length=AFFINITY_VALUES_MAX, description="Namespaces of those pods."
    )
    topology_key: QualifiedName = Field(description="Node label whose value defines 'the same place'.")


class WeightedPodAffinityTerm(Model):
    weight: int = Field(ge=1, le=100, description="Weight of the term, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(Model):
    """Pod affinity or anti-affinity (the same shape)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Terms the pods must meet."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=AFFINITY_LIST_MAX, description="Terms the pods prefer."
    )


class Affinity(Model):
    """core/v1 Affinity (without the beta matchLabelKeys / mismatchLabelKeys of pod affinity terms)."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pod anti-affinity.")


class LocalObjectReference(Model):
    name: DnsSubdomain = Field(description="Name of a Secret in the job's namespace.")


AnnotationValue = Annotated[str, Field(max_length=ANNOTATION_VALUE_MAX)]

# The pod settings, one type each, shared by the stages, the teacher and the chart's defaults.
ImagePullSecrets = Annotated[
    list[LocalObjectReference],
    Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Secrets to pull the images with, e.g. `[{name: regcred}]`; replaces the operator's "
        "default list (chart value podDefaults.imagePullSecrets) when given.",
    ),
]
ServiceAccountName = Annotated[
    DnsSubdomain | None,
    Field(
        None,
        description="ServiceAccount the pods run as (its token is not mounted); empty uses the operator's "
        "default (podDefaults.serviceAccountName), else the namespace's `default`.",
    ),
]
PriorityClassName = Annotated[
    DnsSubdomain | None,
    Field(
        None,
        description="PriorityClass of the pods; empty uses the operator's default "
        "(podDefaults.priorityClassName), else the cluster's.",
    ),
]
RuntimeClassName = Annotated[
    DnsSubdomain | None,
    Field(
        None,
        description="RuntimeClass of the pods (e.g. `nvidia`); empty uses the operator's default "
        "(podDefaults.runtimeClassName), else the node's default runtime.",
    ),
]
AffinityField = Annotated[
    Affinity | None,
    Field(
        None,
        description="Node and pod (anti-)affinity of the pods; replaces the operator's default "
        "(podDefaults.affinity) as a whole when given.",
    ),
]
PodLabels = Annotated[
    dict[QualifiedName, LabelValue],
    Field(
        default_factory=dict,
        max_length=LIST_MAX,
        description="Extra labels of the pods, merged over the operator's default labels (podDefaults.labels) "
        "key by key; the operator's own labels (`distillery.dev/*`, `app.kubernetes.io/*` it sets, the "
        "Kueue queue label) cannot be set.",
    ),
]
PodAnnotations = Annotated[
    dict[QualifiedName, AnnotationValue],
    Field(
        default_factory=dict,
        max_length=LIST_MAX,
        description="Extra annotations of the pods (values of at most 512 characters), merged over the "
        "operator's default annotations (podDefaults.annotations) key by key.",
    ),
]


def reserved_labels_rule() -> Rule:
    return Rule(
        "labels",
        RESERVED_LABELS_TEXT,
        _reserved_cel("labels"),
        lambda s: not any(reserved_label(key) for key in s.labels),
    )


class PodSettings(Model):
    """The operator's defaults for every pod it creates (chart value `podDefaults`, DISTILLERY_POD_DEFAULTS).

    A job's own values win: labels, annotations and nodeSelector are merged key by key (the job's
    value for a key wins); imagePullSecrets and tolerations, when the job gives any, replace the
    default list; affinity, when the job gives one, replaces the default whole; serviceAccountName,
    priorityClassName and runtimeClassName, when the job gives one, replace the default.
    """

    RULES = (reserved_labels_rule(),)

    image_pull_secrets: ImagePullSecrets
    service_account_name: ServiceAccountName
    priority_class_name: PriorityClassName
    runtime_class_name: RuntimeClassName
    affinity: AffinityField
    node_selector: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict, max_length=LIST_MAX, description="Node labels every pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=LIST_MAX, description="Taints every pod tolerates."
    )
    labels: PodLabels
    annotations: PodAnnotations

    def problems(self) -> list[Problem]:
        size = annotations_bytes(self.annotations)
        if size > DEFAULT_ANNOTATIONS_BYTES_MAX:
            return [
                Problem(
                    "annotations",
                    f"take {size} bytes; expected at most {DEFAULT_ANNOTATIONS_BYTES_MAX} (256 KiB less the "
                    f"{JOB_ANNOTATIONS_BYTES_MAX} a job's own annotations may take)",
                )
            ]
        return []


def annotations_bytes(annotations: dict[str, str]) -> int:
    """Their size as the API server counts it (keys and values, UTF-8)."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())


# The pod settings of a section (a stage's or the teacher's), by field name: they place pods, so they
# are never part of what a stage produces (fingerprints).
POD_SETTINGS_FIELDS = frozenset(PodSettings.model_fields)


class PodPlacement(Model):
    """A section's own pod settings (over the operator's podDefaults); the teacher's and every stage's."""

    RULES = (reserved_labels_rule(),)

    node_selector: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=LIST_MAX,
        description="Node labels the pods must match, merged over the operator's "
        "default (podDefaults.nodeSelector) key by key.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Taints the pods tolerate; replaces the operator's default list (podDefaults.tolerations) "
        "when given.",
    )
    image_pull_secrets: ImagePullSecrets
    service_account_name: ServiceAccountName
    priority_class_name: PriorityClassName
    runtime_class_name: RuntimeClassName
    affinity: AffinityField
    labels: PodLabels
    annotations: PodAnnotations


class StageRuntime(PodPlacement):
    """Where and how a stage's pods run; shared by generation, training and evaluation."""

    image: Image | None = Field(
        None, description="Worker image for this stage; empty uses the operator's configured default."
    )
    resources: Resources = section(Resources, "Requests and limits of the stage's container.")
    backoff_limit: int = Field(2, ge=0, le=100, description="Retries of a failed pod before the stage fails.")
    active_deadline_seconds: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="Wall-clock limit of the stage; it fails when exceeded. Empty means none.",
    )

    def problems(self) -> list[Problem]:
        return placement_problems(self.resources, getattr(self, "gpus", None))
