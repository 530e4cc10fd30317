"""`distillery validate` refuses what `kubectl apply` and the API server refuse, and what the operator refuses.

Each bad document below goes, as the same YAML text, to the real `distillery validate` (its CLI, in
process) and to the other side: the generated CRD's structural schema (jsonschema), its CEL rules
(cel-python) and kubectl's reading of YAML and of the object (tests/support/kubectl_apply.py). Both
must refuse it. Rules the API server cannot see (the operator's cluster-only ones) are checked against
the operator's own parse (controller.reconcile.parse) instead, with `validate --target cluster`.
The examples, which both accept, guard against a validate that refuses everything.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery import cli
from distillery.contract.exit_codes import ExitCode
from distillery.controller import reconcile
from distillery.crd import build_crd
from tests.support.kubectl_apply import refusals, yaml_to_json

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD = build_crd()
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BASE = yaml.safe_load((ROOT / "examples" / "tiny-cluster.yaml").read_text())
DROP = object()


def edit(**changes: Any) -> str:
    """The cluster example with `a__b__c=value` set (DROP removes the field), as YAML text."""
    document = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return yaml.safe_dump(document, sort_keys=False)


BASE_TEXT = edit()

# id -> (YAML text, what is wrong); every class the issue names, and more.
BAD: dict[str, tuple[str, str]] = {
    "quoted-integer": (edit(spec__generation__shards="3"), "a string where the CRD says integer"),
    "string-boolean": (edit(spec__suspend="true"), "a string where the CRD says boolean"),
    "quoted-number": (edit(spec__training__learningRate="0.003"), "a string where the CRD says number"),
    "fraction-for-integer": (edit(spec__training__epochs=2.5), "a fraction where the CRD says integer"),
    "duplicate-key": (
        BASE_TEXT.replace("    model: models/student\n", "    model: models/student\n    model: other\n"),
        "a key written twice",
    ),
    "no-name": (edit(metadata=DROP), "no metadata.name"),
    "generate-name-only": (edit(metadata={"generateName": "tiny-"}), "apply needs a name"),
    "name-not-dns": (edit(metadata__name="Tiny_Job"), "a name that is no DNS-1123 subdomain"),
    "namespace-not-dns": (edit(metadata__namespace="ML.team"), "a namespace that is no DNS label"),
    "no-kind": (edit(kind=DROP), "no kind"),
    "misspelt-kind": (edit(kind="DistilationJob"), "a kind the group does not serve"),
    "wrong-version": (edit(apiVersion="distillery.dev/v1"), "a version the CRD does not serve"),
    "s3-one-slash": (edit(spec__data__train="s3:/bucket/train.jsonl"), "s3:/x is no URI and no path"),
    "other-scheme": (edit(spec__data__validation="gs://bucket/v.jsonl"), "gs:// is not supported"),
    "bucket-only": (edit(spec__output={"uri": "s3://models"}), "an s3 URI without a key"),
    "wrong-enum": (edit(spec__training__method="dpo"), "a value outside the enum"),
    "negative-count": (edit(spec__generation__shards=-1), "a count below its minimum"),
    "above-maximum": (edit(spec__generation__temperature=3), "a number above its maximum"),
    "bad-quantity": (
        edit(spec__teacher__resources={"limits": {"memory": "16 GB"}}),
        "no Kubernetes quantity",
    ),
    "quantity-of-wrong-type": (edit(spec__storage__pvc={"size": True}), "int-or-string given a boolean"),
    "unknown-field": (edit(spec__teacher__modle="x"), "a misspelt field"),
    "snake-case-field": (edit(spec__training__learning_rate=0.01), "the Python name, not the API's"),
    "unknown-top-level-field": (edit(specs={}), "a field beside spec"),
    "missing-required-section": (edit(spec__student=DROP), "no student"),
    "list-for-map": (edit(spec__teacher__nodeSelector=["gpu"]), "a list where the CRD says map"),
    "bad-toleration-operator": (edit(spec__training__tolerations=[{"operator": "Maybe"}]), "enum in a list"),
    "two-teacher-sources": (
        edit(spec__teacher__endpoint={"url": "http://x/v1", "model": "m"}),
        "a CEL rule: exactly one of model and endpoint",
    ),
    "kd-without-logprobs": (edit(spec__training__method="kd"), "a CEL rule across sections"),
    "gate-without-validation": (
        edit(spec__data__validation=DROP),
        "a CEL rule: the gate needs held-out data",
    ),
    "not-yaml": (BASE_TEXT.replace("  student:\n", "  student: [\n", 1), "YAML that does not parse"),
}

# What validate's line for each names: the field, or the cause when there is no field yet.
SAID = {
    "quoted-integer": "spec.generation.shards: input should be a valid integer",
    "string-boolean": "spec.suspend: input should be a valid boolean",
    "quoted-number": "spec.training.learningRate: input should be a valid number",
    "fraction-for-integer": "spec.training.epochs: input should be a valid integer",
    "duplicate-key": "duplicate key 'model'",
    "no-name": "metadata.name: is required",
    "generate-name-only": "metadata.name: is required",
    "name-not-dns": "metadata.name: expected a DNS-1123 subdomain",
    "namespace-not-dns": "metadata.namespace: expected a DNS-1123 label",
    "no-kind": "kind: is required",
    "misspelt-kind": "kind: distillery.dev has no kind 'DistilationJob'; did you mean 'DistillationJob'?",
    "wrong-version": "apiVersion: input should be 'distillery.dev/v1alpha1'",
    "s3-one-slash": "spec.data.train: expected a path on the job's storage or an s3://bucket/key URI",
    "other-scheme": "spec.data.validation: expected a path on the job's storage or an s3://bucket/key URI",
    "bucket-only": "spec.output.uri: expected a path on the job's storage or an s3://bucket/key URI",
    "wrong-enum": "spec.training.method: input should be 'sft', 'kd' or 'onPolicy'",
    "negative-count": "spec.generation.shards: input should be greater than or equal to 1",
    "above-maximum": "spec.generation.temperature: input should be less than or equal to 2",
    "bad-quantity": "spec.teacher.resources.limits.memory: expected a Kubernetes quantity",
    "quantity-of-wrong-type": "spec.storage.pvc.size: expected a Kubernetes quantity",
    "unknown-field": "spec.teacher.modle: is not a known field; did you mean 'model'?",
    "snake-case-field": "spec.training.learning_rate: is not a known field; did you mean 'learningRate'?",
    "unknown-top-level-field": "specs: is not a known field; did you mean 'spec'?",
    "missing-required-section": "spec.student: is required but missing",
    "list-for-map": "spec.teacher.nodeSelector: input should be an object",
    "bad-toleration-operator": "spec.training.tolerations[0].operator: input should be 'Exists' or 'Equal'",
    "two-teacher-sources": "spec.teacher.model: set exactly one of teacher.model",
    "kd-without-logprobs": "spec.generation.topLogprobs: is 0 but training.method is 'kd'",
    "gate-without-validation": "spec.data.validation: is empty but the quality gate needs held-out data",
    "not-yaml": "not valid YAML at line ",
}

# Refused by the operator (and `validate --target cluster`) only: the API server admits them, as the
# same models serve `distillery run`, where they are fine.
CLUSTER_ONLY: dict[str, tuple[str, str]] = {
    "no-claim": (edit(spec__storage={"path": "build/tiny"}), "storage.path, no storage.pvc"),
    "no-storage-at-all": (edit(spec__storage=DROP), "no storage.pvc"),
}


def as_json(text: str) -> str:
    (document,) = yaml_to_json(text)
    return json.dumps(document, indent=2)


def run_validate(capsys: pytest.CaptureFixture, path: Path, *options: str) -> tuple[int, str, str]:
    code = cli.main(["validate", *options, str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def write(tmp_path: Path):
    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path

    return write


def test_the_table_is_broad():
    assert len(BAD) >= 15
    assert set(SAID) == set(BAD)
    assert not refusals(BASE_TEXT, CRD), "the base of every bad case is itself admitted"


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("target", [(), ("--target", "cluster"), ("--target", "local")])
def test_both_refuse(name, target, write, capsys):
    text, why = BAD[name]
    assert refusals(text, CRD), f"the API server admits {name} ({why}): the case is not bad"
    code, out, err = run_validate(capsys, write(name, text), *target)
    assert code == ExitCode.INVALID_SPEC, f"validate passed {name} ({why}):\n{out}"
    assert f": {SAID[name]}" in err, err  # one line naming the field and what was expected
    assert "Traceback" not in err


@pytest.mark.parametrize("name", CLUSTER_ONLY)
def test_cluster_only_rules_are_the_operators(name, write, capsys):
    text, why = CLUSTER_ONLY[name]
    assert not refusals(text, CRD), f"the API server refuses {name}: it is not cluster-only"
    (document,) = yaml_to_json(text)
    job, problems = reconcile.parse({**document, "metadata": {**document["metadata"], "uid": "u-1"}})
    assert job is None and problems, f"the operator accepts {name} ({why})"
    code, _, err = run_validate(capsys, write(name, text), "--target", "cluster")
    assert code == ExitCode.INVALID_SPEC
    assert [line.split(": ", 1)[1] for line in err.strip().splitlines()] == problems  # the operator's words
    # Read from the spec (no claim): the target is `distillery run`, where the job is fine.
    code, out, _ = run_validate(capsys, write(name, text))
    assert code == 0 and "(target local" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted_by_both(path, capsys):
    text = path.read_text()
    documents = yaml_to_json(text)
    ours = [d for d in documents if d.get("kind") == "DistillationJob"]
    if ours:
        assert not refusals(yaml.safe_dump_all(ours), CRD)
    code, out, err = run_validate(capsys, path)
    assert code == 0, err
    assert out.count(": valid: DistillationJob") == len(ours)
    assert out.count(": skipped: ") == len(documents) - len(ours)


def test_a_directory_mixing_kinds_names_each_problem_and_skips_the_rest(tmp_path, capsys):
    (tmp_path / "apps" / "jobs").mkdir(parents=True)
    (tmp_path / "apps" / "claim.yaml").write_text((ROOT / "examples" / "tiny-claim.yaml").read_text())
    (tmp_path / "apps" / "jobs" / "good.yml").write_text(BASE_TEXT)
    (tmp_path / "apps" / "jobs" / "bad.json").write_text(as_json(BAD["unknown-field"][0]))
    (tmp_path / "apps" / "notes.txt").write_text("not a manifest")
    code, out, err = run_validate(capsys, tmp_path / "apps")
    assert code == ExitCode.INVALID_SPEC
    assert out.splitlines() == [
        f"{tmp_path}/apps/claim.yaml: document 1: skipped: PersistentVolumeClaim tiny-data",
        f"{tmp_path}/apps/claim.yaml: document 2: skipped: Pod tiny-data",
        f"{tmp_path}/apps/jobs/good.yml: valid: DistillationJob tiny (target cluster: storage.pvc is set)",
        "1 valid, 1 invalid, 2 skipped",
    ]
    assert err.splitlines() == [
        f"{tmp_path}/apps/jobs/bad.json: spec.teacher.modle: is not a known field; did you mean 'model'? "
        "(see docs/api.md)"
    ]


def test_stdin_is_read_with_a_dash():
    result = subprocess.run(
        [sys.executable, "-m", "distillery", "validate", "-"],
        input=BAD["duplicate-key"][0],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == ExitCode.INVALID_SPEC
    assert result.stderr.startswith("<stdin>: not valid YAML at line ")
    assert "duplicate key 'model' (first at line" in result.stderr


def test_a_document_kubectl_reads_differently_from_pyyaml_is_read_as_kubectl_reads_it(write, capsys):
    """`1e-3` is a number to kubectl (a string to PyYAML), `2.0` an integer once it is JSON, a date a string."""
    text = re.sub(
        r"learningRate: [0-9.e-]+",
        "learningRate: 1e-3",
        edit(spec__training__epochs=2.0, spec__data__systemPrompt="x"),
    )
    text = text.replace("systemPrompt: x", "systemPrompt: 2026-12-07")
    assert "learningRate: 1e-3" in text and "systemPrompt: 2026-12-07" in text
    assert not refusals(text, CRD)
    code, _, err = run_validate(capsys, write("kubectl-reading", text))
    assert code == 0, err


def test_a_misspelt_field_gets_the_closest_name(write, capsys):
    code, _, err = run_validate(capsys, write("typo", BAD["unknown-field"][0]))
    assert code == ExitCode.INVALID_SPEC
    assert err.strip().endswith(
        "spec.teacher.modle: is not a known field; did you mean 'model'? (see docs/api.md)"
    )
    _, _, err = run_validate(capsys, write("snake", BAD["snake-case-field"][0]))
    assert "spec.training.learning_rate: is not a known field; did you mean 'learningRate'?" in err


def test_a_kind_list_is_expanded_as_kubectl_expands_it(write, capsys):
    (job,) = yaml_to_json(BASE_TEXT)
    (claim, _) = yaml_to_json((ROOT / "examples" / "tiny-claim.yaml").read_text())
    bad = copy.deepcopy(job) | {"spec": {**job["spec"], "suspend": "yes"}}
    path = write("list", json.dumps({"apiVersion": "v1", "kind": "List", "items": [claim, job, bad]}))
    code, out, err = run_validate(capsys, path)
    assert code == ExitCode.INVALID_SPEC
    assert out.splitlines() == [
        f"{path}: items[0]: skipped: PersistentVolumeClaim tiny-data",
        f"{path}: items[1]: valid: DistillationJob tiny (target cluster: storage.pvc is set)",
        "1 valid, 1 invalid, 1 skipped",
    ]
    assert err.splitlines() == [
        f"{path}: items[2]: spec.suspend: input should be a valid boolean (got 'yes')"
    ]
