"""What the Prometheus Operator and Prometheus's Kubernetes discovery make of a ServiceMonitor or
PodMonitor: the scrape targets, with their labels, that the monitor selects among real objects.

A port, kept to what the chart's monitors use, of:

- the Prometheus Operator's scrape-config generator, pkg/prometheus/promcfg.go
  (prometheus-operator/prometheus-operator @ 6adcebc50):
  `generatePodMonitorConfig` and `generateServiceMonitorConfig` (job_name
  `podMonitor|serviceMonitor/<namespace>/<name>/<endpoint index>`, honor_labels, metrics_path; the
  relabel rules in their order: `initRelabelings` (job -> __tmp_prometheus_job_name), the running
  filter (pods in phase Failed|Succeeded dropped; PodMonitor: first, ServiceMonitor: after the
  namespace/service/pod/container rules), the selector as keep/drop rules on
  `__meta_kubernetes_{pod,service}_label_<key>` + `..._labelpresent_<key>` (matchLabels
  `(<value>);true`, In/NotIn `(<v1|v2>);true`, Exists/DoesNotExist on `labelpresent`), the port kept
  by name (`__meta_kubernetes_pod_container_port_name` for a PodMonitor,
  `__meta_kubernetes_endpoint_port_name` for a ServiceMonitor), `namespace`/`container`/`pod`
  (+ `node`, `service` for a ServiceMonitor), `job` = `<namespace>/<monitor name>` (PodMonitor) or
  the Service's name (ServiceMonitor) unless the `jobLabel` label has a value, `endpoint` = the
  port's name, then the endpoint's own `relabelings` (`generateRelabelConfig`: camelCase to
  snake_case, action lower-cased)); `getNamespacesFromNamespaceSelector` (`any: true`: every
  namespace; `matchNames`: those; neither: the monitor's own namespace). Not ported: scrape classes,
  sharding (one shard: its hashmod rule keeps every target), enforced namespace labels,
  `podTargetLabels`/`targetLabels` (the chart sets none), the role-selector mechanism;
- Prometheus's Kubernetes discovery (discovery/kubernetes/pod.go, endpoints.go): one target per
  container port of a pod (`<pod IP>:<port>`; a container with no port: one target at the pod IP),
  one per address x port of an Endpoints object, with their `__meta_kubernetes_*` labels;
- Prometheus's target labelling and relabeling (scrape/target.go `PopulateLabels`,
  model/relabel/relabel.go): `job`, `__address__`, `__scheme__`, `__metrics_path__` set first; the
  rules applied in order (regex anchored, `(.*)` / `$1` / `;` / `replace` by default; a replace
  that yields "" deletes the label); labels starting with `__` dropped afterwards; `instance`
  defaults to the address.

A last piece ports the Endpoints controller: a Service's Endpoints from the pods its selector
matches (ready pods' IPs; a named targetPort resolved through the container's port of that name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_CAMEL = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "separator": "separator",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def sanitize(name: str) -> str:
    """promcfg.go sanitizeLabelName / Prometheus's strutil.SanitizeLabelName."""
    return _INVALID.sub("_", name)


# ------------------------------------------------------------------ Kubernetes discovery (Prometheus)


