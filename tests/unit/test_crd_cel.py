"""The CRD's CEL rules (x-kubernetes-validations), run by a real CEL implementation (cel-python).

Every rule in the generated CRD must compile, and on a table of specs it must refuse exactly
what the models refuse, with the same field and message. Specs are given to CEL as the API
server would: defaults applied from the schema (structural defaulting), numbers typed by the
schema (`number` is a double even when written `1`). The transition rule is run with `self`
and `oldSelf`. Every string, list and map of the spec is bounded, so the API server's cost
estimate of the rules (from maxLength / maxItems / maxProperties) has a finite bound.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from distillery import api
from distillery.crd import build_crd
from distillery.errors import InvalidJob, parse_job
from tests.support.cel import apply_defaults, crd_rules, program, to_cel
from tests.support.cel import cel_problems as support_cel_problems

pytestmark = pytest.mark.unit

SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


RULES = crd_rules(SCHEMA)
PROGRAMS = {rule["rule"]: program(rule["rule"]) for _, _, rule in RULES}


def test_every_rule_compiles_names_a_real_field_and_says_what_is_expected():
    assert len(RULES) >= 20
    for path, node, rule in RULES:
        assert rule["message"].strip(), path
        if "fieldPath" in rule:
            target = node
            for part in rule["fieldPath"].split(".")[1:]:
                target = target["properties"][part]  # KeyError: the fieldPath names no field
        if "oldSelf" in rule["rule"]:
            assert path == ("spec",), "the only transition rule is on the spec"


# ---------------------------------------------------------------- the API server's view of an object (tests/support/cel.py)


def cel_problems(document: dict) -> set[tuple[str, str]]:
    """(field path, message) of each rule the API server would fail on this object's spec."""
    return support_cel_problems(document, SCHEMA)


def model_problems(document: dict) -> set[tuple[str, str]]:
    try:
        parse_job(document)
    except InvalidJob as error:
        return {(p.path, p.message) for p in error.problems}
    return set()


# ---------------------------------------------------------------- the table

BASE = {
    "apiVersion": "distillery.dev/v1alpha1",
    "kind": "DistillationJob",
    "metadata": {"name": "j"},
    "spec": {
        "teacher": {"model": "big"},
        "student": {"model": "small"},
        "data": {"taskType": "qa", "train": "t.jsonl", "validation": "v.jsonl"},
    },
}


