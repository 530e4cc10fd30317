"""`distillery validate`: one clear line per problem, a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distillery.contract.exit_codes import ExitCode

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def distillery(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distillery", *args], capture_output=True, text=True, timeout=120
    )


def test_examples_are_valid():
    result = distillery(
        "validate", str(ROOT / "examples" / "tiny.yaml"), str(ROOT / "examples" / "distillation.yaml")
    )
    assert result.returncode == 0, result.stderr
    assert "tiny.yaml: valid" in result.stdout


def test_bad_file_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: distillery.dev/v1alpha1\nkind: DistillationJob\nmetadata: {name: b}\nspec:\n"
        "  teacher: {model: t}\n  student: {model: s}\n"
        "  data: {taskType: qa, train: t.jsonl}\n"
        "  generation: {shards: 0}\n  training: {learningRate: -1}\n"
    )
    result = distillery("validate", str(bad))
    assert result.returncode == ExitCode.INVALID_SPEC
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: spec.generation.shards: input should be greater than or equal to 1 (got 0)",
        f"{bad}: spec.training.learningRate: input should be greater than 0 (got -1)",
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("spec: [unclosed", "not valid YAML at line 1"),
        ("", "file is empty"),
        ("- 1\n- 2\n", "expected a DistillationJob mapping, got list"),
    ],
)
def test_unreadable_input(tmp_path, content, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = distillery("validate", str(bad))
    assert result.returncode == ExitCode.INVALID_SPEC
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file():
    result = distillery("validate", "/nonexistent/job.yaml")
    assert result.returncode == ExitCode.INVALID_SPEC
    assert "cannot read /nonexistent/job.yaml" in result.stderr


def test_crd_command_prints_the_crd():
    result = distillery("crd")
    assert result.returncode == 0
    assert "kind: CustomResourceDefinition" in result.stdout
    assert (ROOT / "crds" / "distillationjobs.distillery.dev.yaml").read_text() == result.stdout


def test_every_entry_point_exists():
    result = distillery("--help")
    for command in ("validate", "crd", "run", "operator", "generate", "train", "evaluate"):
        assert command in result.stdout
