#!/usr/bin/env python3
"""Build the Grafana dashboards the Helm chart ships, with grafana-foundation-sdk.

    python hack/update_generated.py    # writes charts/distillery/dashboards/*.json (with the CRD)

The chart loads each JSON file into a ConfigMap for the Grafana sidecar. Tests parse
every expression (promql-parser), check each metric name against
the metrics modules (METRIC_MODULES), and run the expressions on a real Prometheus.

Label conventions the queries rely on (the chart's ServiceMonitor and PodMonitors set them;
tests/unit/test_monitoring_targets.py checks them on the real pods):
the operator's target has job="distillery-operator" and keeps the per-job `namespace` it
exports beside `distillery_job` (the DistillationJob's name); worker pods' and the teacher's
series get `namespace`, `distillery_job` and `stage` (and `job`, their scrape job, which the
queries do not use).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from distillery.contract import series  # noqa: E402  (the stage processes' series names)

DASHBOARD_DIR = ROOT / "charts" / "distillery" / "dashboards"
ALERTS_FILE = ROOT / "charts" / "distillery" / "rules" / "alerts.yaml"

OPERATOR = 'job="distillery-operator"'
# Per-job series the operator exports, filtered by the dashboard's variables.
JOB = 'namespace=~"$namespace", distillery_job=~"$distillery_job"'
ACTIVE_PHASES = "TeacherStarting|Generating|Training|Evaluating"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")


def worker(stage: str) -> str:
    """Matchers of one stage's worker pods for the selected jobs."""
    return f'{JOB}, stage="{stage}"'


def _query(expr: str, legend: str | None, ref: str) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    return query.legend_format(legend) if legend else query


def _targets(panel, queries):
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def graph(title, description, unit, *queries, width=8, height=8, stack=False, minimum=None, maximum=None):
    """A time series panel; `queries` are (expression, legend format) pairs."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(height)
        .span(width)
        .fill_opacity(25 if stack else 10)
        .legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    if stack:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    return _targets(panel, queries)


def _thresholds(*steps):
    """Absolute thresholds from (value, colour) pairs; the first value is the base (None)."""
    return (
        dashboard.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=color) for value, color in steps])
    )


def single(title, description, expr, unit="none", steps=((None, "green"),), width=4):
    """A one-number stat panel."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds(*steps))
    )
    return _targets(panel, [(expr, None)])