def job(**changes: Any) -> dict:
    document = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = document["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return document


ENDPOINT = {"url": "http://x/v1", "model": "m"}
TABLE = {
    "minimal": job(),
    "both-teacher-sources": job(teacher__endpoint=ENDPOINT),
    "no-teacher-source": job(teacher__model=None),
    "endpoint": job(teacher__model=None, teacher__endpoint=ENDPOINT),
    "tp-above-gpus": job(teacher__gpus=2, teacher__tensorParallelSize=4),
    "tp-equal-gpus": job(teacher__gpus=4, teacher__tensorParallelSize=4),
    "tp-2-on-cpu": job(teacher__gpus=0, teacher__tensorParallelSize=2),
    "tp-1-on-cpu": job(teacher__gpus=0, teacher__tensorParallelSize=1),
    "tp-ignored-with-endpoint": job(
        teacher__model=None, teacher__endpoint=ENDPOINT, teacher__tensorParallelSize=8
    ),
    "teacher-replicas": job(teacher__replicas=4),
    "replicas-with-endpoint": job(teacher__model=None, teacher__endpoint=ENDPOINT, teacher__replicas=2),
    "two-nodes": job(training__nodes=2),
    "two-nodes-onpolicy": job(training__nodes=2, training__method="onPolicy"),
    "one-node-onpolicy": job(training__nodes=1, training__method="onPolicy"),
    "two-nodes-rwo-claim": job(
        training__nodes=2, storage__pvc={"size": "1Gi", "accessModes": ["ReadWriteOnce"]}
    ),
    "two-nodes-rwx-claim": job(
        training__nodes=2, storage__pvc={"size": "1Gi", "accessModes": ["ReadWriteOnce", "ReadWriteMany"]}
    ),
    "two-nodes-existing-claim": job(training__nodes=2, storage__pvc={"claimName": "shared"}),
    "one-node-rwo-claim": job(storage__pvc={"size": "1Gi", "accessModes": ["ReadWriteOnce"]}),
    "kd-without-logprobs": job(training__method="kd"),
    "kd-with-logprobs": job(training__method="kd", generation__topLogprobs=5),
    "kd-alpha-0": job(training__method="kd", generation__topLogprobs=5, training__alpha=0),
    "kd-alpha-0-lora": job(
        training__method="kd", generation__topLogprobs=5, training__alpha=0, training__lora={}
    ),
    "sft-alpha-0": job(training__alpha=0),
    "parallelism-above-shards": job(generation__shards=2, generation__parallelism=4),
    "parallelism-equal-shards": job(generation__shards=4, generation__parallelism=4),
    "pvc-both": job(storage__pvc={"claimName": "a", "size": "1Gi"}),
    "pvc-neither": job(storage__pvc={}),
    "pvc-claim": job(storage__pvc={"claimName": "a"}),
    "pvc-rwop-alone": job(storage__pvc={"size": 1, "accessModes": ["ReadWriteOncePod"]}),
    "pvc-rwop-mixed": job(storage__pvc={"size": "1Gi", "accessModes": ["ReadWriteOncePod", "ReadWriteMany"]}),
    "mount-dev-shm": job(storage__mountPath="/dev/shm"),
    "mount-under-dev-shm": job(storage__mountPath="/dev/shm/data"),
    "mount-dev-shmx": job(storage__mountPath="/dev/shmx"),
    "retention-without-teacher": job(evaluation__compare=["student"], evaluation__gate={"minRetention": 0.9}),
    "retention-with-teacher": job(evaluation__gate={"minRetention": 0.9}),
    "gate-without-validation": job(data__validation=None, evaluation__gate={"minScore": 0.5}),
    "retention-without-validation": job(data__validation=None, evaluation__gate={"minRetention": 0.5}),
    "no-gate-no-validation": job(data__validation=None),
    "benchmarks": job(
        evaluation__benchmarks=[{"task": "arc_easy"}, {"task": "piqa", "numFewshot": 5, "limit": 100}],
        evaluation__benchmarkTasks="s3://tasks-bucket/lm-eval",
        evaluation__gate={"benchmarks": [{"task": "piqa", "metric": "acc", "minRetention": 0.9}]},
    ),
    "benchmark-twice": job(evaluation__benchmarks=[{"task": "arc_easy"}, {"task": "arc_easy", "limit": 5}]),
    "benchmark-tasks-other-scheme": job(evaluation__benchmarkTasks="gs://bucket/tasks"),
    "benchmark-gate-unknown-task": job(
        evaluation__benchmarks=[{"task": "arc_easy"}],
        evaluation__gate={"benchmarks": [{"task": "piqa", "metric": "acc", "minScore": 0.5}]},
    ),
    "benchmark-gate-no-benchmarks": job(
        evaluation__gate={"benchmarks": [{"task": "piqa", "metric": "acc", "minScore": 0.5}]}
    ),
    "benchmark-gate-both-floors": job(
        evaluation__benchmarks=[{"task": "piqa"}],
        evaluation__gate={
            "benchmarks": [{"task": "piqa", "metric": "acc", "minScore": 0.5, "minRetention": 1}]
        },
    ),
    "benchmark-gate-no-floor": job(
        evaluation__benchmarks=[{"task": "piqa"}],
        evaluation__gate={"benchmarks": [{"task": "piqa", "metric": "acc"}]},
    ),
    "benchmark-retention-without-teacher": job(
        evaluation__compare=["student"],
        evaluation__benchmarks=[{"task": "piqa"}],
        evaluation__gate={"benchmarks": [{"task": "piqa", "metric": "acc", "minRetention": 0.9}]},
    ),
    "nli-one-label": job(data__taskType="nli", data__labels=["yes"]),
    "nli-two-labels": job(data__taskType="nli", data__labels=["yes", "no"]),
    "qa-one-label": job(data__labels=["x"]),
    "nli-default-labels": job(data__taskType="nli"),
    "toleration-keyless-equal": job(training__tolerations=[{"value": "x"}]),
    "toleration-keyless-exists": job(training__tolerations=[{"operator": "Exists"}]),
    "toleration-exists-with-value": job(
        teacher__tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]
    ),
    "toleration-exists-empty-value": job(
        teacher__tolerations=[{"key": "k", "operator": "Exists", "value": ""}]
    ),
    "toleration-seconds-noschedule": job(
        evaluation__tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]
    ),
    "toleration-seconds-no-effect": job(generation__tolerations=[{"key": "k", "tolerationSeconds": 5}]),
    "toleration-seconds-noexecute": job(
        generation__tolerations=[
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]
    ),
    "two-tolerations-two-problems": job(
        training__tolerations=[{"operator": "Exists", "value": "x"}, {"key": "k", "tolerationSeconds": 1}]
    ),
    "two-teacher-problems": job(teacher__endpoint=ENDPOINT, teacher__gpus=1, teacher__tensorParallelSize=2),
    "train-s3-uri": job(data__train="s3://bucket/prompts/train.parquet", data__validation="s3://b-1/v.jsonl"),
    "train-s3-one-slash": job(data__train="s3:/bucket/train.jsonl"),
    "train-s3-bucket-too-short": job(data__train="s3://b/train.jsonl"),
    "train-s3-bucket-uppercase": job(data__train="s3://Bucket/train.jsonl"),
    "validation-scheme-without-slashes": job(data__validation="file:v.jsonl"),
    "train-path-with-colon-later": job(data__train="runs/2026-12-07T10:00/train.jsonl"),
    "train-other-scheme": job(data__train="gs://bucket/train.jsonl"),
    "train-s3-bucket-only": job(data__train="s3://bucket/"),
    "validation-http-uri": job(data__validation="https://example.com/v.jsonl"),
    "output-s3": job(output={"uri": "s3://models/support-bot/v1", "when": "always"}),
    "output-path": job(output={"uri": "exports/support-bot"}),
    "output-bucket-only": job(output={"uri": "s3://models"}),
    "two-spec-problems": job(training__method="kd", data__validation=None, evaluation__gate={"minScore": 1}),
    # Pod settings: extra labels may not name the operator's own, affinity requirements' values fit their operator.
    "pod-settings": job(
        teacher__labels={"team": "ml", "example.com/cost-center": "42"},
        teacher__annotations={"example.com/owner": "ml-platform@example.com"},
        training__serviceAccountName="trainer",
        training__priorityClassName="batch-high",
        training__runtimeClassName="nvidia",
        training__imagePullSecrets=[{"name": "regcred"}],
        evaluation__affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu.memory", "operator": "Gt", "values": ["40000"]}]}
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            },
        },
    ),
    "label-managed-by": job(teacher__labels={"app.kubernetes.io/managed-by": "me"}),
    "label-job": job(generation__labels={"distillery.dev/job": "other"}),
    "label-stage-prefix": job(training__labels={"distillery.dev/anything": "x"}),
    "label-kueue-queue": job(evaluation__labels={"kueue.x-k8s.io/queue-name": "q"}),
    "label-kueue-priority-allowed": job(evaluation__labels={"kueue.x-k8s.io/priority-class": "high"}),
    "label-job-controller": job(training__labels={"batch.kubernetes.io/job-name": "x"}),
    "affinity-in-without-values": job(
        training__affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In"}]}}
                ]
            }
        }
    ),
    "affinity-exists-with-values": job(
        teacher__affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {
                            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                        },
                        "topologyKey": "zone",
                    }
                ]
            }
        }
    ),
    "affinity-gt-not-a-number": job(
        generation__affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "mem", "operator": "Lt", "values": ["lots"]}]}
                    ]
                }
            }
        }
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_cel_rules_and_models_agree(name):
    assert cel_problems(TABLE[name]) == model_problems(TABLE[name])


