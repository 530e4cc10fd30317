"""kopf handlers: read the children, ask the phase machine, carry its step out, write status.

Everything decided lives in `phases.decide` (pure). This module only does I/O with the
official Kubernetes client, idempotently: children have fixed names and are created only
when absent (a 409 from a racing replica counts as success), so an operator restart or a
second replica never makes a duplicate. One timer per DistillationJob drives it; the
status is written only when it changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from distillery import metrics
from distillery.api import GROUP, PLURAL, VERSION, DistillationJob, DistillationJobStatus, Phase, Problem
from distillery.controller import phases
from distillery.controller.observe import Observed, job_state, teacher_state
from distillery.errors import InvalidJob, format_problem, parse_job
from distillery.manifests import CHILDREN, BuildConfig, build, child_name
from distillery.manifests.common import JOB_LABEL, STAGE_LABEL, label_value

registry = kopf.OperatorRegistry()

# How often each job is reconciled. Stages take minutes to days; 10 s keeps `kubectl get`
# fresh at a few API reads per job. Tests set it lower.
RECONCILE_SECONDS = float(os.environ.get("DISTILLERY_RECONCILE_SECONDS", "10"))
# (connect, read) timeout of every API call, so a hung connection cannot stall a handler thread.
REQUEST_TIMEOUT = (10, 60)

# The client's default for built-in kinds is a JSON patch (a list of operations); our
# patches are partial objects, which the API server accepts only as a merge patch.
MERGE_PATCH = "application/merge-patch+json"

_state_lock = threading.Lock()
_phases: dict[tuple[str, str], str] = {}  # (namespace, name) -> phase, for the jobs-by-phase gauge
_deleted: set[str] = set()  # uids of deleted jobs: a reconcile still in flight must not re-export them
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
    with _state_lock:
        _deleted.add(uid)
        metrics.forget_job(namespace, name)
        _phases.pop((namespace, name), None)
        _count_phases()


def _reconcile(body: dict[str, Any], logger: logging.Logger) -> None:
    meta = body.get("metadata") or {}
    name, namespace = meta["name"], meta["namespace"]
    if meta.get("deletionTimestamp"):
        return  # being deleted: the garbage collector removes the children; `forget` drops the metrics
    try:
        status = DistillationJobStatus.model_validate(body.get("status") or {})
    except ValueError:
        status = DistillationJobStatus()  # a status we cannot read is rebuilt from the children
    job, problems = _parse(body)
    now = datetime.now(timezone.utc)
    terminal = status.phase is not None and status.phase.is_terminal
    # Finished or invalid jobs have nothing running to look at: no API reads, no retry storm.
    observed = Observed() if terminal or job is None else _observe(job)
    step = phases.decide(job.spec if job else None, problems, status, observed, now, name)
    if step.delete_self:
        logger.info("ttlSecondsAfterFinished has passed; deleting the DistillationJob")
        _call(
            client.CustomObjectsApi().delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return
    if job is not None:
        _carry_out(job, step, observed, logger)
    new = phases.next_status(status, step, now, meta.get("generation"))
    old_doc, new_doc = phases.status_document(status), phases.status_document(new)
    if new_doc != old_doc:
        _call(
            client.CustomObjectsApi().patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, {"status": new_doc}, _content_type=MERGE_PATCH,
        )  # fmt: skip
        for event in phases.events(status, new):
            # kopf.event posts whatever settings.posting.level is (that level mutes kopf's own chatter).
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
            logger.info("%s: %s", event.reason, event.message)
    for stage in step.finished_stages:
        seconds = phases.stage_duration(getattr(observed, stage))
        if seconds is not None:
            metrics.STAGE_DURATION.labels(stage).observe(seconds)
    _export(namespace, name, meta.get("uid", ""), new)


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


# ------------------------------------------------------------------ reading children


def _call(fn, *args, **kwargs):
    return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)


def _get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    api, method = _read_method(kind)
    try:
        return client.ApiClient().sanitize_for_serialization(_call(getattr(api, method), name, namespace))
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
    found = _call(client.CoreV1Api().list_namespaced_pod, namespace, label_selector=selector)
    pods = client.ApiClient().sanitize_for_serialization(found).get("items") or []
    # Filter here as well: the selector is the server's job, but a stale cache must not mix jobs.
    return [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_LABEL) == label_value(job_name)
    ]


def _observe(job: DistillationJob) -> Observed:
    namespace, name = job.metadata.namespace, job.metadata.name
    deployment = (
        _get("Deployment", namespace, child_name("teacher", job))
        if job.spec.teacher.endpoint is None
        else None
    )
    stage_jobs = {stage: _get("Job", namespace, child_name(stage, job)) for stage in phases.STAGE_ORDER}
    pods: list[dict[str, Any]] = []
    if any(stage_jobs.values()) or (deployment and not teacher_state(deployment).ready):
        pods = _pods(namespace, name)

    def stage_pods(stage: str) -> list[dict[str, Any]]:
        return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL) == stage]

    claim = job.spec.storage.pvc.claim_name if job.spec.storage.pvc else None
    started = deployment is not None or any(stage_jobs.values())
    # Only before anything runs: a claim deleted later shows up as failing pods, not as Pending.
    claim_missing = bool(claim) and not started and _get("PersistentVolumeClaim", namespace, claim) is None
    return Observed(
        claim_missing=claim_missing,
        teacher=teacher_state(deployment, stage_pods("teacher")),
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
    if child in phases.STAGE_ORDER:
        return getattr(observed, child).exists
    return False


def _carry_out(job: DistillationJob, step: phases.Step, observed: Observed, logger: logging.Logger) -> None:
    namespace = job.metadata.namespace
    config = BuildConfig.from_env()
    for child in step.ensure:
        kind = CHILDREN[child][1]
        name = child_name(child, job)
        if _known(child, observed) or _get(kind, namespace, name) is not None:
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
                _call(client.AppsV1Api().delete_namespaced_deployment, child_name("teacher", job), namespace,
                      propagation_policy="Background")  # fmt: skip
                logger.info("deleted the teacher Deployment (its GPUs are free)")
            except ApiException as error:
                if error.status != 404:
                    raise
    for stage, value in [(s, True) for s in step.suspend] + [(s, False) for s in step.resume]:
        _call(
            client.BatchV1Api().patch_namespaced_job,
            child_name(stage, job),
            namespace,
            {"spec": {"suspend": value}},
            _content_type=MERGE_PATCH,
        )
        logger.info("%s the %s Job", "suspended" if value else "resumed", stage)


# ------------------------------------------------------------------ metrics


def _export(namespace: str, name: str, uid: str, status: DistillationJobStatus) -> None:
    phase = status.phase.value if status.phase else Phase.pending.value
    with _state_lock:
        if uid in _deleted:
            return
        for candidate in metrics.PHASES:
            metrics.JOB_PHASE.labels(namespace, name, candidate).set(1 if candidate == phase else 0)
        _phases[(namespace, name)] = phase
        _count_phases()
    progress = status.progress
    if progress is not None:
        for gauge, value in (
            (metrics.JOB_RECORDS, progress.records),
            (metrics.JOB_TOKENS, progress.tokens),
            (metrics.JOB_REJECTED, progress.rejected),
            (metrics.JOB_TRAIN_LOSS, progress.train_loss),
        ):
            if value is not None:
                gauge.labels(namespace, name).set(value)
        if progress.shards_total:
            metrics.JOB_PROGRESS.labels(namespace, name, "generate").set(
                (progress.shards_done or 0) / progress.shards_total
            )
    evaluation = status.evaluation
    if evaluation is not None:
        for model in ("teacher", "baseline", "student"):
            score = getattr(evaluation, model)
            if score is not None and score.score is not None:
                metrics.JOB_EVAL_SCORE.labels(namespace, name, model).set(score.score)
        if evaluation.retention is not None:
            metrics.JOB_RETENTION.labels(namespace, name).set(evaluation.retention)


def _count_phases() -> None:
    for phase in metrics.PHASES:
        metrics.JOBS.labels(phase).set(sum(1 for p in _phases.values() if p == phase))