def bars(title, description, expr, legend, unit, steps, width=8, maximum=None):
    """A bar gauge: one bar per series (per job), e.g. progress or retention."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .min(0)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds(*steps))
    )
    if maximum is not None:
        panel = panel.max(maximum)
    return _targets(panel, [(expr, legend)])


def rate(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


def latency_quantiles(metric: str, matchers: str, by: str = "") -> list[tuple[str, str]]:
    """p50 / p95 / p99 of a histogram, optionally split by labels."""
    labels = f"le, {by}" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({labels}) ({rate(f'{metric}_bucket{{{matchers}}}')}))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def overview() -> dashboard.Dashboard:
    """Everything a platform engineer wants on one screen: jobs, the four stages, the operator."""
    per_job = "{{namespace}}/{{distillery_job}}"
    board = (
        dashboard.Dashboard("Distillery / Overview")
        .uid("distillery-overview")
        .description(
            "DistillationJobs by phase and progress; generation, training and evaluation; operator health."
        )
        .tags(["distillery", "llm", "kubernetes"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_label_variable("namespace", "Namespace", "distillery_job_phase"))
        .with_variable(
            _label_variable(
                "distillery_job", "DistillationJob", 'distillery_job_phase{namespace=~"$namespace"}'
            )
        )
    )

    board = board.with_row(dashboard.Row("Jobs"))
    for panel in (
        single(
            "Running jobs",
            "DistillationJobs in TeacherStarting, Generating, Training or Evaluating (all namespaces).",
            f'sum(distillery_jobs{{phase=~"{ACTIVE_PHASES}"}})',
        ),
        single(
            "Waiting jobs",
            "Pending or Suspended DistillationJobs (all namespaces).",
            'sum(distillery_jobs{phase=~"Pending|Suspended"})',
        ),
        single(
            "Succeeded jobs",
            "DistillationJobs that finished and passed.",
            'sum(distillery_jobs{phase="Succeeded"})',
        ),
        single(
            "Failed jobs",
            "DistillationJobs in phase Failed: `kubectl describe dj` says why.",
            'sum(distillery_jobs{phase="Failed"})',
            steps=((None, "green"), (1, "red")),
        ),
        single(
            "Operator up",
            "1 when Prometheus scrapes the operator, 0 (red) when the scrape fails.",
            f"max(up{{{OPERATOR}}})",
            steps=((None, "red"), (1, "green")),
        ),
        single(
            "Reconcile errors",
            "Share of the operator's reconciliations that ended in an error (last 5 minutes).",
            f'sum(rate(distillery_reconcile_total{{{OPERATOR}, result="error"}}[5m]))'
            f" / sum(rate(distillery_reconcile_total{{{OPERATOR}}}[5m]))",
            unit="percentunit",
            steps=((None, "green"), (0.05, "orange"), (0.2, "red")),
        ),
        graph(
            "Jobs by phase",
            "How many DistillationJobs are in each phase.",
            "none",
            ("sum by (phase) (distillery_jobs)", "{{phase}}"),
            width=12,
            stack=True,
        ),
        bars(
            "Progress of the current stage",
            "Fraction of its current stage each job has done (shards, epochs, evaluated examples).",
            f"max by (namespace, distillery_job, stage) (distillery_job_progress_ratio{{{JOB}}})",
            "{{namespace}}/{{distillery_job}} · {{stage}}",
            "percentunit",
            steps=((None, "blue"), (1, "green")),
            width=12,
            maximum=1,
        ),
    ):
        board = board.with_panel(panel)

    gen = worker("generate")
    gen_errors = f'{gen}, outcome="error"'
    board = board.with_row(dashboard.Row("Generation: the teacher writes the training data"))
    for panel in (
        graph(
            "Records accepted / s",
            "Teacher responses that passed the filters and were written, per job.",
            "reqps",
            (
                f"sum by (namespace, distillery_job) ({rate(f'{series.GENERATION_RECORDS}{{{gen}}}')})",
                per_job,
            ),
        ),
        graph(
            "Teacher tokens / s",
            "Tokens sent to (prompt) and received from (completion) the teacher, per job.",
            "short",
            (
                f"sum by (namespace, distillery_job, direction) ({rate(f'{series.GENERATION_TOKENS}{{{gen}}}')})",
                per_job + " {{direction}}",
            ),
        ),
        graph(
            "Teacher request error rate",
            "Share of teacher requests that failed for good, after retries, per job.",
            "percentunit",
            (
                f"sum by (namespace, distillery_job) ({rate(f'{series.GENERATION_REQUESTS}{{{gen_errors}}}')})"
                f" / sum by (namespace, distillery_job) ({rate(f'{series.GENERATION_REQUESTS}{{{gen}}}')})",
                per_job,
            ),
            minimum=0,
        ),
        graph(
            "Teacher latency",
            "Latency of successful teacher requests, as the generate pods see it.",
            "s",
            *latency_quantiles(series.GENERATION_REQUEST_DURATION, gen),
        ),
        graph(
            "Request outcomes / s",
            "Teacher requests by outcome: ok, retry (will be retried), error (given up).",
            "reqps",
            (f"sum by (outcome) ({rate(f'{series.GENERATION_REQUESTS}{{{gen}}}')})", "{{outcome}}"),
            stack=True,
        ),
        graph(
            "Rejected responses / s",
            "Teacher responses the filters refused, by reason (length, duplicate, wrong answer...).",
            "reqps",
            (f"sum by (reason) ({rate(f'{series.GENERATION_REJECTED}{{{gen}}}')})", "{{reason}}"),
            stack=True,
        ),
    ):
        board = board.with_panel(panel)

    train = worker("train")
    teacher = worker("teacher")
    board = board.with_row(dashboard.Row("Teacher: the vLLM server (its own /metrics)"))
    for panel in (
        graph(
            "Teacher KV-cache use",
            "Share of the teacher's KV cache in use: near 100% the server queues or preempts requests.",
            "percentunit",
            (f"max by (namespace, distillery_job) ({series.TEACHER_KV_CACHE_USAGE}{{{teacher}}})", per_job),
            minimum=0,
            maximum=1,
        ),
        graph(
            "Teacher requests waiting / running",
            "Requests queued in the teacher and in its running batch: a long queue with a full KV cache "
            "means spec.generation.concurrency is above what the teacher serves.",
            "short",
            (
                f"sum by (namespace, distillery_job) ({series.TEACHER_REQUESTS_WAITING}{{{teacher}}})",
                per_job + " waiting",
            ),
            (
                f"sum by (namespace, distillery_job) ({series.TEACHER_REQUESTS_RUNNING}{{{teacher}}})",
                per_job + " running",
            ),
        ),
        graph(
            "Teacher tokens / s (vLLM)",
            "Tokens the teacher generates and prefills per second, as vLLM counts them.",
            "short",
            (
                f"sum by (namespace, distillery_job) ({rate(f'{series.TEACHER_GENERATION_TOKENS}{{{teacher}}}')})",
                per_job + " generated",
            ),
            (
                f"sum by (namespace, distillery_job) ({rate(f'{series.TEACHER_PROMPT_TOKENS}{{{teacher}}}')})",
                per_job + " prompt",
            ),
        ),
    ):
        board = board.with_panel(panel)

    board = board.with_row(dashboard.Row("Training: the student learns"))
    for panel in (
        graph(
            "Loss",
            "Training loss of the latest update, validation loss after the latest epoch, and (method onPolicy) "
            "the reverse KL to the teacher of the latest on-policy update, per sampled token.",
            "none",
            (f"{series.TRAIN_LOSS}{{{train}}}", per_job + " train"),
            (f"{series.TRAIN_VALIDATION_LOSS}{{{train}}}", per_job + " validation"),
            (f"{series.TRAIN_ON_POLICY_LOSS}{{{train}}}", per_job + " on-policy"),
        ),
        graph(
            "Training tokens / s",
            "Real (non-padding) tokens per second the student trains on.",
            "short",
            (f"sum by (namespace, distillery_job) ({series.TRAIN_TOKENS_PER_SECOND}{{{train}}})", per_job),
        ),
        graph(
            "Epochs done",
            "Epochs of training done (fractional), per job.",
            "none",
            (f"max by (namespace, distillery_job) ({series.TRAIN_EPOCH}{{{train}}})", per_job),
            minimum=0,
        ),
    ):
        board = board.with_panel(panel)

    evaluate = worker("evaluate")
    board = board.with_row(dashboard.Row("Evaluation: student vs teacher"))
    for panel in (
        bars(
            "Retention",
            "Student score divided by the teacher's: the quality gate's spec.evaluation.gate.minRetention.",
            f"max by (namespace, distillery_job) (distillery_job_retention_ratio{{{JOB}}})",
            per_job,
            "percentunit",
            steps=((None, "red"), (0.8, "orange"), (0.9, "green")),
        ),
        bars(
            "Scores",
            "Task score (0-1) of each compared model: teacher, baseline student, distilled student.",
            f"max by (namespace, distillery_job, model) (distillery_job_eval_score{{{JOB}}})",
            per_job + " {{model}}",
            "percentunit",
            steps=((None, "blue"),),
            maximum=1,
        ),
        graph(
            "Response latency by model",
            "Per-response latency quantiles of each compared model, as measured by the evaluate pod.",
            "s",
            (
                f"max by (namespace, distillery_job, model, percentile) ({series.EVAL_LATENCY}{{{evaluate}}})",
                per_job + " {{model}} p{{percentile}}",
            ),
        ),
    ):
        board = board.with_panel(panel)

    board = board.with_row(dashboard.Row("Cost"))
    gpu_hours = f"sum by (namespace, distillery_job) (distillery_job_gpu_seconds{{{JOB}}}) / 3600"
    for panel in (
        graph(
            "GPU-hours by job",
            "GPUs held x time so far: the teacher from ready to removed, each stage's pods while they ran.",
            "none",
            (gpu_hours, per_job),
        ),
        graph(
            "GPU-hours by stage",
            "Where the GPU time went, summed over the selected jobs.",
            "none",
            (f"sum by (stage) (distillery_job_gpu_seconds{{{JOB}}}) / 3600", "{{stage}}"),
            stack=True,
        ),
        graph(
            "Retention per GPU-hour",
            "Student score / teacher score, per GPU-hour the job used: quality for the money.",
            "none",
            (
                f"max by (namespace, distillery_job) (distillery_job_retention_ratio{{{JOB}}}) / ({gpu_hours})",
                per_job,
            ),
        ),
        graph(
            "Price",
            "GPU-hours x the operator's price per GPU-hour (chart value cost.gpuHourPrices); empty without one.",
            "none",
            (
                f"sum by (namespace, distillery_job, currency) (distillery_job_price{{{JOB}}})",
                per_job + " {{currency}}",
            ),
        ),
    ):
        board = board.with_panel(panel)

    board = board.with_row(dashboard.Row("Operator"))
    for panel in (
        graph(
            "Reconciliations / s",
            "Reconciliations of DistillationJobs by result: ok, retry (waiting on something), error.",
            "ops",
            (f"sum by (result) ({rate(f'distillery_reconcile_total{{{OPERATOR}}}')})", "{{result}}"),
            stack=True,
        ),
        graph(
            "Reconcile latency",
            "Time one reconciliation takes, API calls included.",
            "s",
            *latency_quantiles("distillery_reconcile_duration_seconds", OPERATOR),
        ),
        graph(
            "Operator faults / s",
            "The operator's own faults, by cause: reconciliations that failed and were retried with backoff "
            "(throttled, server_error, timeout, unreachable, refused; unexpected is a bug: see the operator's "
            "log), and Kubernetes API requests it retried at once.",
            "ops",
            (
                f"sum by (reason) ({rate(f'distillery_reconcile_errors_total{{{OPERATOR}}}')})",
                "reconcile {{reason}}",
            ),
            (
                f"sum by (reason) ({rate(f'distillery_operator_api_retries_total{{{OPERATOR}}}')})",
                "request {{reason}}",
            ),
            stack=True,
        ),
        graph(
            "Stage restarts",
            "Restarts of each stage's pods so far, per job, as the operator sees them: a stage Job's failed "
            "(and replaced) pods plus its containers' restarts, the teacher's container restarts. A step up is "
            "a fault the job got past; each is also a Warning Event (reason Restarted) on the DistillationJob.",
            "none",
            (
                f"max by (namespace, distillery_job, stage) (distillery_job_stage_restarts{{{JOB}}})",
                per_job + " {{stage}}",
            ),
        ),
        graph(
            "Mean stage duration (24 h)",
            "Mean wall time of the stages that finished in the last 24 hours.",
            "s",
            (
                f"sum by (stage) (increase(distillery_stage_duration_seconds_sum{{{OPERATOR}}}[1d]))"
                f" / sum by (stage) (increase(distillery_stage_duration_seconds_count{{{OPERATOR}}}[1d]))",
                "{{stage}}",
            ),
        ),
        graph(
            "Objects created / s",
            "Child objects (Deployments, Services, Jobs, PVCs) the operator created, by kind.",
            "ops",
            (f"sum by (kind) ({rate(f'distillery_children_created_total{{{OPERATOR}}}')})", "{{kind}}"),
        ),
        graph(
            "Operator memory",
            "Resident memory of the operator process.",
            "bytes",
            (f"process_resident_memory_bytes{{{OPERATOR}}}", "{{pod}}{{instance}}"),
        ),
        graph(
            "Operator CPU",
            "CPU cores the operator process uses.",
            "short",
            (rate(f"process_cpu_seconds_total{{{OPERATOR}}}"), "{{pod}}{{instance}}"),
        ),
    ):
        board = board.with_panel(panel)
    # Grafana wants a unique id per panel (links and "view panel" use it).
    for number, panel in enumerate(board.build().panels, start=1):
        panel.id_val = number
    return board


def _label_variable(name: str, label: str, selector: str) -> dashboard.QueryVariable:
    """A multi-value variable over one label's values; "All" matches everything."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({selector}, {name})")
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def render(board: dashboard.Dashboard) -> str:
    """The dashboard as stable, diffable JSON."""
    return json.dumps(json.loads(json.dumps(board.build(), cls=JSONEncoder)), indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[Path, str]:
    return {DASHBOARD_DIR / "distillery-overview.json": render(overview())}


# ------------------------------------------------------------------ reading dashboards back

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def panel_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel, rows included."""
    found = []
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner.get("title", ""), target["expr"]))
    return found


def variable_selectors(board: dict) -> list[tuple[str, str]]:
    """(variable name, series selector) of every `label_values(selector, label)` variable."""
    found = []
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(query)
            if not match:
                raise ValueError(
                    f"variable {variable['name']}: expected label_values(selector, label), got {query!r}"
                )
            found.append((variable["name"], match["selector"]))
    return found


def substitute_variables(expr: str) -> str:
    """Replace Grafana's variables with what Grafana would send for "All" / defaults."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
        .replace("$distillery_job", ".*")
    )


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression reads (after variable substitution)."""
    import promql_parser  # a dev dependency: only tests read dashboards back

    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:  # {__name__="..."} with no bare name
                names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(substitute_variables(expr)), visit)
    return names


# Series Prometheus makes itself for every target, not exported by any code.
PROMETHEUS_SERIES = frozenset({"up"})
# Series the teacher's vLLM exports (contract/series.py; tests/unit/test_dashboards.py checks them
# against the installed vLLM).
VLLM_SERIES = frozenset(series.TEACHER)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


# Each process's metrics module; its REGISTRY is what that process serves on /metrics.
METRIC_MODULES = (
    "distillery.controller.metrics",
    "distillery.generation.metrics",
    "distillery.training.metrics",
    "distillery.evaluation.metrics",
)


def exported_metric_names() -> set[str]:
    """Every series name the operator and the stage processes export: their registries (Distillery's
    series and the process collector's), with the suffixes each metric type adds (_total, _bucket,
    _sum, _count, _created)."""
    import importlib

    names = set()
    for module in METRIC_MODULES:
        for family in importlib.import_module(module).REGISTRY.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names | VLLM_SERIES


def alert_rules(path: Path = ALERTS_FILE) -> list[dict]:
    """The alerting rules of the chart's rule file."""
    import yaml

    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


if __name__ == "__main__":
    sys.exit("the dashboards are written with the other generated files: python hack/update_generated.py")