def test_the_table_has_valid_and_invalid_specs_for_every_rule():
    refused = {message for document in TABLE.values() for _, message in cel_problems(document)}
    rules = {rule["message"] for _, _, rule in RULES if "fieldPath" in rule}
    assert rules <= refused, rules - refused
    assert sum(not cel_problems(d) for d in TABLE.values()) >= 15


# ---------------------------------------------------------------- map keys

KEY_CASES = [
    ("teacher", "nodeSelector", "gpu", True),
    ("teacher", "nodeSelector", "nvidia.com/gpu.product", True),
    ("training", "nodeSelector", "Bad Key", False),
    ("training", "nodeSelector", "a/b/c", False),
    ("training", "nodeSelector", "-a", False),
    ("generation", "nodeSelector", "x" * 64, False),
    ("teacher", "resources.requests", "cpu", True),
    ("teacher", "resources.limits", "example.com/fpga", True),
    ("evaluation", "resources.requests", "gpu", False),
    ("evaluation", "resources.limits", "hugepages-", False),
    ("teacher", "resources.limits", "CPU", False),
    ("training", "labels", "example.com/team", True),
    ("training", "labels", "bad key!", False),
    ("generation", "annotations", "example.com/owner", True),
    ("generation", "annotations", "example.com/", False),
]