def _object_labels(kind: str, meta: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in (meta.get("labels") or {}).items():
        out[f"__meta_kubernetes_{kind}_label_{sanitize(key)}"] = value
        out[f"__meta_kubernetes_{kind}_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        out[f"__meta_kubernetes_{kind}_annotation_{sanitize(key)}"] = value
        out[f"__meta_kubernetes_{kind}_annotationpresent_{sanitize(key)}"] = "true"
    return out


def _pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    meta, status = pod["metadata"], pod.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    out = {
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": status.get("podIP", ""),
        "__meta_kubernetes_pod_ready": str(ready).lower(),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
        "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        **_object_labels("pod", meta),
    }
    for owner in meta.get("ownerReferences", []):
        if owner.get("controller"):
            out["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
            out["__meta_kubernetes_pod_controller_name"] = owner["name"]
    return out


def _container_labels(container: dict[str, Any], port: dict[str, Any] | None) -> dict[str, str]:
    out = {
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_image": container.get("image", ""),
        "__meta_kubernetes_pod_container_init": "false",
    }
    if port is not None:
        out |= {
            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
            "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
            "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
        }
    return out


def pod_targets(pod: dict[str, Any]) -> list[dict[str, str]]:
    """The role=pod discovery's targets of one pod (pod.go buildPod): one per container port."""
    ip = pod.get("status", {}).get("podIP")
    if not ip:  # pod.go: a pod without an IP yet has no targets
        return []
    common = {"__meta_kubernetes_namespace": pod["metadata"]["namespace"], **_pod_labels(pod)}
    targets = []
    for container in pod["spec"]["containers"]:
        ports = container.get("ports") or []
        if not ports:
            targets.append({"__address__": ip, **common, **_container_labels(container, None)})
        for port in ports:
            targets.append(
                {
                    "__address__": f"{ip}:{port['containerPort']}",
                    **common,
                    **_container_labels(container, port),
                }
            )
    return targets


def endpoints_targets(
    service: dict[str, Any], endpoints: dict[str, Any], pods: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """The role=endpoints discovery's targets of one Service (endpoints.go buildEndpoints)."""
    namespace = endpoints["metadata"]["namespace"]
    by_name = {p["metadata"]["name"]: p for p in pods if p["metadata"]["namespace"] == namespace}
    common = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_endpoints_name": endpoints["metadata"]["name"],
        **_object_labels("endpoints", endpoints["metadata"]),
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        **_object_labels("service", service["metadata"]),
    }
    targets = []
    for subset in endpoints.get("subsets", []):
        for ready, addresses in (
            ("true", subset.get("addresses", [])),
            ("false", subset.get("notReadyAddresses", [])),
        ):
            for address in addresses:
                for port in subset.get("ports", []):
                    target = {
                        "__address__": f"{address['ip']}:{port['port']}",
                        **common,
                        "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                        "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                        "__meta_kubernetes_endpoint_ready": ready,
                    }
                    ref = address.get("targetRef")
                    if ref:
                        target["__meta_kubernetes_endpoint_address_target_kind"] = ref["kind"]
                        target["__meta_kubernetes_endpoint_address_target_name"] = ref["name"]
                    pod = by_name.get(ref["name"]) if ref and ref["kind"] == "Pod" else None
                    if pod is not None:
                        target |= _pod_labels(pod)
                        for container in pod["spec"]["containers"]:
                            for cport in container.get("ports") or []:
                                if cport["containerPort"] == port["port"]:
                                    target |= _container_labels(container, cport)
                    targets.append(target)
    return targets


def endpoints_for(service: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The Endpoints object the Endpoints controller keeps for `service` (pods its selector matches)."""
    meta = service["metadata"]
    selector = service["spec"].get("selector") or {}
    ready, not_ready, ports = [], [], []
    chosen = [
        p
        for p in pods
        if p["metadata"]["namespace"] == meta["namespace"]
        and selector
        and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        and p.get("status", {}).get("podIP")
    ]
    for pod in chosen:
        pod_ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
        )
        address = {
            "ip": pod["status"]["podIP"],
            "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": meta["namespace"]},
        }
        (ready if pod_ready else not_ready).append(address)
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if isinstance(target, str):  # a named port: the container's port of that name
            numbers = {
                cport["containerPort"]
                for pod in chosen
                for container in pod["spec"]["containers"]
                for cport in container.get("ports") or []
                if cport.get("name") == target
            }
            if len(numbers) != 1:
                continue
            (target,) = numbers
        ports.append(
            {"name": port.get("name", ""), "port": int(target), "protocol": port.get("protocol", "TCP")}
        )
    subset: dict[str, Any] = {"ports": ports}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
        },
        "subsets": [subset] if (ready or not_ready) and ports else [],
    }


# ------------------------------------------------------------------ relabeling (Prometheus)


def _expand(template: str, match: re.Match) -> str:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}; $$ is a dollar; an unknown group is ""."""

    def group(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        try:
            key: int | str = int(name) if name.isdigit() else name
            return match.group(key) or ""
        except IndexError:
            return ""

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", group, template)


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """model/relabel Process: the labels after the rules, or None when a rule drops the target."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace").lower()
        separator = rule.get("separator", ";")
        pattern = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        value = separator.join(labels.get(name, "") for name in rule.get("source_labels", []))
        replacement = str(rule.get("replacement", "$1"))
        target = rule.get("target_label", "")
        if action == "keep":
            if not pattern.match(value):
                return None
        elif action == "drop":
            if pattern.match(value):
                return None
        elif action == "replace":
            match = pattern.match(value)
            if match is None:
                continue
            name = _expand(target, match)
            result = _expand(replacement, match)
            if not result:
                labels.pop(name, None)
            else:
                labels[name] = result
        elif action == "lowercase":
            labels[target] = value.lower()
        elif action == "uppercase":
            labels[target] = value.upper()
        elif action == "labelmap":
            for name, label_value in list(labels.items()):
                match = pattern.match(name)
                if match:
                    labels[_expand(replacement, match)] = label_value
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not pattern.match(k)}
        elif action == "labelkeep":
            labels = {k: v for k, v in labels.items() if pattern.match(k)}
        elif action == "keepequal":
            if value != labels.get(target, ""):
                return None
        elif action == "dropequal":
            if value == labels.get(target, ""):
                return None
        else:
            raise NotImplementedError(f"relabel action {action!r} is not ported")
    return labels


# ------------------------------------------------------------------ the Prometheus Operator's rules


def _selector_rules(kind: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for key in sorted(selector.get("matchLabels") or {}):
        rules.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_{kind}_label_{sanitize(key)}",
                    f"__meta_kubernetes_{kind}_labelpresent_{sanitize(key)}",
                ],
                "regex": f"({selector['matchLabels'][key]});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        key, operator = sanitize(expression["key"]), expression["operator"]
        both = [f"__meta_kubernetes_{kind}_label_{key}", f"__meta_kubernetes_{kind}_labelpresent_{key}"]
        present = [f"__meta_kubernetes_{kind}_labelpresent_{key}"]
        values = "|".join(expression.get("values") or [])
        rules.append(
            {
                "In": {"action": "keep", "source_labels": both, "regex": f"({values});true"},
                "NotIn": {"action": "drop", "source_labels": both, "regex": f"({values});true"},
                "Exists": {"action": "keep", "source_labels": present, "regex": "true"},
                "DoesNotExist": {"action": "drop", "source_labels": present, "regex": "true"},
            }[operator]
        )
    return rules


RUNNING_FILTER = {
    "action": "drop",
    "source_labels": ["__meta_kubernetes_pod_phase"],
    "regex": "(Failed|Succeeded)",
}
INIT_RELABELINGS = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]


def user_relabelings(configs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """generateRelabelConfig: a monitor's RelabelConfig list as Prometheus relabel_configs."""
    out = []
    for config in configs or []:
        rule = {_CAMEL[key]: value for key, value in config.items() if key in _CAMEL}
        if "action" in rule:
            rule["action"] = rule["action"].lower()
        out.append(rule)
    return out


def pod_monitor_relabelings(monitor: dict[str, Any], endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """generatePodMonitorConfig's relabel_configs for one podMetricsEndpoint."""
    spec, meta = monitor["spec"], monitor["metadata"]
    rules = [*INIT_RELABELINGS]
    if endpoint.get("filterRunning", True):
        rules.append(RUNNING_FILTER)
    rules += _selector_rules("pod", spec.get("selector") or {})
    if endpoint.get("port"):
        rules.append(
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": endpoint["port"],
            }
        )
    elif endpoint.get("portNumber"):
        rules.append(
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                "regex": str(endpoint["portNumber"]),
            }
        )
    rules += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
    ]
    if spec.get("jobLabel"):
        rules.append(
            {
                "source_labels": [f"__meta_kubernetes_pod_label_{sanitize(spec['jobLabel'])}"],
                "target_label": "job",
                "regex": "(.+)",
                "replacement": "${1}",
            }
        )
    if endpoint.get("port"):
        rules.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    return rules + user_relabelings(endpoint.get("relabelings"))


def service_monitor_relabelings(monitor: dict[str, Any], endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """generateServiceMonitorConfig's relabel_configs for one endpoint (role endpoints)."""
    spec = monitor["spec"]
    rules = [*INIT_RELABELINGS, *_selector_rules("service", spec.get("selector") or {})]
    if endpoint.get("port"):
        rules.append(
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                "regex": endpoint["port"],
            }
        )
    kind_name = [
        "__meta_kubernetes_endpoint_address_target_kind",
        "__meta_kubernetes_endpoint_address_target_name",
    ]
    rules += [
        {
            "source_labels": kind_name,
            "separator": ";",
            "regex": "Node;(.*)",
            "replacement": "${1}",
            "target_label": "node",
        },
        {
            "source_labels": kind_name,
            "separator": ";",
            "regex": "Pod;(.*)",
            "replacement": "${1}",
            "target_label": "pod",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    if endpoint.get("filterRunning", True):
        rules.append(RUNNING_FILTER)
    rules.append(
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"}
    )
    if spec.get("jobLabel"):
        rules.append(
            {
                "source_labels": [f"__meta_kubernetes_service_label_{sanitize(spec['jobLabel'])}"],
                "target_label": "job",
                "regex": "(.+)",
                "replacement": "${1}",
            }
        )
    if endpoint.get("port"):
        rules.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    return rules + user_relabelings(endpoint.get("relabelings"))


def namespaces(monitor: dict[str, Any]) -> list[str] | None:
    """getNamespacesFromNamespaceSelector: the namespaces discovered; None for every namespace."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    """One scrape target as Prometheus keeps it after relabeling."""

    job_name: str  # the scrape config's job_name
    address: str
    metrics_path: str
    scheme: str
    honor_labels: bool
    labels: dict[str, str] = field(default_factory=dict)  # the target's labels (no `__` ones)
    metric_relabelings: tuple[dict[str, Any], ...] = ()  # the endpoint's metric_relabel_configs


def _finish(
    job_name: str, endpoint: dict[str, Any], discovered: dict[str, str], rules, honor: bool
) -> Target | None:
    """scrape/target.go PopulateLabels: defaults, relabeling, `__` labels dropped, instance."""
    start = {
        "job": job_name,
        "__scheme__": endpoint.get("scheme", "http"),
        "__metrics_path__": endpoint.get("path", "/metrics"),
        **({"__scrape_interval__": endpoint["interval"]} if endpoint.get("interval") else {}),
        **({"__scrape_timeout__": endpoint["scrapeTimeout"]} if endpoint.get("scrapeTimeout") else {}),
    }
    labels = relabel({**start, **discovered}, rules)  # the group's labels win over the defaults
    if labels is None or not labels.get("__address__"):
        return None
    public = {k: v for k, v in labels.items() if not k.startswith("__") and v}
    public.setdefault("instance", labels["__address__"])
    metric = tuple(user_relabelings(endpoint.get("metricRelabelings")))
    return Target(
        job_name,
        labels["__address__"],
        labels["__metrics_path__"],
        labels["__scheme__"],
        honor,
        public,
        metric,
    )


def _in(namespace: str, allowed: list[str] | None) -> bool:
    return allowed is None or namespace in allowed


def pod_monitor_targets(monitor: dict[str, Any], pods: list[dict[str, Any]]) -> list[Target]:
    meta, out = monitor["metadata"], []
    allowed = namespaces(monitor)
    for index, endpoint in enumerate(monitor["spec"]["podMetricsEndpoints"]):
        job_name = f"podMonitor/{meta['namespace']}/{meta['name']}/{index}"
        rules = pod_monitor_relabelings(monitor, endpoint)
        for pod in pods:
            if _in(pod["metadata"]["namespace"], allowed):
                for discovered in pod_targets(pod):
                    target = _finish(job_name, endpoint, discovered, rules, bool(endpoint.get("honorLabels")))
                    if target is not None:
                        out.append(target)
    return out


def service_monitor_targets(
    monitor: dict[str, Any], services: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> list[Target]:
    meta, out = monitor["metadata"], []
    allowed = namespaces(monitor)
    for index, endpoint in enumerate(monitor["spec"]["endpoints"]):
        job_name = f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}"
        rules = service_monitor_relabelings(monitor, endpoint)
        for service in services:
            if _in(service["metadata"]["namespace"], allowed):
                for discovered in endpoints_targets(service, endpoints_for(service, pods), pods):
                    target = _finish(job_name, endpoint, discovered, rules, bool(endpoint.get("honorLabels")))
                    if target is not None:
                        out.append(target)
    return out


def targets(
    monitors: list[dict[str, Any]], services: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> list[Target]:
    """Every target the ServiceMonitors and PodMonitors among `monitors` select."""
    out: list[Target] = []
    for monitor in monitors:
        if monitor["kind"] == "PodMonitor":
            out += pod_monitor_targets(monitor, pods)
        elif monitor["kind"] == "ServiceMonitor":
            out += service_monitor_targets(monitor, services, pods)
    return out
