"""What a Prometheus run by the Prometheus Operator scrapes when the chart's monitors are on: the
chart's REAL rendered ServiceMonitor and PodMonitors (helm template) applied, through the port of the
operator's selection and relabeling (tests/support/prometheus_operator.py), to the pods and Services
the operator REALLY makes for a job (manifests.build) and the chart's own operator pod.

Also checks the port itself on the rules it implements (Prometheus's relabeling, the operator's
selector and port rules), so that a target found here is one a real cluster would scrape.
"""

from __future__ import annotations

import importlib

import pytest

from distillery.api import DistillationJob
from distillery.contract.commands import METRICS_PORT, TEACHER_PORT
from distillery.manifests import BuildConfig
from tests.support import prometheus_operator as po
from tests.support.chart import RELEASE_NAMESPACE, render
from tests.support.monitoring import chart_pods, job_pods

pytestmark = pytest.mark.unit

JOB_NAMESPACE = "ml"
MONITORS_ON = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
)


def tiny_job(name: str = "support-bot", namespace: str = JOB_NAMESPACE) -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {
                "teacher": {"model": "models/teacher", "gpus": 0},
                "student": {"model": "models/student"},
                "data": {
                    "taskType": "qa",
                    "train": "data/train.jsonl",
                    "validation": "data/validation.jsonl",
                },
                "generation": {"shards": 2},
                "storage": {"pvc": {"size": "1Gi"}},
            },
        }
    )


