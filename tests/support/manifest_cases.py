"""The jobs the manifest builders are tested on (`CASES`), the build config, and where their golden
manifests are (tests/unit/golden/<case>/<child>.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillery.api import DistillationJob, PodSettings
from distillery.manifests import BuildConfig

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "golden"


CONFIG = BuildConfig(worker_image="example.com/worker:1", worker_cuda_image="example.com/worker-cuda:1")


UID = "0b7c4a52-8c1e-4a11-9a5e-3f1d2b6c7a90"


def _with_meta(document: dict, name: str | None = None, namespace: str = "ml-platform") -> DistillationJob:
    document = json.loads(json.dumps(document))
    document["metadata"] = {
        "name": name or document["metadata"]["name"],
        "namespace": namespace,
        "uid": UID,
    }
    return DistillationJob.model_validate(document)


def gpu_job() -> DistillationJob:
    return _with_meta(yaml.safe_load((ROOT / "examples" / "distillation.yaml").read_text()))


def endpoint_job() -> DistillationJob:
    """An external teacher, an existing claim, and a name far longer than a child may be."""
    return _with_meta(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "x"},
            "spec": {
                "teacher": {
                    "endpoint": {
                        "url": "https://llm.example.com/v1",
                        "model": "big-model",
                        "apiKeySecret": {"name": "llm-key", "key": "api-key"},
                    }
                },
                "student": {"model": "models/student"},
                "data": {"taskType": "math", "train": "math/train.jsonl"},
                "generation": {"shards": 4, "backoffLimit": 3},
                "training": {"gpus": 0, "epochs": 1},
                "evaluation": {"gpus": 0, "compare": ["baseline", "student"]},
                "storage": {"pvc": {"claimName": "shared-data"}, "mountPath": "/mnt/store"},
            },
        },
        name="support.team-" + "very-long-distillation-job-name-" * 5 + "v2",
        namespace="team-a",
    )


def tiny_job() -> DistillationJob:
    document = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    document["spec"]["storage"] = {"pvc": {"size": "1Gi", "accessModes": ["ReadWriteOnce"]}}
    return _with_meta(document, namespace="default")


def onpolicy_job() -> DistillationJob:
    """The tiny job with on-policy distillation: the training pods ask the teacher to grade."""
    document = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    document["metadata"]["name"] = "tiny-onpolicy"
    document["spec"]["storage"] = {"pvc": {"size": "1Gi", "accessModes": ["ReadWriteOnce"]}}
    document["spec"]["training"].update(method="onPolicy", onPolicy={"fraction": 0.5, "samplesPerPrompt": 2})
    return _with_meta(document, namespace="default")


# The operator's pod defaults (the chart's podDefaults) of the podsettings case.
POD_DEFAULTS = PodSettings.model_validate(
    {
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccountName": "distillery-worker",
        "priorityClassName": "ml-batch",
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchExpressions": [
                                {
                                    "key": "topology.kubernetes.io/zone",
                                    "operator": "In",
                                    "values": ["eu-west-1a"],
                                }
                            ]
                        },
                    }
                ]
            }
        },
        "nodeSelector": {"kubernetes.io/os": "linux", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "labels": {"example.com/cost-center": "ml-42", "team": "platform"},
        "annotations": {"example.com/owner": "platform@example.com"},
    }
)


def podsettings_job() -> DistillationJob:
    """The GPU example with pod settings of its own in some sections, built over POD_DEFAULTS."""
    document = yaml.safe_load((ROOT / "examples" / "distillation.yaml").read_text())
    document["metadata"]["name"] = "podsettings"
    spec = document["spec"]
    spec["teacher"].update(
        labels={"team": "support"},
        priorityClassName="gpu-critical",
        runtimeClassName="nvidia",
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {"distillery.dev/stage": "teacher"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
    )
    spec["training"].update(imagePullSecrets=[{"name": "training-registry"}], serviceAccountName="trainer")
    spec["evaluation"].update(
        annotations={"example.com/owner": "support@example.com", "example.com/run": "1"}
    )
    spec["generation"].update(nodeSelector={"kubernetes.io/os": "linux", "example.com/pool": "cpu"})
    return _with_meta(document)


def multinode_job() -> DistillationJob:
    """The GPU example trained on 2 nodes of 8 GPUs (an Indexed Job, its headless Service), in a Kueue queue."""
    document = yaml.safe_load((ROOT / "examples" / "distillation.yaml").read_text())
    document["metadata"]["name"] = "multinode"
    document["spec"]["training"].update(nodes=2, backoffLimit=2)
    return _with_meta(document)


def jobset_job() -> DistillationJob:
    """The multinode case on a cluster that serves JobSets (`launcher: auto` picks one; CONFIGS)."""
    document = yaml.safe_load((ROOT / "examples" / "distillation.yaml").read_text())
    document["metadata"]["name"] = "jobset"
    document["spec"]["training"].update(nodes=2, backoffLimit=2)
    return _with_meta(document)


CASES = {
    "gpu": gpu_job,
    "endpoint": endpoint_job,
    "tiny": tiny_job,
    "onpolicy": onpolicy_job,
    "podsettings": podsettings_job,
    "multinode": multinode_job,
    "jobset": jobset_job,
}
CONFIGS = {
    "podsettings": BuildConfig(**{**vars(CONFIG), "pod_defaults": POD_DEFAULTS}),
    "jobset": BuildConfig(**{**vars(CONFIG), "jobset_installed": True}),
}


def config_for(case: str) -> BuildConfig:
    """The operator's build config a case is built with (the podsettings case has chart-wide pod defaults)."""
    return CONFIGS.get(case, CONFIG)
