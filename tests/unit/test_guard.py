"""The operator's guard: images by prefix, Secrets by opt-in label, tolerations by taint key.

The guard's lists of what a spec makes pods use are checked against the pods themselves: every
image, Secret and toleration in the manifests the operator builds for a spec that uses them all
is one the guard names, so a field added to the builders cannot slip past it.
"""

from __future__ import annotations

from typing import Any

import pytest

from distillery.api import ConditionType, DistillationJob, Phase
from distillery.controller import guard
from distillery.controller.guard import Guard, denials, image_allowed
from distillery.controller.observe import Admission, JobState, Observed
from distillery.controller.phases import decide
from distillery.controller.status import events, next_status
from distillery.manifests import CHILDREN, BuildConfig, build
from tests.support.phase_machine import NOW, status

pytestmark = pytest.mark.unit

CONFIG = BuildConfig(
    worker_image="registry.corp/ml/worker:1", worker_cuda_image="registry.corp/ml/worker-cuda:1"
)
EVERYTHING: dict[str, Any] = {
    "teacher": {
        "model": "models/teacher",
        "image": "vllm/vllm-openai:v0.32.0",
        "hfTokenSecret": {"name": "hf", "key": "token"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "student": {"model": "models/student"},
    "data": {"taskType": "qa", "train": "d/train.jsonl", "validation": "d/val.jsonl"},
    "generation": {"image": "ghcr.io/someone/worker:2", "tolerations": [{"operator": "Exists"}]},
    "training": {"gpus": 1, "tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]},
    "evaluation": {"image": "registry.corp/ml/eval:1"},
    "storage": {
        "pvc": {"size": "10Gi"},
        "objectStore": {"endpointUrl": "http://minio:9000", "credentialsSecret": {"name": "s3keys"}},
    },
}


def job(spec: dict[str, Any] = EVERYTHING) -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "j", "namespace": "ml", "uid": "u"},
            "spec": spec,
        }
    )


def pod_specs(j: DistillationJob) -> list[dict[str, Any]]:
    out = []
    for child in CHILDREN:
        manifest = build(child, j, CONFIG)
        template = ((manifest or {}).get("spec") or {}).get("template")
        if template:
            out.append(template["spec"])
    return out


