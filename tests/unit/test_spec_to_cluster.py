"""What the models accept, the API server accepts: generated specs -> every child -> strict checks.

Specs are drawn (fixed seed) from pools of edge values: the longest and shortest names,
dots and digits first, every quantity form, extended resources, huge pages, tolerations of
every shape. Each child `distillery.manifests.build` returns must pass kubernetes-validate
(strict, upstream schemas) and `apiserver.object_errors` (the port of the API server's Go
checks of names, labels, quantities, resources, tolerations, claims). And each invalid
value class is refused by the models, naming the field.
"""

from __future__ import annotations

import copy
import random

import kubernetes_validate
import pytest

from distillery.api import DistillationJob
from distillery.api.kube_types import parse_quantity
from distillery.errors import InvalidJob, parse_job
from distillery.manifests import ALTERNATES, CHILDREN, BuildConfig, build, label_value, names
from tests.unit import apiserver

pytestmark = pytest.mark.unit

K8S_VERSION = "1.31.0"
UID = "0b7c4a52-8c1e-4a11-9a5e-3f1d2b6c7a90"

JOB_NAMES = ["a", "0", "a.b", "1-2.x", "x" * 52, "x" * 53, "y" * 63, "y" * 64, "9" * 253,
             ".".join(["abc"] * 63)[:253].rstrip("."), "team-a.distill-v2", "z" + "-" * 250 + "z"]  # fmt: skip  # packed value list
SUBDOMAINS = ["a", "0", "s.e-c.r3t", "k" * 253, "my-secret", "1.2.3"]
SECRET_KEYS = [".a", "A_b-c.d", "k" * 253, "token", "-", "_"]
QUANTITIES = ["0", "1", "500m", ".5", "1.", "1e3", "1E-3", "16Gi", "0.5Gi", "+2", 3, "1.5Gi", "1E", "12e2",
              "0.000000001", "100n", "7u", "9223372036854775807Ki"]  # fmt: skip  # packed value list
LABEL_KEYS = [
    "kubernetes.io/hostname",
    "a",
    "A_b.c-D",
    "x" * 63,
    "p" * 253 + "/" + "n" * 63,
    "node.k8s/gpu-type",
]
LABEL_VALUES = ["", "v", "V_1.x", "z" * 63, "a100-80gb"]
IMAGES = [
    None,
    "r/i:t",
    "localhost:5000/a/b@sha256:" + "0" * 64,
    "i" * 255 + ":" + "t" * 128,
    "REGISTRY/a__b-c.d:T_1",
    "[::1]:5000/x:y@sha256:" + "f" * 64,
]
PATHS = ["/data", "/d", "/a b/..c/.x", "/" + "p" * 1000, "/dev/shmx", "/mnt/..data"]


def _resources(rng: random.Random, gpus: int | None) -> dict:
    requests, limits = {}, {}
    for name in rng.sample(["cpu", "memory", "ephemeral-storage"], rng.randint(0, 3)):
        low, high = sorted((rng.choice(QUANTITIES), rng.choice(QUANTITIES)), key=parse_quantity)
        shape = rng.choice(["both", "request", "limit"])
        if shape != "limit":
            requests[name] = low
        if shape != "request":
            limits[name] = high
    if rng.random() < 0.4:  # an extended resource: a whole number, requests == limits
        amount = rng.choice([0, 1, "2", "8", "1e1"])
        requests["example.com/fpga"] = limits["example.com/fpga"] = amount
    if rng.random() < 0.3:
        amount = rng.choice(["0", "2Mi", "4Mi", 2 * 2**20])
        requests["hugepages-2Mi"] = limits["hugepages-2Mi"] = amount
    if gpus and rng.random() < 0.5:  # the builder adds the limit from gpus when only a request is given
        for values in rng.choice([[limits], [requests], [requests, limits]]):
            values["nvidia.com/gpu"] = rng.choice([gpus, str(gpus)])
    return {"requests": requests, "limits": limits}


def _toleration(rng: random.Random) -> dict:
    shape = rng.choice(["all", "exists", "equal", "noexecute"])
    if shape == "all":
        return {"operator": "Exists"}
    key = rng.choice(LABEL_KEYS)
    if shape == "exists":
        return {"key": key, "operator": "Exists", "effect": rng.choice(["NoSchedule", "PreferNoSchedule"])}
    if shape == "equal":
        return {
            "key": key,
            "value": rng.choice(LABEL_VALUES),
            **({"operator": "Equal"} if rng.random() < 0.5 else {}),
        }
    return {
        "key": key,
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": rng.choice([0, 300]),
    }


