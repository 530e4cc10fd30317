"""kopf handlers: read the children, ask the phase machine, carry its step out, write status.

Everything decided lives in `phases.decide` and `status` (pure); the API calls are in
`kube`. One timer per DistillationJob drives it; the status is written only when it
changed, and each transition becomes an Event.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from distillery.api import GROUP, PLURAL, VERSION, DistillationJob, DistillationJobStatus, Problem
from distillery.controller import kube, metrics, phases, status
from distillery.controller.observe import Observed
from distillery.errors import InvalidJob, format_problem, parse_job

registry = kopf.OperatorRegistry()

# How often each job is reconciled. Stages take minutes to days; 10 s keeps `kubectl get`
# fresh at a few API reads per job. Tests set it lower.
RECONCILE_SECONDS = float(os.environ.get("DISTILLERY_RECONCILE_SECONDS", "10"))
_heartbeat = {"ready": False, "beat": 0.0}


def health() -> dict[str, Any]:
    """What /healthz and /readyz report: ready once started; healthy while the event loop beats."""
    return {
        "ready": _heartbeat["ready"],
        "age": time.monotonic() - _heartbeat["beat"] if _heartbeat["beat"] else None,
    }


# ------------------------------------------------------------------ login

# Set by `use_configuration` (tests, embedding); None: in-cluster service account or kubeconfig.
_configuration: dict[str, client.Configuration] = {}


def use_configuration(configuration: client.Configuration) -> None:
    """Point both the official client and kopf at this API server instead of the usual lookup."""
    client.Configuration.set_default(configuration)
    _configuration["explicit"] = configuration


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf and the official client share one set of credentials.

    kopf's `login_via_client` loads the service account (in a pod) or the kubeconfig and
    sets it as the official client's default too; it runs again whenever the API answers
    401, so a rotated service-account token is picked up.
    """
    configuration = _configuration.get("explicit")
    if configuration is None:
        return kopf.login_via_client(**kwargs)
    return kopf.ConnectionInfo(
        server=configuration.host, insecure=not configuration.verify_ssl, ca_path=configuration.ssl_ca_cert
    )


# ------------------------------------------------------------------ startup


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Ask the API server to end each watch after 5 min, and give up on our side a little
    # later: a watch whose TCP connection died without a FIN otherwise hangs forever and the
    # operator silently stops seeing changes (kopf issues #204 and #585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's own API calls (patches, events) must not block forever either.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # Deleting a job waits for a reconcile that is running at that moment; check every
    # second whether it finished (kopf's default is 60 s, a minute of "Terminating").
    settings.background.cancellation_polling = 1
    # Keep kopf's bookkeeping in our own annotation/finalizer names, not in status.
    settings.persistence.finalizer = "distillery.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="distillery.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="distillery.dev", key="last-handled-configuration"
    )
    # Handlers are sync (the official client); one thread per job being reconciled at once.
    settings.execution.max_workers = int(os.environ.get("DISTILLERY_WORKERS", "8"))
    # Our transitions become Events; kopf's own "Handler succeeded" chatter does not.
    settings.posting.level = logging.WARNING
    _heartbeat["beat"] = time.monotonic()
    _heartbeat["ready"] = True


async def heartbeat() -> None:
    """Beats while the operator's event loop is responsive; /healthz fails when it stops."""
    import asyncio

    while True:
        _heartbeat["beat"] = time.monotonic()
        await asyncio.sleep(5)


@kopf.on.startup(registry=registry)
async def start_heartbeat(**_: Any) -> None:
    import asyncio

    asyncio.get_running_loop().create_task(heartbeat())


# ------------------------------------------------------------------ the reconcile loop


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_SECONDS, registry=registry)
def reconcile(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    started = time.monotonic()
    try:
        _reconcile(dict(body), logger)
    except ApiException as error:
        metrics.RECONCILES.labels("retry").inc()
        # Transient API trouble: try again on the next tick, with the cause in the log.
        raise kopf.TemporaryError(
            f"Kubernetes API error {error.status}: {error.reason}", delay=RECONCILE_SECONDS
        ) from error
    except Exception:
        metrics.RECONCILES.labels("error").inc()
        raise
    else:
        metrics.RECONCILES.labels("ok").inc()
    finally:
        metrics.RECONCILE_DURATION.observe(time.monotonic() - started)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
def forget(namespace: str, name: str, uid: str, **_: Any) -> None:
    """The children go with the job (owner references); only our metrics need forgetting."""
    metrics.forget_job(namespace, name, uid)


def _reconcile(body: dict[str, Any], logger: logging.Logger) -> None:
    meta = body.get("metadata") or {}
    name, namespace = meta["name"], meta["namespace"]
    if meta.get("deletionTimestamp"):
        return  # being deleted: the garbage collector removes the children; `forget` drops the metrics
    try:
        old = DistillationJobStatus.model_validate(body.get("status") or {})
    except ValueError:
        old = DistillationJobStatus()  # a status we cannot read is rebuilt from the children
    job, problems = _parse(body)
    now = datetime.now(timezone.utc)
    terminal = old.phase is not None and old.phase.is_terminal
    # Finished or invalid jobs have nothing running to look at: no API reads, no retry storm.
    observed = Observed() if terminal or job is None else kube.observe(job)
    step = phases.decide(job.spec if job else None, problems, old, observed, now, name)
    if step.delete_self:
        logger.info("ttlSecondsAfterFinished has passed; deleting the DistillationJob")
        kube.call(
            client.CustomObjectsApi().delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return
    if job is not None:
        kube.carry_out(job, step, observed, logger)
    new = status.next_status(old, step, now, meta.get("generation"))
    new_doc = status.status_document(new)
    if new_doc != status.status_document(old):
        kube.call(
            client.CustomObjectsApi().patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, {"status": new_doc}, _content_type=kube.MERGE_PATCH,
        )  # fmt: skip
        for event in status.events(old, new):
            # kopf.event posts whatever settings.posting.level is (that level mutes kopf's own chatter).
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
            logger.info("%s: %s", event.reason, event.message)
    for stage in step.finished_stages:
        seconds = status.stage_duration(getattr(observed, stage))
        if seconds is not None:
            metrics.STAGE_DURATION.labels(stage).observe(seconds)
    metrics.export_status(namespace, name, meta.get("uid", ""), new)


def _parse(body: dict[str, Any]) -> tuple[DistillationJob | None, list[str]]:
    document = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    document["metadata"] = {
        k: v for k, v in (body.get("metadata") or {}).items() if k in ("name", "namespace", "uid")
    }
    try:
        job = parse_job(document)
    except InvalidJob as error:
        return None, [format_problem(p) for p in error.problems]
    if job.spec.storage.pvc is None:
        problem = Problem(
            "spec.storage.pvc", "is required in a cluster (storage.path is only for `distillery run`)"
        )
        return None, [format_problem(problem)]
    return job, []