@pytest.mark.parametrize(("section", "field", "key", "valid"), KEY_CASES)
def test_map_key_rules_agree_with_the_models(section, field, key, valid):
    value = 1 if "resources" in field else "v"
    if "example.com" in key:
        requests_and_limits = {"requests": {key: 1}, "limits": {key: 1}}
        document = job(**{f"{section}__resources": requests_and_limits})
    else:
        document = job(**{f"{section}__{field.replace('.', '__')}": {key: value}})
    assert (not cel_problems(document)) == valid
    assert (not model_problems(document)) == valid


def test_map_key_rules_are_looser_only_where_a_pattern_cannot_count():
    """A label key's prefix over 253 characters: the models refuse it, the CRD's pattern cannot."""
    document = job(teacher__nodeSelector={"a" * 254 + "/b": "v"})
    assert not cel_problems(document)
    assert model_problems(document)


# ---------------------------------------------------------------- the transition rule

TRANSITION = next(rule for path, _, rule in RULES if "oldSelf" in rule["rule"])


def transition_allowed(old: dict, new: dict) -> bool:
    spec_schema = SCHEMA["properties"]["spec"]
    old_spec = to_cel(apply_defaults(copy.deepcopy(old["spec"]), spec_schema), spec_schema)
    new_spec = to_cel(apply_defaults(copy.deepcopy(new["spec"]), spec_schema), spec_schema)
    return bool(PROGRAMS[TRANSITION["rule"]].evaluate({"self": new_spec, "oldSelf": old_spec}))


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({}, True),
        ({"suspend": True}, True),
        ({"ttlSecondsAfterFinished": 60}, True),
        ({"suspend": True, "ttlSecondsAfterFinished": 0}, True),
        ({"generation": {}}, True),  # the defaults, written out: no change
        ({"training": {"learningRate": 2e-5}}, True),
        ({"teacher": {"model": "other"}}, False),
        ({"training": {"epochs": 4}}, False),
        ({"queueName": "q"}, False),
        ({"storage": {"pvc": {"claimName": "other"}}}, False),
        ({"generation": {"tolerations": [{"operator": "Exists"}]}}, False),
        ({"data": {"taskType": "qa", "train": "t.jsonl"}}, False),  # validation removed
    ],
)
def test_transition_rule_agrees_with_the_python_rule(change, allowed):
    old = copy.deepcopy(BASE)
    new = copy.deepcopy(BASE)
    for key, value in change.items():
        if isinstance(value, dict) and key in new["spec"]:
            new["spec"][key] = {**new["spec"][key], **value} if key != "data" else value
        else:
            new["spec"][key] = value
    assert transition_allowed(old, new) is allowed
    assert api.SPEC_TRANSITION_RULE.holds(parse_job(old).spec, parse_job(new).spec) is allowed
    assert transition_allowed(new, old) is allowed  # a removal is a change too


