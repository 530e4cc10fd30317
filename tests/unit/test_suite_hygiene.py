"""Every test function in tests/ asserts something (tests/CONTRACTS.md, "A test that can fail").

A test function counts as asserting when its body (nested functions and lambdas included) has an
`assert` statement, a `pytest.raises`/`pytest.warns`/`pytest.fail` (as a call or a `with`), or a call
to a helper whose name starts with `assert_`, `check_` or `expect_` (a function or a method, e.g.
`cluster.wait_phase` does not count, `self.assert_ok` does) or is named in HELPERS (a function that
raises on what it checks) or is a scenario of SCENARIOS that asserts (a test that plays a scenario
shared with the RBAC test, tests/support/scenarios.py). Any other test function must be in ALLOWED with the reason it can
still fail. Both tables need a reason per entry.
"""

from __future__ import annotations

import ast
from functools import cache
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

# Modules of scenarios a test plays by calling them: each top-level function that asserts counts as a check.
SCENARIO_MODULES = [TESTS / "support" / "scenarios.py", TESTS / "support" / "ha_scenario.py"]

# "path::function": why it can fail without an assertion of its own.
ALLOWED: dict[str, str] = {}


def _asserts(function: ast.AST, scenarios: frozenset[str] | None = None) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if (
                name.startswith(PREFIXES)
                or name in HELPERS
                or name in (_scenarios() if scenarios is None else scenarios)
            ):
                return True
            if (
                isinstance(target, ast.Attribute)
                and name in PYTEST_CHECKS
                and isinstance(target.value, ast.Name)
                and target.value.id == "pytest"
            ):
                return True
    return False


@cache
def _scenarios() -> frozenset[str]:
    """The scenario functions (SCENARIO_MODULES) whose bodies assert."""
    return frozenset(
        node.name
        for path in SCENARIO_MODULES
        for node in ast.parse(path.read_text(), filename=str(path)).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _asserts(node, frozenset())
    )


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
    plays = ast.parse("async def test_x(cluster):\n    await suspend_and_resume(cluster)\n").body[0]
    unknown = ast.parse("async def test_x(cluster):\n    await not_a_scenario(cluster)\n").body[0]
    assert not _asserts(silent)
    assert all(_asserts(node) for node in loud)
    assert _asserts(plays) and not _asserts(unknown)
