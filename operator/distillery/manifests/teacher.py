"""The served teacher: a vLLM Deployment, its Service, and the NetworkPolicy in front of it."""

from __future__ import annotations

import math
from typing import Any

from distillery.api import DistillationJob
from distillery.contract import stages as stage_table
from distillery.contract.commands import HF_TOKEN_ENV, TEACHER_PORT, VLLM_MODULE, teacher_server_args
from distillery.manifests import common

# How often the kubelet asks vLLM's /health while the model loads. The startup probe
# allows `teacher.startupTimeoutSeconds` in all: a 405B model takes many minutes to load.
STARTUP_PROBE_PERIOD_SECONDS = 10

# vLLM's CPU build sizes its KV cache from the node's memory (92 % of it), not the pod's, and
# refuses to start on a node with anything else running ("Available memory ... is less than
# desired CPU memory utilization"). A CPU teacher gets the fixed KV cache `distillery run` gives
# its local vLLM (1 GiB, VLLM_CPU_KVCACHE_SPACE), unless its extraArgs size the cache themselves.
CPU_KV_CACHE_BYTES = 2**30
KV_CACHE_FLAGS = ("--kv-cache-memory-bytes", "--gpu-memory-utilization")


def teacher_url(job: DistillationJob) -> str:
    """The OpenAI base URL the generation pods use: the job's own teacher, or its endpoint."""
    endpoint = job.spec.teacher.endpoint
    if endpoint is not None:
        return endpoint.url
    return f"http://{common.names(job).teacher}:{TEACHER_PORT}/v1"


def teacher_model(job: DistillationJob) -> str:
    endpoint = job.spec.teacher.endpoint
    return endpoint.model if endpoint is not None else job.spec.teacher.served_model_name


def cpu_kv_cache_args(job: DistillationJob) -> list[str]:
    """`--kv-cache-memory-bytes` for a CPU teacher whose extraArgs do not size the KV cache."""
    teacher = job.spec.teacher
    if teacher.gpus > 0 or any(arg.split("=", 1)[0] in KV_CACHE_FLAGS for arg in teacher.extra_args):
        return []
    return ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]


def _health() -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}}