def test_transition_rule_message_says_what_to_do():
    assert "delete the DistillationJob and create it again" in TRANSITION["message"]
    assert "suspend" in TRANSITION["message"] and "ttlSecondsAfterFinished" in TRANSITION["message"]


# ---------------------------------------------------------------- cost bounds


def _worst_case_bytes(node: dict, path: str = "spec") -> int:
    """An upper bound of the JSON size of any valid value of this schema node."""
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string") or kind == "string":
        if "enum" in node:
            return max(len(v) for v in node["enum"]) + 2
        assert "maxLength" in node, f"{path}: a string without maxLength makes the CEL cost unbounded"
        return node["maxLength"] + 2
    if kind == "array":
        assert "maxItems" in node, f"{path}: a list without maxItems"
        return node["maxItems"] * (_worst_case_bytes(node["items"], path + "[]") + 1) + 2
    if kind == "object" and "additionalProperties" in node:
        assert "maxProperties" in node, f"{path}: a map without maxProperties"
        value = _worst_case_bytes(node["additionalProperties"], path + "{}")
        key = int(re.search(r"size\(k\) <= (\d+)", node["x-kubernetes-validations"][-1]["rule"])[1]) + 3
        return node["maxProperties"] * (key + value + 1) + 2
    if kind == "object":
        return (
            sum(len(k) + 4 + _worst_case_bytes(v, f"{path}.{k}") for k, v in node["properties"].items()) + 2
        )
    return 24  # a number or a boolean


def test_every_string_list_and_map_of_the_spec_is_bounded():
    """The API server estimates a rule's cost from these bounds and refuses a CRD whose rules could
    cost too much. The costliest rule compares the whole spec with its old version; comparing is
    linear in the size compared (cel-go: about 0.1 per byte), so a bounded spec of at most a few
    MB stays far below the per-rule limit (10^7 cost units)."""
    size = _worst_case_bytes(SCHEMA["properties"]["spec"])
    assert size < 4 * 2**20, size


@pytest.mark.parametrize(
    "change",
    [
        {"storage__pvc": {"claimName": "Data_1"}},
        {"storage__pvc": {"size": "2 GiB"}},
        {"storage__pvc": {"size": "0"}},
        {"storage__mountPath": "data/"},
        {"queueName": "Team A"},
        {"teacher__image": "vllm openai"},
        {"teacher__image": "vllm/Vllm-openai:v1"},
        {"evaluation__image": "vllm@sha256:abc"},
        {"teacher__hfTokenSecret": {"name": "s", "key": "..k"}},
        {"training__tolerations": [{"key": "k", "value": "-v-"}]},
        {"training__resources": {"limits": {"cpu": "-1"}}},
        {"generation__nodeSelector": {"zone": "eu west"}},
        {"training__serviceAccountName": "Trainer"},
        {"teacher__priorityClassName": "high_priority"},
        {"evaluation__runtimeClassName": "-nvidia"},
        {"generation__imagePullSecrets": [{"name": "reg cred"}]},
        {"teacher__labels": {"team": "machine learning"}},
        {"evaluation__annotations": {"note": "x" * 513}},
        {"teacher__affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
        {"teacher__affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}}},
        {
            "teacher__affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 101, "preference": {}}]
                }
            }
        },
        {
            "teacher__affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.labels", "operator": "In", "values": ["n"]}]}
                        ]
                    }
                }
            }
        },
    ],
)
def test_the_crd_patterns_refuse_what_the_models_refuse(change):
    """The schema's own patterns and lengths (no CEL), as `kubectl apply` meets them."""
    import jsonschema  # OpenAPI 3.0's boolean exclusiveMinimum is draft 4 semantics

    document = job(**change)
    assert model_problems(document)
    assert list(jsonschema.Draft4Validator(SCHEMA).iter_errors(document))
