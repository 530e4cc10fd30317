"""The operator's I/O with the Kubernetes API: reading a job's children, carrying a step out.

Idempotent: children have fixed names and are created only when absent (a 409 from a
racing replica counts as success), so an operator restart or a second replica never makes
a duplicate. Every call has a timeout, so a hung connection cannot stall a handler thread.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from distillery.api import DistillationJob
from distillery.controller import metrics
from distillery.controller.observe import Observed, job_state, teacher_state
from distillery.controller.phases import STAGE_ORDER
from distillery.controller.steps import Step
from distillery.manifests import CHILDREN, BuildConfig, build, child_name
from distillery.manifests.common import JOB_LABEL, STAGE_LABEL, label_value

# (connect, read) timeout of every API call, so a hung connection cannot stall a handler thread.
REQUEST_TIMEOUT = (10, 60)

# The client's default for built-in kinds is a JSON patch (a list of operations); our
# patches are partial objects, which the API server accepts only as a merge patch.
MERGE_PATCH = "application/merge-patch+json"


# ------------------------------------------------------------------ reading children


def call(fn, *args, **kwargs):
    return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)


def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    api, method = _read_method(kind)
    try:
        return client.ApiClient().sanitize_for_serialization(call(getattr(api, method), name, namespace))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _read_method(kind: str):
    return {
        "Deployment": (client.AppsV1Api(), "read_namespaced_deployment"),
        "Job": (client.BatchV1Api(), "read_namespaced_job"),
        "Service": (client.CoreV1Api(), "read_namespaced_service"),
        "PersistentVolumeClaim": (client.CoreV1Api(), "read_namespaced_persistent_volume_claim"),
        "NetworkPolicy": (client.NetworkingV1Api(), "read_namespaced_network_policy"),
    }[kind]


def _pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    selector = f"{JOB_LABEL}={label_value(job_name)}"
    found = call(client.CoreV1Api().list_namespaced_pod, namespace, label_selector=selector)
    pods = client.ApiClient().sanitize_for_serialization(found).get("items") or []
    # Filter here as well: the selector is the server's job, but a stale cache must not mix jobs.
    return [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_LABEL) == label_value(job_name)
    ]


def observe(job: DistillationJob) -> Observed:
    namespace, name = job.metadata.namespace, job.metadata.name
    deployment = (
        get("Deployment", namespace, child_name("teacher", job))
        if job.spec.teacher.endpoint is None
        else None
    )
    stage_jobs = {stage: get("Job", namespace, child_name(stage, job)) for stage in STAGE_ORDER}
    pods: list[dict[str, Any]] = []
    if any(stage_jobs.values()) or (deployment and not teacher_state(deployment).ready):
        pods = _pods(namespace, name)

    def stage_pods(stage: str) -> list[dict[str, Any]]:
        return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL) == stage]

    claim = job.spec.storage.pvc.claim_name if job.spec.storage.pvc else None
    started = deployment is not None or any(stage_jobs.values())
    # Only before anything runs: a claim deleted later shows up as failing pods, not as Pending.
    claim_missing = bool(claim) and not started and get("PersistentVolumeClaim", namespace, claim) is None
    return Observed(
        claim_missing=claim_missing,
        teacher=teacher_state(deployment, stage_pods("teacher")),
        check=job_state(stage_jobs["check"], stage_pods("check")),
        generate=job_state(stage_jobs["generate"], stage_pods("generate")),
        train=job_state(stage_jobs["train"], stage_pods("train")),
        evaluate=job_state(stage_jobs["evaluate"], stage_pods("evaluate")),
    )


# ------------------------------------------------------------------ carrying a step out


_CREATE = {
    "Deployment": lambda ns, body: client.AppsV1Api().create_namespaced_deployment(
        ns, body, _request_timeout=REQUEST_TIMEOUT
    ),
    "Job": lambda ns, body: client.BatchV1Api().create_namespaced_job(
        ns, body, _request_timeout=REQUEST_TIMEOUT
    ),
    "Service": lambda ns, body: client.CoreV1Api().create_namespaced_service(
        ns, body, _request_timeout=REQUEST_TIMEOUT
    ),
    "PersistentVolumeClaim": lambda ns, body: client.CoreV1Api().create_namespaced_persistent_volume_claim(
        ns, body, _request_timeout=REQUEST_TIMEOUT
    ),
    "NetworkPolicy": lambda ns, body: client.NetworkingV1Api().create_namespaced_network_policy(
        ns, body, _request_timeout=REQUEST_TIMEOUT
    ),
}


def _known(child: str, observed: Observed) -> bool:
    """Whether this reconcile already saw the child (then no GET is needed)."""
    if child == "teacher":
        return observed.teacher.exists
    if child in STAGE_ORDER:
        return getattr(observed, child).exists
    return False


def carry_out(job: DistillationJob, step: Step, observed: Observed, logger: logging.Logger) -> None:
    namespace = job.metadata.namespace
    config = BuildConfig.from_env()
    for child in step.ensure:
        kind = CHILDREN[child][1]
        name = child_name(child, job)
        if _known(child, observed) or get(kind, namespace, name) is not None:
            continue
        manifest = build(child, job, config)
        if manifest is None:
            continue
        try:
            _CREATE[kind](namespace, manifest)
        except ApiException as error:
            if error.status != 409:  # 409: another replica (or our last try) made it first
                raise
            continue
        metrics.CHILDREN_CREATED.labels(kind).inc()
        logger.info("created %s %s", kind, name)
    for child in step.delete:
        if child == "teacher" and observed.teacher.exists:
            try:
                call(client.AppsV1Api().delete_namespaced_deployment, child_name("teacher", job), namespace,
                      propagation_policy="Background")  # fmt: skip
                logger.info("deleted the teacher Deployment (its GPUs are free)")
            except ApiException as error:
                if error.status != 404:
                    raise
    for stage, value in [(s, True) for s in step.suspend] + [(s, False) for s in step.resume]:
        call(
            client.BatchV1Api().patch_namespaced_job,
            child_name(stage, job),
            namespace,
            {"spec": {"suspend": value}},
            _content_type=MERGE_PATCH,
        )
        logger.info("%s the %s Job", "suspended" if value else "resumed", stage)