@pytest.fixture(scope="module")
def cluster():
    """(monitors, Services, pods): the chart with its monitors on, and one tiny job's children."""
    docs = render(*MONITORS_ON)
    operator_pods, chart_services = chart_pods(docs)
    pods, services = job_pods(tiny_job(), BuildConfig())
    monitors = [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    return monitors, chart_services + services, operator_pods + pods


@pytest.fixture(scope="module")
def targets(cluster):
    monitors, services, pods = cluster
    return po.targets(monitors, services, pods)


def _of(targets, stage):
    return [t for t in targets if t.labels.get("stage") == stage]


# ------------------------------------------------------------------ the chart's monitors on the real pods


@pytest.mark.parametrize(("stage", "count"), [("generate", 2), ("train", 1), ("evaluate", 1)])
def test_every_worker_pod_is_scraped_on_its_metrics_port_labelled_with_its_job(
    cluster, targets, stage, count
):
    _, _, pods = cluster
    found = _of(targets, stage)
    pods_of_stage = [p for p in pods if p["metadata"]["labels"].get("distillery.dev/stage") == stage]
    assert len(found) == len(pods_of_stage) == count, (stage, [t.labels for t in targets])
    for target in found:
        pod = next(p for p in pods_of_stage if p["metadata"]["name"] == target.labels["pod"])
        assert target.address == f"{pod['status']['podIP']}:{METRICS_PORT}"
        assert target.metrics_path == "/metrics" and not target.honor_labels
        assert target.labels["namespace"] == JOB_NAMESPACE
        assert target.labels["distillery_job"] == "support-bot"
        assert target.labels["endpoint"] == "metrics"
        # The Prometheus Operator's default job for a PodMonitor: <its namespace>/<its name>.
        assert target.labels["job"] == f"{RELEASE_NAMESPACE}/distillery-workers"


def test_the_teacher_is_scraped_on_its_vllm_port(cluster, targets):
    (target,) = _of(targets, "teacher")
    _, _, pods = cluster
    (pod,) = [p for p in pods if p["metadata"]["labels"].get("distillery.dev/stage") == "teacher"]
    assert target.address == f"{pod['status']['podIP']}:{TEACHER_PORT}" and target.metrics_path == "/metrics"
    assert target.labels["distillery_job"] == "support-bot" and target.labels["namespace"] == JOB_NAMESPACE
    assert target.labels["job"] == f"{RELEASE_NAMESPACE}/distillery-teacher"
    # vLLM's names, however prometheus_client escaped the colon (tests/integration/test_prometheus.py
    # has a real Prometheus 2 scrape them through OpenMetrics, which writes `vllm_`).
    for name in ("vllm_kv_cache_usage_perc", "vllm:kv_cache_usage_perc"):
        relabeled = po.relabel({"__name__": name}, list(target.metric_relabelings))
        assert relabeled == {"__name__": "vllm:kv_cache_usage_perc"}


def test_the_operator_is_scraped_once_as_distillery_operator(cluster, targets):
    _, _, pods = cluster
    (operator_pod,) = [p for p in pods if p["metadata"]["namespace"] == RELEASE_NAMESPACE]
    (target,) = [t for t in targets if t.job_name.startswith("serviceMonitor/")]
    assert target.address == f"{operator_pod['status']['podIP']}:8080"
    assert target.labels["job"] == "distillery-operator" and target.honor_labels
    assert (
        target.labels["namespace"] == RELEASE_NAMESPACE
        and target.labels["pod"] == operator_pod["metadata"]["name"]
    )


def test_nothing_else_is_scraped(targets):
    """The check pod has no port, the operator pod is not a worker: exactly 2 + 1 + 1 workers, the
    teacher and the operator."""
    assert sorted(t.labels.get("stage", "-") for t in targets) == sorted(
        ["generate", "generate", "train", "evaluate", "teacher", "-"]
    )


def test_a_job_in_a_namespace_the_pod_monitor_does_not_select_is_not_scraped():
    docs = render(*MONITORS_ON, "metrics.podMonitor.namespaceSelector.matchNames={research}")
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    pods, _ = job_pods(tiny_job(), BuildConfig())
    assert po.targets(monitors, [], pods) == []
    pods, _ = job_pods(tiny_job(namespace="research"), BuildConfig())
    assert {t.labels["namespace"] for t in po.targets(monitors, [], pods)} == {"research"}


def test_user_relabelings_come_after_the_generated_ones():
    docs = render(
        *MONITORS_ON,
        "metrics.podMonitor.relabelings[0].targetLabel=cluster",
        "metrics.podMonitor.relabelings[0].replacement=gpu-east",
    )
    pods, _ = job_pods(tiny_job(), BuildConfig())
    found = po.targets([d for d in docs if d["kind"] == "PodMonitor"], [], pods)
    assert found and all(t.labels["cluster"] == "gpu-east" for t in found)


# ------------------------------------------------------------------ honor_labels stays sane

REGISTRIES = {
    "operator": "distillery.controller.metrics",
    "generate": "distillery.generation.metrics",
    "train": "distillery.training.metrics",
    "evaluate": "distillery.evaluation.metrics",
}


def _exported_label_names(module: str) -> set[str]:
    registry = importlib.import_module(module).REGISTRY
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.update(sample.labels)
    # Labelled metrics with no child yet have no samples; their label names are on the collector.
    for collector in list(registry._collector_to_names):  # prometheus_client keeps no public list
        names.update(getattr(collector, "_labelnames", ()))
    return names


def test_the_operator_series_clobber_no_target_label_but_namespace(targets):
    """The ServiceMonitor honours the operator's labels: only `namespace` (the DistillationJob's) may
    win over the target's; `job`, `instance`, `pod`... stay Prometheus's."""
    (target,) = [t for t in targets if t.job_name.startswith("serviceMonitor/")]
    exported = _exported_label_names(REGISTRIES["operator"])
    assert "distillery_job" in exported
    assert exported & set(target.labels) == {"namespace"}


@pytest.mark.parametrize("stage", ["generate", "train", "evaluate"])
def test_worker_series_have_no_label_a_target_label_would_rename(targets, stage):
    (target, *_) = _of(targets, stage)
    assert not _exported_label_names(REGISTRIES[stage]) & set(target.labels)


# ------------------------------------------------------------------ the port itself


def test_relabeling_follows_prometheus_rules():
    labels = {"__meta_a": "x", "__meta_b": "y", "keep": "1"}
    # Default action replace, regex (.*), replacement $1, separator ;.
    assert (
        po.relabel(labels, [{"source_labels": ["__meta_a", "__meta_b"], "target_label": "t"}])["t"] == "x;y"
    )
    # Regexes are anchored: "x" does not match "xx".
    assert po.relabel({"a": "xx"}, [{"action": "keep", "source_labels": ["a"], "regex": "x"}]) is None
    # A replace that yields "" deletes the target label; one that does not match leaves it.
    assert "keep" not in po.relabel(labels, [{"source_labels": ["missing"], "target_label": "keep"}])
    assert (
        po.relabel(labels, [{"source_labels": ["__meta_a"], "regex": "z", "target_label": "keep"}])["keep"]
        == "1"
    )
    assert po.relabel(labels, [{"action": "labelmap", "regex": "__meta_(.+)"}])["b"] == "y"
    assert po.relabel(labels, [{"target_label": "t", "replacement": "${1}-$$"}])["t"] == "-$"


def test_selector_and_port_rules_follow_the_operator():
    monitor = {
        "kind": "PodMonitor",
        "metadata": {"name": "m", "namespace": "mon"},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "x"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "skip", "operator": "DoesNotExist"},
                ],
            },
            "podMetricsEndpoints": [{"port": "web"}],
        },
    }

    def pod(labels, port="web", namespace="mon", phase="Running"):
        container = {"name": "c", "ports": [{"name": port, "containerPort": 80}]}
        return {
            "metadata": {"name": "p", "namespace": namespace, "labels": labels},
            "spec": {"containers": [container]},
            "status": {"podIP": "10.0.0.1", "phase": phase},
        }

    good = {"app.kubernetes.io/name": "x", "tier": "b"}
    (target,) = po.pod_monitor_targets(monitor, [pod(good)])
    assert target.labels == {
        "namespace": "mon",
        "container": "c",
        "pod": "p",
        "job": "mon/m",
        "endpoint": "web",
        "instance": "10.0.0.1:80",
    }
    assert po.pod_monitor_targets(monitor, [pod({**good, "tier": "c"})]) == []
    assert po.pod_monitor_targets(monitor, [pod({**good, "skip": ""})]) == []
    assert po.pod_monitor_targets(monitor, [pod(good, port="metrics")]) == []
    assert po.pod_monitor_targets(monitor, [pod(good, phase="Succeeded")]) == []
    # No namespaceSelector: the monitor's own namespace only.
    assert po.pod_monitor_targets(monitor, [pod(good, namespace="other")]) == []
    # jobLabel: the pod label's value, when it has one.
    monitor["spec"]["jobLabel"] = "tier"
    assert [t.labels["job"] for t in po.pod_monitor_targets(monitor, [pod(good)])] == ["b"]


