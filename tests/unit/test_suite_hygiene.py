"""Every test function in tests/ asserts something (tests/CONTRACTS.md, "A test that can fail").

A test function counts as asserting when its body (nested functions and lambdas included) has an
`assert` statement, a `pytest.raises`/`pytest.warns`/`pytest.fail` (as a call or a `with`), or a call
to a helper whose name starts with `assert_`, `check_` or `expect_` (a function or a method, e.g.
`cluster.wait_phase` does not count, `self.assert_ok` does) or is named in HELPERS (a function that
raises on what it checks). Any other test function must be in ALLOWED with the reason it can
still fail. Both tables need a reason per entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]

PREFIXES = ("assert_", "check_", "expect_")
PYTEST_CHECKS = {"raises", "warns", "fail", "deprecated_call"}

# Helpers (by the name called) that raise on a violation, so a call is a check.
HELPERS: dict[str, str] = {
    "validate": "kubernetes_validate.validate and test_chart.validate raise on any schema violation",
    "parse_job": "distillery.errors.parse_job raises InvalidJob for any spec the API refuses",
}

# "path::function": why it can fail without an assertion of its own.
ALLOWED: dict[str, str] = {}


def _asserts(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name.startswith(PREFIXES) or name in HELPERS:
                return True
            if (
                isinstance(target, ast.Attribute)
                and name in PYTEST_CHECKS
                and isinstance(target.value, ast.Name)
                and target.value.id == "pytest"
            ):
                return True
    return False


def _test_functions() -> list[tuple[str, ast.AST]]:
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        relative = path.relative_to(TESTS.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                found.append((f"{relative}::{node.name}", node))
    return found


def test_every_test_function_asserts_something():
    functions = _test_functions()
    assert len(functions) > 300  # the scan sees the suite
    missing = sorted(name for name, node in functions if not _asserts(node) and name not in ALLOWED)
    assert missing == [], (
        "test functions with no assertion (assert, pytest.raises/warns/fail, or an assert_/check_/expect_ "
        "helper); add one, or an entry in ALLOWED with the reason the test can still fail:\n"
        + "\n".join(missing)
    )


def test_every_allowed_entry_exists_and_has_a_reason():
    names = {name for name, _ in _test_functions()}
    for helper, reason in HELPERS.items():
        assert len(reason.split()) >= 5, f"{helper}: say what it raises on"
    for name, reason in ALLOWED.items():
        assert name in names, f"{name} is allowed but no longer exists"
        assert len(reason.split()) >= 5, f"{name}: say why it can fail"


def test_the_scan_flags_a_test_without_an_assertion():
    """The check itself can fail: a body that only calls things is flagged, an asserting one is not."""
    silent = ast.parse("def test_x():\n    build()\n    cluster.wait_phase('a')\n").body[0]
    loud = [
        ast.parse(source).body[0]
        for source in (
            "def test_x():\n    assert f()\n",
            "def test_x():\n    with pytest.raises(ValueError):\n        f()\n",
            "def test_x():\n    self.assert_ok(f())\n",
            "def test_x():\n    check_manifest(m)\n",
        )
    ]
    assert not _asserts(silent)
    assert all(_asserts(node) for node in loud)
