"""What the API server and JobSet's webhook would refuse of a JobSet Distillery builds.

The schema is upstream's own CRD (kubernetes-sigs/jobset, config/components/crd/bases/
jobset.x-k8s.io_jobsets.yaml), read from the file the environment variable DISTILLERY_JOBSET_CRD names
(not committed; docs/scale-out.md says where to get it). Without it that check is skipped, but every
JobSet is still parsed by the JobSet models Kubeflow Trainer's API package (PyPI kubeflow-trainer-api)
generates from upstream's OpenAPI (strict types; a field they do not know is refused), and the Jobs the
JobSet controller would make from it are checked against the upstream Kubernetes schemas.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.cel import cel_problems
from tests.support.kubectl_apply import int_or_string_errors, unknown_fields

ENV = "DISTILLERY_JOBSET_CRD"
VERSION = "v1alpha2"


@cache
def schema() -> dict[str, Any] | None:
    """The openAPIV3Schema of JobSet v1alpha2 from the file DISTILLERY_JOBSET_CRD names; None when unset."""
    where = os.environ.get(ENV)
    if not where:
        return None
    crd = yaml.safe_load(Path(where).read_text())
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != "JobSet":
        raise ValueError(f"{ENV}={where}: expected the JobSet CustomResourceDefinition")
    version = next((v for v in crd["spec"]["versions"] if v["name"] == VERSION), None)
    if version is None:
        raise ValueError(f"{ENV}={where}: the CRD serves no {VERSION}")
    return version["schema"]["openAPIV3Schema"]


def schema_problems(manifest: dict[str, Any], openapi: dict[str, Any]) -> list[str]:
    """The API server's refusals under the CRD: unknown fields (strict), types and bounds, CEL rules."""
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    found = unknown_fields(body, openapi, "") + int_or_string_errors(manifest, openapi, "")
    found += [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in jsonschema.Draft4Validator(openapi).iter_errors(body)
    ]
    if not found:  # CEL runs on a schema-valid object
        found += [f"{path}: {message}" for path, message in sorted(cel_problems(manifest, openapi))]
    return found


def model_problems(manifest: dict[str, Any]) -> list[str]:
    """What upstream's generated JobSet v1alpha2 models refuse: a wrong type (they are strict) or a field
    they do not know (their `from_dict` drops it, so it is missing from the round trip)."""
    from kubeflow_trainer_api.models.jobset_v1alpha2_job_set import JobsetV1alpha2JobSet
    from pydantic import ValidationError

    try:
        parsed = JobsetV1alpha2JobSet.from_dict(manifest)
    except ValidationError as error:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    return [f"{path}: unknown field" for path in _dropped(manifest, parsed.to_dict(), "")]


def _dropped(given: Any, kept: Any, path: str) -> list[str]:
    if isinstance(given, dict):
        return [
            found
            for key, value in given.items()
            for found in (
                _dropped(value, kept[key], f"{path}.{key}")
                if isinstance(kept, dict) and key in kept
                else [f"{path}.{key}"]
            )
        ]
    if isinstance(given, list) and isinstance(kept, list):
        return [
            f
            for i, (a, b) in enumerate(zip(given, kept, strict=True))
            for f in _dropped(a, b, f"{path}[{i}]")
        ]
    return []


def child_jobs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch/v1 Jobs the JobSet controller makes: `<jobset>-<replicatedJob>-<index>` of each template."""
    name = manifest["metadata"]["name"]
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-{rj['name']}-{index}",
                "namespace": manifest["metadata"]["namespace"],
            },
            "spec": rj["template"]["spec"],
        }
        for rj in manifest["spec"]["replicatedJobs"]
        for index in range(rj.get("replicas", 1))
    ]


def longest_pod_names(manifest: dict[str, Any]) -> list[str]:
    """The longest pod name of each replicated Job, as JobSet's webhook checks it (a DNS-1035 label):
    `<jobset>-<replicatedJob>-<last job index>-<last pod index>` and a 5-character random tail."""
    name = manifest["metadata"]["name"]
    return [
        f"{name}-{rj['name']}-{rj.get('replicas', 1) - 1}-{rj['template']['spec']['completions'] - 1}-abcde"
        for rj in manifest["spec"]["replicatedJobs"]
    ]