# ------------------------------------------------------------------ the teacher's NetworkPolicy


def _prometheus_pod(namespace: str = "monitoring") -> dict:
    labels = {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": "kube-prometheus-stack"}
    return {"metadata": {"name": "prometheus-0", "namespace": namespace, "labels": labels}}


def _teacher_policy_and_target(*values: str):
    """The teacher's NetworkPolicy as the operator builds it with the settings the chart gives it,
    and the teacher target the chart's PodMonitor makes."""
    from distillery.controller.settings import from_environment
    from distillery.manifests import build

    docs = render(*MONITORS_ON, *values)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = from_environment(env).build_config()
    job = tiny_job()
    pods, _ = job_pods(job, config)
    (target,) = _of(po.targets([d for d in docs if d["kind"] == "PodMonitor"], [], pods), "teacher")
    return build("teacher-policy", job, config), int(target.address.rsplit(":", 1)[1])


def test_the_teacher_admits_the_prometheus_the_chart_names_on_its_scrape_port():
    from tests.support.monitoring import admits

    policy, port = _teacher_policy_and_target("metrics.scraper.namespace=monitoring")
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    assert admits(policy, _prometheus_pod(), monitoring, port)
    # Not another pod of that namespace, nor a Prometheus elsewhere.
    other = {"metadata": {"name": "x", "namespace": "monitoring", "labels": {"app": "grafana"}}}
    assert not admits(policy, other, monitoring, port)
    assert not admits(policy, _prometheus_pod("ml"), {"kubernetes.io/metadata.name": "ml"}, port)


def test_without_a_scraper_the_teacher_refuses_the_scrape():
    from tests.support.monitoring import admits

    policy, port = _teacher_policy_and_target()
    assert not admits(policy, _prometheus_pod(), {"kubernetes.io/metadata.name": "monitoring"}, port)


def test_the_docs_command_labels_every_monitor_and_rule_for_kube_prometheus_stack():
    """kube-prometheus-stack selects ServiceMonitors, PodMonitors and PrometheusRules by `release`."""
    import shlex

    from tests.support.doc_commands import ROOT, blocks

    # docs/monitoring.md's helm upgrade: its values rendered here (it needs a release to run).
    (command,) = blocks(ROOT / "docs" / "monitoring.md")[0].commands
    words = shlex.split(command)
    values = [words[i + 1].replace("RELEASE", "kps") for i, word in enumerate(words) if word == "--set"]
    docs = render(*values)
    kinds = [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
    assert sorted(d["kind"] for d in kinds) == [
        "PodMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    assert all(d["metadata"]["labels"].get("release") == "kps" for d in kinds), [d["metadata"] for d in kinds]