def build_teacher_deployment(
    job: DistillationJob, config: common.BuildConfig | None = None
) -> dict[str, Any]:
    config = config or common.BuildConfig()
    teacher = job.spec.teacher
    if teacher.model is None:
        raise ValueError(
            "spec.teacher.model: is required to serve the teacher (an endpoint needs no Deployment)"
        )
    name = common.names(job).teacher
    env: list[dict[str, Any]] = []
    if teacher.hf_token_secret is not None:
        ref = teacher.hf_token_secret
        env.append({"name": HF_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    container = common.container(
        job,
        name="vllm",
        image=teacher.image,
        command=["python3", "-m", VLLM_MODULE],
        args=teacher_server_args(teacher, teacher.model, port=TEACHER_PORT) + cpu_kv_cache_args(job),
        env=env,
        resource_spec=common.resources(teacher.resources, "teacher", teacher.gpus),
        ports=[{"name": "http", "containerPort": TEACHER_PORT, "protocol": "TCP"}],
    )
    container["startupProbe"] = {
        **_health(),
        "periodSeconds": STARTUP_PROBE_PERIOD_SECONDS,
        "failureThreshold": math.ceil(teacher.startup_timeout_seconds / STARTUP_PROBE_PERIOD_SECONDS),
    }
    container["readinessProbe"] = {**_health(), "periodSeconds": 10, "failureThreshold": 3}
    # Restart a wedged server, but only after it has been unhealthy for a while (long requests).
    container["livenessProbe"] = {
        **_health(),
        "periodSeconds": 30,
        "failureThreshold": 5,
        "timeoutSeconds": 10,
    }
    # With a queue, Kueue admits the teacher's GPUs too, through its Deployment integration (Kueue v0.9+;
    # https://kueue.sigs.k8s.io/docs/tasks/run/deployment/): the queue label on the Deployment (and on
    # its pod template, which Kueue's webhook would copy there anyway) makes each pod a Workload; the
    # webhook gives each new pod the scheduling gate `kueue.x-k8s.io/admission` and Kueue removes it
    # when the queue admits the pod. Kueue's configuration must enable `deployment` (and, up to v0.14,
    # `pod`) in `integrations.frameworks`.
    queue = {common.KUEUE_QUEUE_LABEL: job.spec.queue_name} if job.spec.queue_name else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(job, name, "teacher", queue),
        "spec": {
            "replicas": teacher.replicas,
            # Never two teachers at once: a rolling update would need twice the GPUs.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": common.selector_labels(job, "teacher")},
            "template": common.pod_template(
                job,
                "teacher",
                container,
                settings=common.merge_pod_settings(config.pod_defaults, teacher),
                restart_policy="Always",
                extra_labels=queue,
            ),
        },
    }


def teacher_is_gang(job: DistillationJob) -> bool:
    """Several replicas behind a Kueue queue: served by a StatefulSet, which Kueue admits as one pod group.

    Kueue admits each pod of a Deployment as its own Workload (https://kueue.sigs.k8s.io/docs/tasks/run/
    deployment/), so a queue short of quota could start some replicas and hold the GPUs of those while the
    rest wait. A StatefulSet is "represented as a single independent workload" built on the plain pod group
    (https://kueue.sigs.k8s.io/docs/tasks/run/statefulset/): its webhook gives the pod template the group's
    name and total count (`spec.replicas`), and Kueue admits every replica together or none. One replica
    (or no queue) keeps the Deployment."""
    return bool(job.spec.queue_name) and job.spec.teacher.replicas > 1


def build_teacher_statefulset(
    job: DistillationJob, config: common.BuildConfig | None = None
) -> dict[str, Any]:
    """The teacher's replicas as a StatefulSet (`teacher_is_gang`): the same pods as the Deployment's."""
    deployment = build_teacher_deployment(job, config)
    spec = deployment["spec"]
    del spec["strategy"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": deployment["metadata"],
        "spec": {
            **spec,
            # Its headless Service (the teacher's, which is headless for the clients' own balancing).
            "serviceName": common.names(job).teacher,
            # Every replica at once, as the Deployment starts them: Kueue admits the group as a whole, and
            # OrderedReady would wait for replica 0 to be ready before even creating replica 1.
            "podManagementPolicy": "Parallel",
        },
    }


def build_teacher_service(job: DistillationJob) -> dict[str, Any]:
    """The teacher's name in DNS: a headless Service, so the name resolves to every ready replica's pod IP.

    A ClusterIP Service balances per connection (kube-proxy), and a generation shard keeps its connections
    alive, so a shard would stick to the replica its first connections landed on. Headless, each client sees
    every ready replica and spreads its own requests (`serving.replicas`: round robin per request, the
    vLLM production stack router's default), as gRPC clients balance long-lived connections on Kubernetes.
    Pods that are not ready are left out of DNS (publishNotReadyAddresses is false), so a loading or dying
    replica gets no new requests once the endpoints controller sees it."""
    name = common.names(job).teacher
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(job, name, "teacher"),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": common.selector_labels(job, "teacher"),
            "ports": [{"name": "http", "port": TEACHER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_teacher_network_policy(
    job: DistillationJob, config: common.BuildConfig | None = None
) -> dict[str, Any]:
    """Only this job's generation pods may reach its teacher, and its training pods when they ask it to grade
    (onPolicy); the kubelet's probes are not affected. With a scraper in the operator's settings (the chart's
    metrics.scraper), that Prometheus may too: vLLM serves its /metrics on the same port."""
    stages = [entry.stage for entry in stage_table.STAGES if entry.needs_teacher(job.spec)]
    ingress: list[dict[str, Any]] = [
        {
            "from": [
                {"podSelector": {"matchLabels": common.selector_labels(job, stage)}} for stage in stages
            ],
            "ports": [{"protocol": "TCP", "port": TEACHER_PORT}],
        }
    ]
    scraper = (config or common.BuildConfig()).scraper_selector()
    if scraper is not None:
        ingress.append({"from": [scraper], "ports": [{"protocol": "TCP", "port": TEACHER_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": common.metadata(job, common.names(job).teacher_policy, "teacher"),
        "spec": {
            "podSelector": {"matchLabels": common.selector_labels(job, "teacher")},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