def _placement(rng: random.Random, gpus: int | None) -> dict:
    out = {
        "resources": _resources(rng, gpus),
        "nodeSelector": {rng.choice(LABEL_KEYS): rng.choice(LABEL_VALUES) for _ in range(rng.randint(0, 3))},
        "tolerations": [_toleration(rng) for _ in range(rng.randint(0, 3))],
    }
    if gpus is not None:
        out["gpus"] = gpus
    return out


def random_job(rng: random.Random) -> dict:
    gpus = rng.choice([0, 1, 2, 8])
    if rng.random() < 0.7:
        teacher = {"model": "org/model", "gpus": gpus, "tensorParallelSize": rng.randint(1, max(gpus, 1))}
        if rng.random() < 0.5:
            teacher["hfTokenSecret"] = {"name": rng.choice(SUBDOMAINS), "key": rng.choice(SECRET_KEYS)}
        teacher.update(_placement(rng, gpus))
        teacher["image"] = rng.choice(IMAGES[1:])
    else:
        endpoint = {"url": "https://llm.example.com/v1", "model": "big"}
        if rng.random() < 0.5:
            endpoint["apiKeySecret"] = {"name": rng.choice(SUBDOMAINS), "key": rng.choice(SECRET_KEYS)}
        teacher = {"endpoint": endpoint}
    shards = rng.choice([1, 3, 10000])
    if rng.random() < 0.5:
        pvc = {"claimName": rng.choice(SUBDOMAINS)}
    else:
        pvc = {
            "size": rng.choice(["1Gi", "1", ".5Ti", "100e9", 10**12]),
            "accessModes": rng.choice(
                [["ReadWriteOncePod"], ["ReadWriteOnce", "ReadWriteMany"], ["ReadWriteMany"]]
            ),
        }
        if rng.random() < 0.5:
            pvc["storageClassName"] = rng.choice(SUBDOMAINS)
    spec = {
        "teacher": teacher,
        "student": {"model": "org/small"},
        "data": {"taskType": "qa", "train": "t.jsonl", "validation": "v.jsonl"},
        "generation": {"shards": shards, "parallelism": rng.randint(1, shards), **_placement(rng, None)},
        "training": {"image": rng.choice(IMAGES), **_placement(rng, rng.choice([0, 1, 4]))},
        "evaluation": {"image": rng.choice(IMAGES), **_placement(rng, rng.choice([0, 1]))},
        "storage": {"pvc": pvc, "mountPath": rng.choice(PATHS)},
    }
    spec["generation"]["image"] = rng.choice(IMAGES)
    if rng.random() < 0.5:
        spec["queueName"] = rng.choice(["a", "q" * 63, "team-a.gpu"])
    meta = {"name": rng.choice(JOB_NAMES), "namespace": rng.choice(["default", "n" * 63]), "uid": UID}
    return {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": meta,
        "spec": spec,
    }


SPECS = [random_job(random.Random(seed)) for seed in range(40)]
CONFIG = BuildConfig(worker_image="example.com/worker:1", worker_cuda_image="example.com/worker-cuda:1")


@pytest.mark.parametrize("document", SPECS, ids=[f"seed{i}" for i in range(len(SPECS))])
def test_every_child_of_an_accepted_spec_is_accepted_by_the_api_server(document):
    job = parse_job(document)  # the generator only draws valid values: the models must agree
    built = 0
    served = job.spec.teacher.endpoint is None
    alternates = {alternate for alternate, _ in ALTERNATES.values()}  # built under their child's key
    for child in (c for c in CHILDREN if c not in alternates):
        manifest = build(child, job, CONFIG) if served or not child.startswith("teacher") else None
        if manifest is None:  # no teacher for an endpoint, no claim for an existing one
            continue
        built += 1
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        assert apiserver.object_errors(manifest) == [], child
    assert built >= 3


