"""The Helm chart, rendered by the real helm (hack/install-tools.sh): lint --strict, every
rendered object valid against the upstream schemas (Kubernetes, Prometheus Operator), and
the properties the issue asks for (CRD = crds/, hardened operator pod, documented values)."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dashboards import alert_rules
from tests.support.chart import CHART, FULL_VALUES, ROOT, find, render
from tests.support.chart import RELEASE_NAMESPACE as NAMESPACE
from tests.tools import helm_binary

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.31.0"
VALUE_SETS = {"defaults": (), "full": (str(FULL_VALUES),)}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=check)


def helm_template(values: str, *sets: str) -> list[dict]:
    """The chart rendered with one of VALUE_SETS and `sets` ("key=value"), CRDs included."""
    return render(*sets, files=VALUE_SETS[values], crds=True)


# ------------------------------------------------------------------ lint and schemas


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_strict(values):
    result = helm(
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        *[arg for file in VALUE_SETS[values] for arg in ("-f", file)],
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _prometheus_operator_model(kind: str):
    from cloudcoil.models.prometheus_operator import v1

    return getattr(v1, kind)


def _dropped_fields(given, kept, path="") -> list[str]:
    """Paths in `given` that a model round trip dropped: fields the schema does not know."""
    if isinstance(given, dict):
        assert isinstance(kept, dict), path
        dropped = [f"{path}.{key}" for key in given if key not in kept]
        return dropped + [
            p for key in given if key in kept for p in _dropped_fields(given[key], kept[key], f"{path}.{key}")
        ]
    if isinstance(given, list):
        return [
            p
            for i, (g, k) in enumerate(zip(given, kept, strict=True))
            for p in _dropped_fields(g, k, f"{path}[{i}]")
        ]
    return []


def validate(doc: dict, crds: dict[str, dict] | None = None) -> None:
    """Validate one rendered object against its upstream schema, refusing unknown fields.
    Objects of a CRD rendered alongside (kopf's peering) are checked against that CRD."""
    group = doc["apiVersion"].split("/")[0]
    if crds and (doc["kind"], group) in crds:
        version = crds[(doc["kind"], group)]["spec"]["versions"][0]
        jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
    elif doc["apiVersion"] == "monitoring.coreos.com/v1":
        model = _prometheus_operator_model(doc["kind"]).model_validate(doc)
        kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        dropped = _dropped_fields(doc, kept)
        assert not dropped, f"{doc['kind']}: fields unknown to the Prometheus Operator's CRD: {dropped}"
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_rendered_objects_validate_against_upstream_schemas(values):
    docs = helm_template(values)
    crds = {
        (d["spec"]["names"]["kind"], d["spec"]["group"]): d
        for d in docs
        if d["kind"] == "CustomResourceDefinition"
    }
    for doc in docs:
        try:
            validate(doc, crds)
        except Exception as error:  # name the object: a bare schema error does not
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {error}") from error


def test_schema_validation_catches_mistakes():
    """validate() fails on an unknown field and on a wrong type, for both kinds of schema."""
    monitor = json.loads(json.dumps(find(helm_template("full"), "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(AssertionError, match="honourLabels"):
        validate(monitor)
    deployment = json.loads(json.dumps(find(helm_template("defaults"), "Deployment")))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_default_render_has_exactly_the_core_objects():
    kinds = sorted(d["kind"] for d in helm_template("defaults"))
    expected = sorted(
        ["CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRoleBinding", "Service"]
        + (["ClusterRole"] if (CHART / "templates" / "clusterrole.yaml").exists() else [])
    )
    assert kinds == expected


def test_full_render_has_every_optional_object():
    kinds = {d["kind"] for d in helm_template("full")}
    assert kinds >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "Role", "RoleBinding"}


# ------------------------------------------------------------------ CRDs


def test_chart_crds_are_the_generated_crds():
    ours = sorted(p.name for p in (CHART / "crds").iterdir())
    theirs = sorted(p.name for p in (ROOT / "crds").iterdir())
    assert ours == theirs
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    rendered = find(helm_template("defaults"), "CustomResourceDefinition", ".distillery.dev")
    assert rendered == yaml.safe_load((ROOT / "crds" / ours[0]).read_text())


# ------------------------------------------------------------------ the operator pod


@pytest.mark.parametrize("values", VALUE_SETS)
def test_operator_pod_is_hardened_and_probed(values):
    deployment = find(helm_template(values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["command"] + container["args"][:1] == ["distillery", "operator", "--metrics-port=8080"]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert pod["serviceAccountName"] == find(helm_template(values), "ServiceAccount")["metadata"]["name"]


def test_standalone_by_default():
    deployment = find(helm_template("defaults"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert container["args"] == ["--metrics-port=8080"]
    docs = helm_template("defaults")
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    assert not [d for d in docs if "kopf.dev" in d["metadata"]["name"] or d["kind"].endswith("KopfPeering")]


def test_leader_election_runs_replicas_on_a_lease():
    docs = helm_template("full")
    deployment = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--leader-elect=distillery" in container["args"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    role = find(docs, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "distillery-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}
    ]
    binding = find(docs, "RoleBinding", "-leader-election")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_watched_namespaces_get_roles_not_cluster_wide_rights():
    docs = helm_template("full", "operator.watchNamespaces={team-a,team-b}")
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [a for a in container["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    roles = [
        d for d in docs if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-leader-election")
    ]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["list", "watch", "create", "delete"],
    } in (roles[0]["rules"])
    cluster_role = find(docs, "ClusterRole")
    granted = {(g, r) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def test_worker_images_reach_the_operator():
    def env(values):
        (container,) = find(helm_template(values), "Deployment")["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    # By default every image is where the release pushes it (hack/release.sh): imageRegistry/NAME:appVersion.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    registry = yaml.safe_load((CHART / "values.yaml").read_text())["imageRegistry"]
    defaults = env("defaults")
    assert defaults["DISTILLERY_WORKER_IMAGE"] == f"{registry}/worker-cpu:{chart['appVersion']}"
    assert defaults["DISTILLERY_WORKER_CUDA_IMAGE"] == f"{registry}/worker-cuda:{chart['appVersion']}"
    (operator,) = find(helm_template("defaults"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert operator["image"] == f"{registry}/operator:{chart['appVersion']}"
    # The operator's own defaults (no chart) name the same images.
    from distillery.manifests.common import BuildConfig

    assert (BuildConfig().worker_image, BuildConfig().worker_cuda_image) == (
        defaults["DISTILLERY_WORKER_IMAGE"],
        defaults["DISTILLERY_WORKER_CUDA_IMAGE"],
    )
    full = env("full")
    assert full["DISTILLERY_WORKER_IMAGE"] == "registry.example.com/distillery/worker-cpu:0.1.0-rc1"
    assert full["DISTILLERY_WORKER_CUDA_IMAGE"] == "registry.example.com/distillery/worker-cuda:0.1.0"
    assert full["DISTILLERY_LOG_FORMAT"] == "json"


def test_the_operator_refuses_to_start_with_images_or_prices_no_pod_could_use(monkeypatch, caplog):
    """The chart's rendered environment, read by the operator's own settings: fine as shipped; a worker
    image the kubelet could not parse (the chart's schema lets any repository through), or a price table
    it cannot read, stops `distillery operator` before it connects, naming the variable and the chart value."""
    from distillery import cli
    from distillery.controller.settings import SettingsError, from_environment

    def env(*extra):
        (container,) = find(helm_template("full", *extra), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ]
        return {e["name"]: e["value"] for e in container["env"] if "value" in e}

    from_environment(env())  # no SettingsError
    bad = {
        **env("workers.image.repository=Worker"),
        "DISTILLERY_GPU_HOUR_PRICES": "H100",
    }
    with pytest.raises(SettingsError) as refused:
        from_environment(bad)
    problems = refused.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(
        "DISTILLERY_WORKER_IMAGE (chart value workers.image): expected a container image"
    )
    assert "(got 'registry.example.com/distillery/Worker:0.1.0-rc1')" in problems[0]
    assert problems[1].startswith(
        "DISTILLERY_GPU_HOUR_PRICES (chart value cost.gpuHourPrices): GPU price 'H100'"
    )
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["operator", "--metrics-port", "0"]) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "distillery.operator"] == problems


def test_the_guard_and_the_price_table_reach_the_operator_as_it_reads_them():
    from distillery.controller.guard import Guard
    from distillery.controller.settings import OperatorSettings, from_environment

    (container,) = find(helm_template("full"), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = from_environment(env)
    assert settings.guard() == Guard(
        ("registry.example.com/ml/", "vllm/"), "distillery.dev/usable=true", ("nvidia.com/gpu",)
    )
    assert settings.prices() == {"default": 2.5, "NVIDIA-H100-80GB-HBM3": 4.1}
    assert settings.currency == "EUR"
    (defaults,) = find(helm_template("defaults"), "Deployment")["spec"]["template"]["spec"]["containers"]
    shipped = from_environment({e["name"]: e["value"] for e in defaults["env"] if "value" in e})
    assert not shipped.guard().enabled
    # The chart's defaults for the control loop are the operator's own.
    for field in ("resync_seconds", "workers", "progress_seconds"):
        assert getattr(shipped, field) == OperatorSettings.model_fields[field].default, field
    rules = find(helm_template("full"), "ClusterRole")["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in rules


def test_rbac_binds_the_service_account_to_the_operator_role():
    docs = helm_template("full")
    binding = find(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "distillery-operator", "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == "distillery"
    if (CHART / "templates" / "clusterrole.yaml").exists():
        assert find(docs, "ClusterRole")["metadata"]["name"] == binding["roleRef"]["name"]


# ------------------------------------------------------------------ monitoring wiring


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_metrics_service_monitor_and_pod_wire_together():
    docs = helm_template("full")
    pod = find(docs, "Deployment")["spec"]["template"]
    service = find(docs, "Service", "-metrics")
    monitor = find(docs, "ServiceMonitor")
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The alerts and dashboards match job="distillery-operator", via the Service label jobLabel names.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "distillery-operator"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pod_monitors_select_the_operators_pods_and_label_their_job():
    """The selector is the label the operator's builders put on every pod (manifests/common.py);
    tests/unit/test_monitoring_targets.py runs the monitors on those pods."""
    from distillery.manifests.common import MANAGED_BY, MANAGER

    docs = helm_template("full")
    workers, teacher = find(docs, "PodMonitor", "-workers"), find(docs, "PodMonitor", "-teacher")
    assert workers["spec"]["selector"] == {"matchLabels": {MANAGED_BY: MANAGER}}
    assert teacher["spec"]["selector"] == {
        "matchLabels": {MANAGED_BY: MANAGER, "distillery.dev/stage": "teacher"}
    }
    for monitor, port in ((workers, "metrics"), (teacher, "http")):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["distillation", "research"]}
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == port
        targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert targets == {
            "distillery_job": ["__meta_kubernetes_pod_label_distillery_dev_job"],
            "stage": ["__meta_kubernetes_pod_label_distillery_dev_stage"],
        }


def test_prometheus_rule_ships_the_rule_file():
    rule = find(helm_template("full"), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    shipped = {r["alert"]: r for r in group["rules"]}
    expected = {r["alert"]: r for r in alert_rules() if r["alert"] != "DistillationReconcileErrors"}
    assert shipped.keys() == expected.keys()
    for name, r in shipped.items():
        assert r["expr"] == expected[name]["expr"] and r.get("for") == expected[name].get("for"), name
        assert r["labels"] == {**expected[name]["labels"], "team": "ml-platform"}, name


def test_unknown_disabled_alert_is_refused_by_name():
    result = helm(
        "template",
        "x",
        str(CHART),
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.disabledAlerts={DistillationJobFaild}",
        check=False,
    )
    assert result.returncode != 0
    assert '"DistillationJobFaild" is not an alert of this chart' in result.stderr


def test_dashboards_become_sidecar_configmaps():
    docs = [d for d in helm_template("full") if d["kind"] == "ConfigMap"]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(docs) == len(files) >= 1
    for doc, path in zip(sorted(docs, key=lambda d: d["metadata"]["name"]), files, strict=True):
        assert doc["metadata"]["namespace"] == "monitoring"
        assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert doc["metadata"]["annotations"] == {"grafana_folder": "Distillery"}
        assert json.loads(doc["data"][path.name]) == json.loads(path.read_text())


def test_monitoring_objects_are_off_by_default():
    kinds = {d["kind"] for d in helm_template("defaults")}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


# ------------------------------------------------------------------ values: documented and schema'd


def _value_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from _value_paths(child, (*prefix, key))


def _documented_paths() -> set[tuple[str, ...]]:
    """Keys of values.yaml with a `# --` comment in the comment block right above them."""
    documented, stack, comment = set(), [], False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if stripped.startswith("#"):
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not match:
            comment = False
            continue
        depth = len(match[1]) // 2
        stack[depth:] = [match[2]]
        if comment:
            documented.add(tuple(stack))
        comment = False
    return documented


def test_every_value_is_documented_where_it_is_defined():
    documented = _documented_paths()

    def undocumented(node, path=()):
        """Keys with no `# --` comment of their own; a commented key covers its whole
        (free-form) value, a group without one needs every child documented."""
        missing = []
        for key, child in node.items():
            here = (*path, key)
            if here in documented:
                continue
            if isinstance(child, dict) and child:
                missing += undocumented(child, here)
            else:
                missing.append(".".join(here))
        return missing

    missing = undocumented(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert not missing, f"values without a `# --` comment: {missing}"


def test_schema_knows_every_value_and_accepts_both_value_sets():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema)
    full = yaml.safe_load(FULL_VALUES.read_text())
    for key, part in full.items():  # helm merges the file over the defaults
        values[key] = {**values[key], **part} if isinstance(part, dict) else part
    jsonschema.validate(values, schema)
    missing = []
    for path in _value_paths(yaml.safe_load((CHART / "values.yaml").read_text())):
        node = schema
        for key in path:
            if node.get("additionalProperties", True) is not False and key not in node.get("properties", {}):
                break  # a free-form object: the schema does not list its keys
            node = node.get("properties", {}).get(key)
            if node is None:
                missing.append(".".join(path))
                break
    assert not missing, f"values.schema.json does not describe: {missing}"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.replicaz=1", "replicaz"),
        ("operator.replicas=2", "operator.replicas: 2 replicas need operator.leaderElection.enabled=true"),
        ("operator.watchNamespaces={Team_A}", "watchNamespaces"),
        ("metrics.serviceMonitor.interval=often", "interval"),
    ],
)
def test_helm_refuses_bad_values_naming_the_key(setting, message):
    result = helm("template", "x", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_pod_defaults_reach_the_operators_settings_and_its_builders():
    """podDefaults, rendered by helm and read by the operator's own settings reader, are what the builders
    apply; the shipped (empty) defaults change no pod; a bad value stops the operator naming podDefaults."""
    from distillery.api import PodSettings
    from distillery.controller.settings import SettingsError, from_environment

    def env(values, *sets):
        (container,) = find(helm_template(values, *sets), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ]
        return {e["name"]: e["value"] for e in container["env"] if "value" in e}

    full = yaml.safe_load(FULL_VALUES.read_text())["podDefaults"]
    settings = from_environment(env("full"))
    assert settings.pod_defaults == PodSettings.model_validate(full)
    assert settings.build_config().pod_defaults == settings.pod_defaults
    assert settings.pod_defaults.runtime_class_name == "nvidia"
    assert settings.pod_defaults.tolerations[0].key == "nvidia.com/gpu"
    assert from_environment(env("defaults")).pod_defaults == PodSettings()
    bad = env("full", "podDefaults.labels.distillery\\.dev/job=other")
    with pytest.raises(SettingsError) as refused:
        from_environment(bad)
    (problem,) = refused.value.problems
    assert problem.startswith("DISTILLERY_POD_DEFAULTS (chart value podDefaults): labels: expected no label")
    # The chart's schema refuses a name the API server would refuse, naming the key.
    result = helm(
        "template", "x", str(CHART), "--set", "podDefaults.priorityClassName=High_Priority", check=False
    )
    assert result.returncode != 0 and "priorityClassName" in result.stderr, result.stderr
