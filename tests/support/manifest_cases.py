"""The jobs the manifest builders are tested on (`CASES`), the build config, and where their golden
manifests are (tests/unit/golden/<case>/<child>.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillery.api import DistillationJob
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


CASES = {"gpu": gpu_job, "endpoint": endpoint_job, "tiny": tiny_job, "onpolicy": onpolicy_job}