def test_the_generator_covers_the_edges():
    text = repr(SPECS)
    for needle in (
        "hugepages-2Mi",
        "example.com/fpga",
        "nvidia.com/gpu",
        "tolerationSeconds",
        "ReadWriteOncePod",
        "storageClassName",
        "queueName",
        "apiKeySecret",
        "hfTokenSecret",
        "'p" + "p" * 252,
    ):
        assert needle in text, needle


def _custom_resource_names() -> list[str]:
    """Names the API server accepts for a DistillationJob (DNS-1123 subdomains), at every length."""
    rng = random.Random(7)
    out = list(JOB_NAMES)
    for length in [*range(1, 80), *range(240, 254)]:
        labels, size = [], 0
        while size < length:
            label = "".join(rng.choice("a0-") for _ in range(rng.randint(1, 12))).strip("-") or "z"
            labels.append(label)
            size += len(label) + 1
        out.append(".".join(labels)[:length].strip(".-") or "a")
    return out


def test_any_custom_resource_name_gives_valid_child_names_and_labels():
    for name in _custom_resource_names():
        assert apiserver.is_dns1123_subdomain(name), name  # what the API server accepts
        child_names = names(DistillationJob.model_validate({**SPECS[0], "metadata": {"name": name}}))
        for attribute in ("pvc", "teacher", "teacher_policy", "generate", "train", "evaluate"):
            value = getattr(child_names, attribute)
            # A Service's name form, the strictest of all.
            assert apiserver.is_dns1035_label(value), (name, attribute, value)
        for job_name in (child_names.generate, child_names.train, child_names.evaluate):
            assert apiserver.is_dns1123_label(f"{job_name}-9999"), name  # an Indexed pod's hostname
        assert apiserver.is_label_value(label_value(name)), name


def _job(**changes) -> dict:
    document = copy.deepcopy(SPECS[0])
    document["spec"]["teacher"] = {"model": "m", "gpus": 1}
    document["spec"]["storage"] = {"pvc": {"claimName": "data"}}
    for dotted, value in changes.items():
        node = document
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return document


