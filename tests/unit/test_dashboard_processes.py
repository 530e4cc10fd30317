"""Each panel and alert reads every series from the process that exports it, not from "some process".

tests/unit/test_dashboards.py checks that a metric name is exported by any process; that passed a panel
reading `process_cpu_seconds_total` with no selector (the operator's and every worker's CPU summed) or a
worker series the operator never serves. Here each vector selector of each expression must resolve to
exactly one process: its metric exported by one process only, or its label matchers naming the process the
way the chart's monitors label the targets (tests/support/prometheus_operator.py derives those labels from
the chart; the real Prometheus test scrapes them): the operator's targets carry `job="distillery-operator"`,
a worker's and the teacher's carry `stage="<stage>"`.
"""

from __future__ import annotations

import importlib
import json

import promql_parser
import pytest

import dashboards
from dashboards import METRIC_MODULES, alert_rules, generated_files, panel_queries, substitute_variables

pytestmark = pytest.mark.unit

# The process each metrics module is served by, and the target label that names it.
PROCESS_OF_MODULE = {
    "distillery.controller.metrics": "operator",
    "distillery.generation.metrics": "generate",
    "distillery.training.metrics": "train",
    "distillery.evaluation.metrics": "evaluate",
}
OPERATOR_SCRAPE_JOB = "distillery-operator"  # the ServiceMonitor's jobLabel value (charts/.../_helpers.tpl)


def exported_by_process() -> dict[str, set[str]]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    out: dict[str, set[str]] = {}
    for module in METRIC_MODULES:
        names = out.setdefault(PROCESS_OF_MODULE[module], set())
        for family in importlib.import_module(module).REGISTRY.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    out["teacher"] = set(dashboards.VLLM_SERIES)
    return out


EXPORTED = exported_by_process()


def named_process(matchers) -> str | None:
    """The process a selector's equality matchers name (job= for the operator, stage= for the others)."""
    for m in matchers:
        if str(m.op) not in ("MatchOp.Equal", "="):
            continue
        if m.name == "job" and m.value == OPERATOR_SCRAPE_JOB:
            return "operator"
        if m.name == "stage" and m.value in EXPORTED:
            return m.value
    return None


def unresolved(expr: str) -> list[str]:
    """Selectors of `expr` that do not resolve to exactly one process that exports their metric."""
    problems: list[str] = []

    def visit(node):
        if not isinstance(node, promql_parser.VectorSelector):
            return
        name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), "")
        if name in dashboards.PROMETHEUS_SERIES:
            return
        exporters = {process for process, names in EXPORTED.items() if name in names}
        named = named_process(node.matchers.matchers)
        if not exporters:
            problems.append(f"{name}: no process exports it")
        elif len(exporters) == 1:
            # One exporter: a `stage` matcher may be the series' own label (the operator's per-stage series);
            # only a selector that names the operator's scrape job for a worker's series is wrong.
            if named == "operator" and exporters != {"operator"}:
                problems.append(f"{name}: selected from the operator, which does not export it")
        elif named not in exporters:
            problems.append(f"{name}: exported by {sorted(exporters)}; say which (job=/stage=)")

    promql_parser.walk(promql_parser.parse(substitute_variables(expr)), visit)
    return problems


BOARDS = {path.name: json.loads(text) for path, text in generated_files().items()}
EXPRESSIONS = [
    *((f"{board}:{title}", expr) for board, b in BOARDS.items() for title, expr in panel_queries(b)),
    *((f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()),
]


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[where for where, _ in EXPRESSIONS])
def test_each_selector_reads_the_process_that_exports_its_series(where, expr):
    assert unresolved(expr) == [], where


def test_the_check_catches_a_series_read_from_the_wrong_process():
    assert unresolved("sum(rate(process_cpu_seconds_total[5m]))"), "shared by every process: which one?"
    assert unresolved('sum(distillery_train_loss{job="distillery-operator"})'), "the operator has no loss"
    assert unresolved('rate(process_cpu_seconds_total{stage="nope"}[5m])')
    assert not unresolved('rate(process_cpu_seconds_total{stage="train"}[5m])')
    assert not unresolved('rate(process_cpu_seconds_total{job="distillery-operator"}[5m])')
    assert not unresolved("max(distillery_train_loss)")
