"""No test module imports another test module (or a conftest): what tests share is in tests/support.

An AST scan of every module under tests/: an import of `tests.<tier>.test_*` or `tests.<tier>.conftest`
(as `import`, `from ... import`, or `from tests.<tier> import test_*`) fails the suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    """`tests.<...>.test_x` or `tests.<...>.conftest`."""
    parts = dotted.split(".")
    return (
        parts[0] == "tests" and len(parts) > 1 and (parts[-1].startswith("test_") or parts[-1] == "conftest")
    )


def imported_test_modules(tree: ast.AST, package: str) -> list[str]:
    """The test modules (dotted names) `tree` imports; `package` resolves relative imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if _is_test_module(base):
                found.append(base)
            found += [f"{base}.{a.name}" for a in node.names if _is_test_module(f"{base}.{a.name}")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "golden" not in p.parts)


def test_no_module_under_tests_imports_a_test_module():
    modules = _modules()
    assert len(modules) > 50  # the scan sees the suite
    offenders = []
    for path in modules:
        relative = path.relative_to(TESTS.parent)
        package = ".".join(relative.parent.parts)
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{relative}: {name}" for name in imported_test_modules(tree, package)]
    assert offenders == [], (
        "test modules imported by other modules; move what they share to tests/support/:\n"
        + "\n".join(offenders)
    )


@pytest.mark.parametrize(
    "source",
    [
        "from tests.unit.test_phases import NOW",
        "import tests.stages.test_train",
        "from tests.integration import test_operator",
        "from tests.integration.conftest import spec",
        "from .test_phases import NOW",
        "def f():\n    from tests.unit.test_chart import find",
    ],
)
def test_the_scan_flags_an_import_of_a_test_module(source):
    assert imported_test_modules(ast.parse(source), "tests.unit")


def test_the_scan_lets_support_and_library_imports_through():
    source = "from tests.support.chart import render\nfrom tests.unit import apiserver\nimport pytest"
    assert imported_test_modules(ast.parse(source), "tests.unit") == []
