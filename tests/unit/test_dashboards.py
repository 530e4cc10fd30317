"""The chart's Grafana dashboards and alerts: fresh, parseable PromQL, and only metrics the
code exports (each process's metrics module: hack/dashboards.METRIC_MODULES). The real-Prometheus test runs them."""

from __future__ import annotations

import json

import promql_parser
import pytest

import dashboards
from dashboards import (
    alert_rules,
    exported_metric_names,
    generated_files,
    metric_names,
    panel_queries,
    variable_selectors,
)

pytestmark = pytest.mark.unit

EXPORTED = exported_metric_names() | dashboards.PROMETHEUS_SERIES
BOARDS = {path.name: json.loads(text) for path, text in generated_files().items()}
QUERIES = [(name, title, expr) for name, board in BOARDS.items() for title, expr in panel_queries(board)]
RULES = alert_rules()


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - EXPORTED


@pytest.mark.parametrize("path", list(generated_files()), ids=lambda p: p.name)
def test_dashboard_file_is_fresh(path):
    assert path.exists(), f"{path} is missing: run python hack/update_generated.py"
    assert path.read_text() == generated_files()[path], (
        f"{path} is stale: run python hack/update_generated.py"
    )


@pytest.mark.parametrize(("board", "title", "expr"), QUERIES, ids=[f"{b}:{t}" for b, t, _ in QUERIES])
def test_panel_query_parses_and_uses_exported_metrics(board, title, expr):
    assert metric_names(expr), f"{title}: reads no metric"
    assert not unknown_metrics(expr), f"{title}: {expr} uses metrics nobody exports: {unknown_metrics(expr)}"


@pytest.mark.parametrize("name", list(BOARDS))
def test_variables_read_exported_metrics(name):
    selectors = variable_selectors(BOARDS[name])
    assert {variable for variable, _ in selectors} == {"namespace", "distillery_job"}
    for variable, selector in selectors:
        assert not unknown_metrics(selector), (variable, selector)


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_alert_parses_uses_exported_metrics_and_says_what_to_do(rule):
    assert not unknown_metrics(rule["expr"]), (rule["alert"], unknown_metrics(rule["expr"]))
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_check_catches_what_it_should():
    """The checks above fail on a misspelt metric and on broken PromQL."""
    assert unknown_metrics(
        'sum(rate(distillery_generation_request_total{distillery_job=~"$distillery_job"}[$__rate_interval]))'
    ) == {"distillery_generation_request_total"}
    assert unknown_metrics("distillery_jobs_total") == {"distillery_jobs_total"}
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (phase (distillery_jobs)")


def test_alerts_cover_what_the_issue_asks():
    assert {r["alert"] for r in RULES} >= {
        "DistillationJobFailed",
        "DistillationGenerationStalled",
        "DistillationTeacherNotReady",
        "DistillationOperatorDown",
    }


def test_overview_shows_every_topic_on_one_screen():
    used = set().union(*(metric_names(expr) for _, _, expr in QUERIES))
    wanted = {
        "distillery_jobs": "jobs by phase",
        "distillery_job_progress_ratio": "progress per job",
        "distillery_generation_records_total": "generation throughput",
        "distillery_generation_requests_total": "generation error rate",
        "distillery_generation_request_duration_seconds_bucket": "teacher latency",
        "distillery_train_loss": "training loss",
        "distillery_train_tokens_per_second": "training tokens/s",
        "distillery_job_retention_ratio": "evaluation retention",
        "distillery_reconcile_total": "operator health",
        "up": "operator up",
    }
    missing = {topic for metric, topic in wanted.items() if metric not in used}
    assert not missing, missing


@pytest.mark.parametrize("name", list(BOARDS))
def test_panels_fit_the_grid_without_overlapping(name):
    taken: dict[tuple[int, int], str] = {}
    for panel in BOARDS[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
    ids = [panel["id"] for panel in BOARDS[name]["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_teacher_series_are_the_names_the_installed_vllm_exports():
    """vLLM's PrometheusStatLogger registers each name (a Counter's with `_total` added); read them
    from its source, as installed, so a rename in vLLM fails here rather than empties a panel."""
    import ast
    import importlib.util
    from pathlib import Path

    source = Path(importlib.util.find_spec("vllm.v1.metrics.loggers").origin).read_text()
    registered: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            kind = {"_gauge_cls": "gauge", "_counter_cls": "counter"}.get(node.func.attr)
            for keyword in node.keywords if kind else ():
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    registered[keyword.value.value] = kind
    exported = {name + ("_total" if kind == "counter" else "") for name, kind in registered.items()}
    assert "vllm:kv_cache_usage_perc" in exported and "vllm:generation_tokens_total" in exported
    assert set(dashboards.VLLM_SERIES) <= exported, set(dashboards.VLLM_SERIES) - exported
    used = set().union(*(metric_names(expr) for _, _, expr in QUERIES))
    assert {"vllm:kv_cache_usage_perc", "vllm:num_requests_waiting", "vllm:generation_tokens_total"} <= used
