"""The committed CRD and docs are what the models generate, the CRD is valid Kubernetes,
and every example validates against its schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from distillery.crd import build_crd
from update_generated import generated_files

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    p
    for p in (ROOT / "examples").rglob("*.yaml")
    if any((d or {}).get("kind") == "DistillationJob" for d in yaml.safe_load_all(p.read_text()))
)


@pytest.mark.parametrize("path", list(generated_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_file_is_fresh(path):
    assert path.exists(), f"{path} is missing: run python hack/update_generated.py"
    assert path.read_text() == generated_files()[path], (
        f"{path} is stale: run python hack/update_generated.py"
    )


def test_crd_is_a_valid_apiextensions_v1_object():
    kubernetes_validate.validate(build_crd(), "1.31.0", strict=True)


def _walk(node, path="$"):
    yield path, node
    for key in ("properties",):
        for name, child in node.get(key, {}).items():
            yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path} has no type"


def test_crd_basics():
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["dj"]
    assert version["subresources"] == {"status": {}}
    # The printer columns are checked against the schema (each jsonPath names a field of the
    # column's type) in test_crd_apiserver.py, not pinned by name here.
    assert version["additionalPrinterColumns"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["training"]["properties"]["learningRate"]["default"] == 2e-5
    assert spec["training"]["properties"]["method"]["enum"] == ["sft", "kd", "onPolicy"]
    assert spec["generation"]["properties"]["topP"] == {
        "type": "number",
        "description": spec["generation"]["properties"]["topP"]["description"],
        "default": 1.0,
        "maximum": 1.0,
        "minimum": 0.0,
        "exclusiveMinimum": True,
    }


def _openapi_validator():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # OpenAPI 3.0's boolean exclusiveMinimum is draft 4 semantics.
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_schema(path):
    errors = sorted(_openapi_validator().iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_schema_rejects_what_the_models_reject():
    document = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    document["spec"]["generation"]["shards"] = 0
    document["spec"]["training"]["method"] = "dpo"
    messages = sorted(e.message for e in _openapi_validator().iter_errors(document))
    assert any("'dpo' is not one of" in m for m in messages), messages
    assert any("0 is less than the minimum of 1" in m for m in messages), messages


def test_examples_found():
    assert {p.name for p in EXAMPLES} >= {"tiny.yaml", "distillation.yaml"}
