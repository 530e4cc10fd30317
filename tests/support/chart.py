"""The Helm chart as tests read it: `helm template` rendered with some values set, and its RBAC rules."""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.tools import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "distillery"
FULL_VALUES = CHART / "ci" / "full-values.yaml"  # every optional object on (the chart's CI values)
RELEASE_NAMESPACE = "distillery-system"


def render(
    *values: str, files: tuple[str, ...] = (), crds: bool = False, namespace: str = RELEASE_NAMESPACE
) -> list[dict[str, Any]]:
    """What `helm template` renders with the chart's defaults, the values `files` and only `values`
    ("key=value") set; the CRDs too with `crds`. Each call gets its own copy of the objects."""
    return copy.deepcopy(list(_rendered(values, files, crds, namespace)))


@cache
def _rendered(
    values: tuple[str, ...], files: tuple[str, ...], crds: bool, namespace: str
) -> tuple[dict, ...]:
    sets = [arg for value in values for arg in ("--set", value)]
    given = [arg for file in files for arg in ("-f", file)]
    command = [helm_binary(), "template", "distillery", str(CHART), "--namespace", namespace, *given, *sets]
    result = subprocess.run(
        [*command, *(["--include-crds"] if crds else [])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


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


def find(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    """The one rendered object of `kind` whose name ends with `name_suffix`."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in matches]}"
    )
    return matches[0]


@dataclass(frozen=True)
class Images:
    """The operator and CPU worker images a run's pods name. The containers tier publishes what it
    built to the loopback registry and names them there (`127.0.0.1:PORT/distillery/operator:TAG`);
    `local_operator`/`local_worker` are the same images pinned in the engine by id
    (`distillery-operator:tier-<id>`), for what runs outside a pod (sandboxes, builds, plain runs)."""

    operator: str
    worker: str
    local_operator: str = ""
    local_worker: str = ""

    @property
    def registry(self) -> str:
        """The registry path both images are under ("" for local names): the chart's imageRegistry."""
        registry = split_image(self.operator)[0]
        assert split_image(self.worker)[0] == registry, f"images under different registries: {self}"
        return registry


def split_image(image: str) -> tuple[str, str, str]:
    """(registry path, repository, tag) of `REGISTRY/PATH/REPOSITORY:TAG` as the chart's values name
    them: `127.0.0.1:5055/distillery/operator:1` is ("127.0.0.1:5055/distillery", "operator", "1")."""
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image!r} has no tag"
    registry, _, repository = name.rpartition("/")
    return registry, repository, tag


def chart_objects(images: Images, namespace: str) -> list[dict[str, Any]]:
    """What `helm template` renders with the chart's defaults and only the image names set:
    imageRegistry the images' registry ("" for local names, named in full), each repository and tag."""
    _, repository, tag = split_image(images.operator)
    _, worker_repository, worker_tag = split_image(images.worker)
    return render(
        f"imageRegistry={images.registry}",
        f"operator.image.repository={repository}",
        f"operator.image.tag={tag}",
        f"workers.image.repository={worker_repository}",
        f"workers.image.tag={worker_tag}",
        namespace=namespace,
    )


def assert_pulled_from_registry(images: Images, records: list[Any], pulls: list[str]) -> None:
    """Every container ran an image named in the images' registry, and the runtime pulled each of
    those images from it exactly once this session (`DockerRuntime.records`, `.pulls`)."""
    assert images.registry, f"the images are not registry names: {images}"
    named = {record.image for record in records}
    assert named and all(image.startswith(f"{images.registry}/") for image in named), named
    assert all(pulls.count(image) == 1 for image in named), f"pulled {pulls}, ran {sorted(named)}"
