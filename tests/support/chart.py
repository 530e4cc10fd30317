"""The Helm chart as tests read it: `helm template` rendered with some values set, and its RBAC rules."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.tools import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "distillery"
RELEASE_NAMESPACE = "distillery-system"


def render(*values: str, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """What `helm template` renders with the chart's defaults and only `values` ("key=value") set."""
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = subprocess.run(
        [helm_binary(), "template", "distillery", str(CHART), "--namespace", namespace, *sets],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def granted(*roles: dict) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every rule of the roles; a wildcard fails."""
    out = set()
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                        out.add((group, resource, verb))
    return out


def only(docs: list[dict], kind: str, suffix: str = "") -> dict:
    """The one rendered object of `kind` whose name ends with `suffix`."""
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return doc


@dataclass(frozen=True)
class Images:
    """The operator and CPU worker images a run uses (the containers tier pins what it built)."""

    operator: str
    worker: str


def chart_objects(images: Images, namespace: str) -> list[dict[str, Any]]:
    """What `helm template` renders with the chart's defaults and only the image names set."""
    repository, tag = images.operator.split(":")
    worker_repository, worker_tag = images.worker.split(":")
    return render(
        f"operator.image.repository={repository}",
        f"operator.image.tag={tag}",
        f"workers.image.repository={worker_repository}",
        f"workers.image.tag={worker_tag}",
        namespace=namespace,
    )