INVALID = [
    ({"metadata__name": "My_Job"}, "metadata.name: expected a DNS-1123 subdomain"),
    ({"spec__teacher__hfTokenSecret": {"name": "My_Secret", "key": "t"}}, "spec.teacher.hfTokenSecret.name: expected"),
    ({"spec__teacher__hfTokenSecret": {"name": "s", "key": "a/b"}}, "spec.teacher.hfTokenSecret.key: expected a Secret key"),
    ({"spec__teacher__hfTokenSecret": {"name": "s", "key": "..x"}}, "spec.teacher.hfTokenSecret.key: expected"),
    ({"spec__storage__pvc": {"claimName": "Data"}}, "spec.storage.pvc.claimName: expected a DNS-1123 subdomain"),
    ({"spec__storage__pvc": {"size": "1Gi", "storageClassName": "fast_ssd"}}, "spec.storage.pvc.storageClassName:"),
    ({"spec__storage__pvc": {"size": "0Gi"}}, "spec.storage.pvc.size: expected a Kubernetes quantity"),
    ({"spec__storage__pvc": {"size": "2 GiB"}}, "spec.storage.pvc.size: expected a Kubernetes quantity"),
    ({"spec__storage__pvc": {"size": "1Gi", "accessModes": ["ReadWriteOncePod", "ReadWriteOnce"]}},
     "spec.storage.pvc.accessModes: expected ReadWriteOncePod alone"),
    ({"spec__storage__mountPath": "data"}, "spec.storage.mountPath: expected an absolute path"),
    ({"spec__storage__mountPath": "/data/"}, "spec.storage.mountPath: expected an absolute path"),
    ({"spec__storage__mountPath": "/dev/shm"}, "spec.storage.mountPath: expected a path outside /dev/shm"),
    ({"spec__training__nodeSelector": {"gpu type": "a100"}}, "spec.training.nodeSelector[gpu type]: invalid key;"),
    ({"spec__training__nodeSelector": {"gpu": "a100 80gb"}}, "spec.training.nodeSelector.gpu: expected a label value"),
    ({"spec__training__nodeSelector": {"gpu": "x" * 64}}, "spec.training.nodeSelector.gpu: expected a label value"),
    ({"spec__teacher__tolerations": [{"key": "-bad"}]}, "spec.teacher.tolerations[0].key: expected a label key"),
    ({"spec__teacher__tolerations": [{"key": "k", "value": "a b"}]}, "spec.teacher.tolerations[0].value: expected"),
    ({"spec__teacher__tolerations": [{"value": "x"}]}, "spec.teacher.tolerations[0].operator: expected Exists"),
    ({"spec__teacher__tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]},
     "spec.teacher.tolerations[0].value: expected empty with operator Exists"),
    ({"spec__teacher__tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}]},
     "spec.teacher.tolerations[0].effect: expected NoExecute"),
    ({"spec__teacher__resources": {"requests": {"cpu": "2 cores"}}}, "spec.teacher.resources.requests.cpu: expected"),
    ({"spec__teacher__resources": {"limits": {"memory": "-1Gi"}}}, "spec.teacher.resources.limits.memory: expected"),
    ({"spec__teacher__resources": {"limits": {"memory": 1.5}}}, "spec.teacher.resources.limits.memory: expected"),
    ({"spec__teacher__resources": {"requests": {"gpu": 1}}}, "spec.teacher.resources.requests.gpu: invalid key;"),
    ({"spec__teacher__resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}},
     "spec.teacher.resources.requests.cpu: is 4; expected at most limits.cpu (2)"),
    ({"spec__training__resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}},
     "spec.training.resources.requests.memory: is 1Gi; expected at most"),
    ({"spec__generation__resources": {"limits": {"example.com/fpga": "1500m"}}},
     "spec.generation.resources.limits[example.com/fpga]: is 1500m; expected a whole number"),
    ({"spec__generation__resources": {"requests": {"example.com/fpga": 1}}},
     "spec.generation.resources.limits[example.com/fpga]: is required when resources.requests[example.com/fpga] is set"),
    ({"spec__generation__resources": {"requests": {"example.com/fpga": 1}, "limits": {"example.com/fpga": 2}}},
     "spec.generation.resources.requests[example.com/fpga]: is 1; expected equal to limits"),
    ({"spec__generation__resources": {"requests": {"hugepages-2Mi": "3Mi"}, "limits": {"hugepages-2Mi": "3Mi"}}},
     "spec.generation.resources.requests[hugepages-2Mi]: is 3Mi; expected a multiple"),
    ({"spec__teacher__gpus": 2, "spec__teacher__resources": {"limits": {"nvidia.com/gpu": 1}}},
     "spec.teacher.resources.limits[nvidia.com/gpu]: is 1 but gpus is 2; set the GPU count with gpus alone"),
    ({"spec__training__gpus": 0, "spec__training__resources": {"requests": {"nvidia.com/gpu": 1}}},
     "spec.training.resources.requests[nvidia.com/gpu]: is 1 but gpus is 0"),
    ({"spec__teacher__image": ""}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm/vllm-openai: latest"}, "spec.teacher.image: expected a container image"),
    ({"spec__evaluation__image": " img"}, "spec.evaluation.image: expected a container image reference"),
    # What the kubelet's reference parser refuses (the pod would sit in InvalidImageName):
    ({"spec__teacher__image": "vllm/Vllm-openai:v1"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "VLLM"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm/vllm-openai:"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm:a:b"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "-vllm"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm//openai"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm@sha256:abc"}, "spec.teacher.image: expected a container image reference"),
    ({"spec__teacher__image": "vllm:" + "t" * 129}, "spec.teacher.image: expected a container image reference"),
    ({"spec__training__image": "i" * 256}, "spec.training.image: expected a container image reference"),
    ({"spec__queueName": "Team A"}, "spec.queueName: expected a Kueue LocalQueue name"),
    ({"spec__queueName": "q" * 64}, "spec.queueName: expected a Kueue LocalQueue name"),
    ({"spec__generation__activeDeadlineSeconds": 2**63}, "spec.generation.activeDeadlineSeconds: input should be"),
]  # fmt: skip  # aligned table: one row per case


@pytest.mark.parametrize(("changes", "expected"), INVALID, ids=[e.split(":")[0] for _, e in INVALID])
def test_each_invalid_value_class_is_refused_naming_the_field(changes, expected):
    with pytest.raises(InvalidJob) as caught:
        parse_job(_job(**changes))
    lines = str(caught.value).splitlines()
    assert any(line.startswith(expected) for line in lines), lines


def test_the_base_of_the_invalid_table_is_valid():
    parse_job(_job())
