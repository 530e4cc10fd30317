"""The operator's writes to the Kubernetes API: create children if absent, delete, (un)suspend, patch status.

Idempotent: children have fixed names and are created only when the cache has not seen them
(a 409 from a racing replica, or from our own create whose watch event has not arrived yet,
counts as success), so an operator restart or a second replica never makes a duplicate.
Asynchronous (`apiclient`): a reconcile waits on the API server without holding a thread.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.rest import ApiException

from distillery.api import GROUP, PLURAL, VERSION, DistillationJob
from distillery.controller import metrics
from distillery.controller.apiclient import MERGE_PATCH, Api, path
from distillery.controller.cache import CHILD_KINDS
from distillery.controller.steps import Step
from distillery.manifests import CHILDREN, BuildConfig, build, child_name, forms, resolve

REPORTER = "distillery-operator"  # the Events' source
# Kubernetes keeps Event messages short (events.k8s.io caps its note at 1 KiB); status has the whole text.
EVENT_MESSAGE_LIMIT = 1024
Key = tuple[str, str]


class ChildRefused(Exception):
    """The API server refused to create a child with a 4xx other than 409/429 (invalid, forbidden, quota)."""

    def __init__(self, child: str, message: str):
        super().__init__(message)
        self.child = child


def transient(error: ApiException) -> bool:
    """429 (throttled) and 5xx are worth retrying; 0 is the client's own failure (connection, timeout)."""
    return error.status in (0, None, 429) or (error.status or 0) >= 500


def api_message(error: ApiException) -> str:
    """The API server's own message (from its Status body), else the HTTP reason."""
    try:
        return json.loads(error.body or "{}").get("message") or str(error.reason)
    except (TypeError, ValueError):
        return str(error.reason or error)


def describe_error(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"Kubernetes API error {error.status} {error.reason}: {api_message(error)}"
    return f"Kubernetes API unreachable: {type(error).__name__}: {error}"


def child_path(kind: str, namespace: str, name: str | None = None) -> str:
    return path(*CHILD_KINDS[kind], namespace, name)


async def get_claim(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    """An existing claim the spec names (not ours, so not in the cache); None when absent."""
    try:
        return await api.request("GET", child_path("PersistentVolumeClaim", namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def jobset_served(api: Api) -> bool:
    """Whether the cluster serves JobSets (jobset.x-k8s.io/v1alpha2), by API discovery: what
    `training.launcher: auto` follows. A 404 (no such group or version) is no; other errors propagate."""
    try:
        found = await api.request("GET", "/apis/jobset.x-k8s.io/v1alpha2")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return any(
        r.get("name") == "jobsets" for r in (found or {}).get("resources") or () if isinstance(r, dict)
    )


# Only the metadata of a Secret: the operator has no use for its data and should never hold it.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"


async def get_secret_labels(api: Api, namespace: str, name: str) -> dict[str, str] | None:
    """The labels of a Secret the spec names (for the guard), or None when it does not exist."""
    try:
        found = await api.request("GET", path("", "v1", "secrets", namespace, name), accept=METADATA_ONLY)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(((found or {}).get("metadata") or {}).get("labels") or {})


def _exists(children: dict[str, list[dict[str, Any]]], kind: str, name: str) -> bool:
    return any((body.get("metadata") or {}).get("name") == name for body in children.get(kind, ()))


async def create(
    api: Api, job: DistillationJob, child: str, config: BuildConfig, logger: logging.Logger
) -> None:
    kind = CHILDREN[resolve(child, job, config)][1]
    manifest = build(child, job, config)
    if manifest is None:
        return
    name = manifest["metadata"]["name"]
    if kind == "JobSet" and not config.jobset_installed:
        # What the API server answers (404: no such resource), said before asking it, with the fix.
        raise ChildRefused(
            child,
            f"JobSet {name}: spec.training.launcher is jobset, but the cluster serves no "
            "jobset.x-k8s.io/v1alpha2 JobSets (install JobSet and restart the operator, or set launcher auto or job)",
        )
    try:
        await api.request("POST", child_path(kind, job.metadata.namespace), manifest)
    except ApiException as error:
        if error.status == 409:  # another replica (or our last try) made it first
            return
        if transient(error):
            raise
        raise ChildRefused(
            child, f"{kind} {name}: {error.status} {error.reason}: {api_message(error)}"
        ) from None
    metrics.CHILDREN_CREATED.labels(kind).inc()
    logger.info("%s/%s: created %s %s", job.metadata.namespace, job.metadata.name, kind, name)


async def delete(api: Api, key: Key, child: str, logger: logging.Logger) -> None:
    (namespace, job_name), kind, name = key, CHILDREN[child][1], child_name(child, key[1])
    try:
        await api.request(
            "DELETE", child_path(kind, namespace, name), params={"propagationPolicy": "Background"}
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return
    what = "its GPUs are free" if child in forms("teacher") else "the job ended"
    logger.info("%s/%s: deleted %s %s (%s)", namespace, job_name, kind, name, what)


async def carry_out(
    api: Api,
    key: Key,
    job: DistillationJob | None,
    step: Step,
    children: dict[str, list[dict[str, Any]]],
    config: BuildConfig,
    logger: logging.Logger,
) -> None:
    """Create what the step ensures and the cache lacks (built with `config`); delete, suspend and
    resume what it says.

    Without a valid spec (`job` None) nothing is created, but what runs is still stopped.
    """
    namespace, job_name = key
    if job is not None:
        for child in step.ensure:
            # Either form counts (a launcher or queue changed mid-run must not start a second copy).
            if not any(_exists(children, CHILDREN[c][1], child_name(c, job)) for c in forms(child)):
                await create(api, job, child, config, logger)
    for child in (form for named in step.delete for form in forms(named)):
        if _exists(children, CHILDREN[child][1], child_name(child, job_name)):
            await delete(api, key, child, logger)
    for stage, value in [(s, True) for s in step.suspend] + [(s, False) for s in step.resume]:
        for form in forms(stage):  # a Job or a JobSet: both suspend by spec.suspend
            kind, name = CHILDREN[form][1], child_name(form, job_name)
            if _exists(children, kind, name):
                await api.request(
                    "PATCH", child_path(kind, namespace, name), {"spec": {"suspend": value}}, MERGE_PATCH
                )
                logger.info(
                    "%s/%s: %s the %s %s",
                    namespace,
                    job_name,
                    "suspended" if value else "resumed",
                    stage,
                    kind,
                )


async def patch_status(
    api: Api, namespace: str, name: str, document: dict[str, Any]
) -> dict[str, Any] | None:
    """The job as the API server stored it (its new resourceVersion tells the write's own watch event)."""
    url = path(GROUP, VERSION, PLURAL, namespace, name, "status")
    return await api.request("PATCH", url, {"status": document}, MERGE_PATCH)


async def delete_job(api: Api, namespace: str, name: str) -> None:
    try:
        await api.request("DELETE", path(GROUP, VERSION, PLURAL, namespace, name))
    except ApiException as error:
        if error.status != 404:
            raise


async def post_event(api: Api, body: dict[str, Any], type: str, reason: str, message: str) -> None:
    """A core/v1 Event about the DistillationJob (what `kubectl describe dj` lists)."""
    meta = body["metadata"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": body.get("kind", "DistillationJob"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "source": {"component": REPORTER},
        "reportingComponent": REPORTER,
        "reportingInstance": REPORTER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    # A retried create with generateName could post the Event twice.
    await api.request("POST", path("", "v1", "events", meta["namespace"]), event, idempotent=False)