def test_the_guard_names_every_image_secret_and_toleration_the_pods_use():
    j = job()
    pods = pod_specs(j)
    used_images = {c["image"] for p in pods for c in p["containers"] + p.get("initContainers", [])}
    named = {image for _, image in guard.images(j.spec, CONFIG)}
    defaults = {CONFIG.worker_image, CONFIG.worker_cuda_image}  # the admin's own choice
    assert used_images - defaults == named
    used_secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for p in pods
        for c in p["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    } | {v["secret"]["secretName"] for p in pods for v in p.get("volumes", []) if "secret" in v}
    assert used_secrets == {name for _, name in guard.secrets(j.spec)} == {"hf", "s3keys"}
    used_keys = {t.get("key") for p in pods for t in p.get("tolerations", [])}
    assert used_keys == {key for _, key in guard.tolerations(j.spec)}


@pytest.mark.parametrize(
    ("image", "prefixes", "allowed"),
    [
        ("registry.corp/ml/worker:1", ("registry.corp/ml/",), True),
        ("registry.corp/ml/worker:1", ("registry.corp/ml",), True),
        ("registry.corp/ml:1", ("registry.corp/ml",), True),
        ("registry.corp/mlevil/worker:1", ("registry.corp/ml",), False),
        ("registry.corp/ml-other/worker:1", ("registry.corp/ml/",), False),
        ("vllm/vllm-openai:v0.32.0", ("docker.io/vllm/",), True),
        ("docker.io/vllm/vllm-openai:v0.32.0", ("vllm/",), True),
        ("vllm/vllm-openai@sha256:abc", ("vllm/vllm-openai",), True),
        ("vllm-evil/x:1", ("vllm",), False),
        ("ubuntu:22.04", ("docker.io/library/",), True),
        ("ubuntu:22.04", ("ubuntu",), False),  # a one-word prefix is a Hub namespace, not library/ubuntu
        ("localhost:5000/x:1", ("localhost:5000",), True),
        ("registry.corp/ml/worker:1", ("registry.corp/other/", "registry.corp/ml/"), True),
    ],
)
def test_image_prefixes_match_at_a_boundary_in_resolved_form(image, prefixes, allowed):
    assert image_allowed(image, prefixes) is allowed


def test_denials_name_each_field_and_say_what_is_allowed():
    policy = Guard(
        image_prefixes=("registry.corp/ml/",),
        secret_label="distillery.dev/usable=true",
        toleration_keys=("nvidia.com/gpu",),
    )
    labels = {"hf": {"distillery.dev/usable": "true"}, "s3keys": {"distillery.dev/usable": "no"}}
    found = denials(job().spec, policy, CONFIG, labels)
    assert found == [
        "spec.teacher.image: image 'vllm/vllm-openai:v0.32.0' is not under an allowed prefix (registry.corp/ml/)",
        "spec.generation.image: image 'ghcr.io/someone/worker:2' is not under an allowed prefix (registry.corp/ml/)",
        "spec.storage.objectStore.credentialsSecret.name: Secret 's3keys' lacks the label "
        "distillery.dev/usable=true that lets jobs use it",
        "spec.generation.tolerations[0]: a toleration without a key tolerates every taint (allowed keys: nvidia.com/gpu)",
        "spec.training.tolerations[0]: toleration of taint 'dedicated' is not allowed (allowed keys: nvidia.com/gpu)",
    ]


def test_a_key_only_label_accepts_any_value_and_an_off_guard_refuses_nothing():
    policy = Guard(secret_label="distillery.dev/usable")
    assert denials(job().spec, policy, CONFIG, {"hf": {"distillery.dev/usable": ""}, "s3keys": {}}) == [
        "spec.storage.objectStore.credentialsSecret.name: Secret 's3keys' lacks the label "
        "distillery.dev/usable that lets jobs use it"
    ]
    assert not Guard().enabled and denials(job().spec, Guard(), CONFIG, {}) == []


def test_an_endpoint_teacher_runs_no_teacher_pod_so_its_image_and_tolerations_are_not_checked():
    spec = {
        **EVERYTHING,
        "teacher": {
            "endpoint": {"url": "https://llm/v1", "model": "m", "apiKeySecret": {"name": "llm", "key": "k"}},
            "tolerations": [{"operator": "Exists"}],
        },
    }
    j = job(spec)
    assert "spec.teacher.image" not in dict(guard.images(j.spec, CONFIG))
    assert [f for f, _ in guard.tolerations(j.spec) if f.startswith("spec.teacher")] == []
    assert ("spec.teacher.endpoint.apiKeySecret.name", "llm") in guard.secrets(j.spec)


def test_the_guard_is_read_from_the_environment_the_chart_sets():
    from distillery.controller.settings import from_environment

    env = {
        "DISTILLERY_GUARD_IMAGE_PREFIXES": "registry.corp/ml/, vllm/",
        "DISTILLERY_GUARD_SECRET_LABEL": "a=b",
        "DISTILLERY_GUARD_TOLERATION_KEYS": "",
    }
    policy = from_environment(env).guard()
    assert policy == Guard(("registry.corp/ml/", "vllm/"), "a=b", ())
    assert policy.describe() == (
        "guard on: images under registry.corp/ml/, vllm/; Secrets labelled a=b; tolerations of no taint"
    )
    assert from_environment({}).guard() == Guard() and from_environment({}).guard().toleration_keys is None


def test_a_denied_job_fails_before_anything_runs_with_a_warning_naming_the_field():
    denied = Admission(
        denied=("spec.teacher.image: image 'x' is not under an allowed prefix (r/)",), policy="p"
    )
    step = decide(job().spec, [], status(None), Observed(admission=denied), NOW, "j")
    assert step.phase is Phase.failed and step.ensure == ()
    assert "spec.teacher.image" in step.message
    new = next_status(status(None), step, NOW, 1)
    (admitted,) = [c for c in new.conditions if c.type == ConditionType.admitted]
    assert (admitted.status, admitted.reason) == ("False", "PolicyDenied")
    warnings = [e for e in events(status(None), new) if e.type == "Warning"]
    assert any(e.reason == "AdmittedPolicyDenied" and "spec.teacher.image" in e.message for e in warnings)


def test_a_named_secret_not_there_yet_is_waited_for_and_an_allowed_job_starts_with_its_check():
    waiting = Admission(missing_secrets=("'hf' (spec.teacher.hfTokenSecret.name)",), policy="p")
    step = decide(job().spec, [], status(None), Observed(admission=waiting), NOW, "j")
    assert step.phase is Phase.pending and step.ensure == () and "'hf'" in step.message
    allowed = decide(
        job().spec, [], status(None), Observed(admission=Admission(policy="guard on: ...")), NOW, "j"
    )
    assert "check" in allowed.ensure
    admitted = next(c for c in allowed.conditions if c.type == ConditionType.admitted)
    assert (admitted.status, admitted.reason, admitted.message) == ("True", "Allowed", "guard on: ...")


def test_a_denial_stops_what_already_runs():
    denied = Admission(denied=("spec.training.tolerations[0]: ...",))
    observed = Observed(admission=denied, check=JobState(exists=True, active=1))
    assert decide(job().spec, [], status(Phase.pending), observed, NOW, "j").delete == ("check",)
