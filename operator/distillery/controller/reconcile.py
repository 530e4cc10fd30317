"""One reconcile of one DistillationJob: from the cache, ask the phase machine, carry the step out, write status.

Reads nothing from the API server (the cache has the job and its children, kept current by
watch events); writes only what changed. API errors are sorted: a 4xx other than 409/429 is
the API server refusing what we asked (an invalid child, a quota) and fails the job with the
server's message; 429, 5xx and timeouts are retried with backoff while the status says so, and so is
a reconcile that fails for any other reason (a bug), each counted by cause in
`distillery_reconcile_errors_total`.
Every job gets a phase on its first reconcile, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.rest import ApiException

from distillery import backoff
from distillery.api import DistillationJob, DistillationJobStatus, Phase, cluster_problems
from distillery.contract.cost import priced
from distillery.contract.stages import Stage
from distillery.controller import faults, guard, kube, metrics, phases, policy, status
from distillery.controller.apiclient import TRANSIENT, Api, fault_reason
from distillery.controller.cache import Cache, Key
from distillery.controller.observe import Admission, from_children
from distillery.controller.queue import Backoff
from distillery.controller.settings import OperatorSettings
from distillery.errors import InvalidJob, format_problem, parse_job

logger = logging.getLogger("distillery.reconcile")

# Retry of a failed reconcile (the API requests' own retries spent, or a bug): 1-2, 2-4, 4-8 ... seconds
# (jittered, so jobs that failed together do not retry together), at most a minute apart.
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 60.0
# A claim named by storage.pvc.claimName that is not there yet is looked for again this often.
CLAIM_RECHECK_SECONDS = 10.0


class Reconciler:
    def __init__(
        self,
        cache: Cache,
        api: Api,
        live: dict[Key, dict[str, Any]] | None = None,
        settings: OperatorSettings | None = None,
    ):
        settings = settings if settings is not None else OperatorSettings()
        self.cache = cache
        self.api = api
        self.guard = settings.guard()
        self.config = settings.build_config()  # what the builders make every child with
        # Whether the JobSet CRD is served, looked up once, when a training stage is first made (kube.jobset_served).
        self._discovered = False
        # Validated with the settings: a bad table stops the operator at start.
        self.prices = settings.prices()
        self.live = live if live is not None else {}  # what running stage pods report (controller.progress)
        self._seen: dict[
            Key, tuple[Any, dict[str, Any]]
        ] = {}  # (generation, status) as our last reconcile left it
        # Our last status write per job: a reconcile running before the watch has brought it back (the
        # cache still shows an object from before it) starts from it; once the cache shows it, or anyone
        # else's later change, the cached status decides (`_known_status`).
        self._written: dict[Key, Written] = {}
        self._exported: dict[Key, tuple[Any, ...]] = {}  # (uid, status, restarts) last set in the metrics
        self._failures: dict[Key, int] = {}  # consecutive failed reconciles per job
        self.faults = faults.Recorder()  # the operator's faults per job, for their Events (`faults`)
        self._fault_due: dict[Key, float] = {}  # seconds until a fault left unreported may be posted
        self.rng = random.Random()

    async def __call__(self, key: Key) -> float | Backoff | None:
        """Reconcile `key`; returns seconds until it must run again (a deadline), a Backoff, or None."""
        body = self.cache.job(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.faults.forget(key)
            self._written.pop(key, None)
            self._exported.pop(key, None)
            return None  # deleted: the garbage collector removes owned children
        started = time.monotonic()
        token = self.faults.start()
        try:
            again = await self._reconcile(key, body)
        except Exception as error:  # every failure is retried with backoff; an unexpected one is logged whole
            reason = fault_reason(error)
            metrics.RECONCILES.labels("error" if reason == "unexpected" else "retry").inc()
            metrics.RECONCILE_ERRORS.labels(reason).inc()
            faults.note(reason)
            return await self._retry(key, body, error, reason)
        else:
            metrics.RECONCILES.labels("ok").inc()
            self._failures.pop(key, None)
            # Come back when a fault left unreported may be posted: one within its class's minute, or one
            # met after the report (this reconcile's own status write retried).
            self.faults.collect(key, datetime.now(timezone.utc))
            dues = [self._fault_due.pop(key, None), self.faults.due(key, datetime.now(timezone.utc)), again]
            return min((d for d in dues if d is not None), default=None)
        finally:
            self.faults.stop(key, token, datetime.now(timezone.utc))
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    async def _reconcile(self, key: Key, body: dict[str, Any]) -> float | None:
        meta = body.get("metadata") or {}
        old = self._known_status(key, body)
        job, problems = parse(body)
        now = datetime.now(timezone.utc)
        claim_missing = job is not None and await self._claim_missing(job, old)
        admission = await self._admission(job, old) if job is not None else None
        observed = from_children(self.cache.children(key), claim_missing, self.live.get(key), admission)
        step = phases.decide(job.spec if job else None, problems, old, observed, now, key[1])
        if job is not None and step.cost is not None:
            step = replace(step, cost=priced(step.cost, job.spec, self.prices, self.config.currency))
            # The evaluation Job's builder passes the cost so far to the stage, for its report.
            job = job.model_copy(update={"status": DistillationJobStatus(cost=step.cost)})
        if step.delete_self:
            logger.info("%s/%s: ttlSecondsAfterFinished has passed; deleting the DistillationJob", *key)
            await kube.delete_job(self.api, *key)
            return None
        if Stage.train in step.ensure and not self._discovered:
            self.config = replace(self.config, jobset_installed=await kube.jobset_served(self.api))
            self._discovered = True
            logger.info(
                "JobSet CRD %s",
                "found: training.launcher auto runs JobSets"
                if self.config.jobset_installed
                else "absent: training runs as Jobs",
            )
        try:
            await kube.carry_out(self.api, key, job, step, self.cache.children(key), self.config, logger)
        except kube.ChildRefused as refusal:
            step = policy.child_refused(step, refusal.child, str(refusal), observed)
            await kube.carry_out(self.api, key, job, step, self.cache.children(key), self.config, logger)
        new = status.next_status(old, step, now, meta.get("generation"))
        if job is not None and new.spec_hashes is None:
            new.spec_hashes = policy.spec_hashes(job.spec)
        notices = self._fault_report(key, new, observed.restarts(), now)
        await self._write(body, old, new, notices)
        for stage in step.finished_stages:
            seconds = status.stage_duration(observed.job(stage))
            if seconds is not None:
                metrics.STAGE_DURATION.labels(stage).observe(seconds)
        exported = (meta.get("uid", ""), self._seen[key][1], observed.restarts())
        if self._exported.get(key) != exported:  # a reconcile that changed nothing sets no series again
            metrics.export_status(key[0], key[1], exported[0], new)
            metrics.export_restarts(key[0], key[1], exported[0], exported[2])
            self._exported[key] = exported
        if claim_missing or (admission is not None and admission.missing_secrets):
            return CLAIM_RECHECK_SECONDS
        if job is not None and new.phase is not None and new.phase.is_terminal:
            # The TTL counts from the completion this reconcile may just have written.
            ttl = phases.finished(job.spec, new, observed, now)
            return 0.0 if ttl.delete_self else ttl.requeue_after
        return step.requeue_after

    async def _claim_missing(self, job: DistillationJob, old: DistillationJobStatus) -> bool:
        """Only before anything runs: a claim deleted later shows up as failing pods, not as Pending."""
        pvc = job.spec.storage.pvc
        if pvc is None or pvc.claim_name is None or old.phase not in (None, Phase.pending):
            return False
        return await kube.get_claim(self.api, job.metadata.namespace, pvc.claim_name) is None

    async def _admission(self, job: DistillationJob, old: DistillationJobStatus) -> Admission | None:
        """The guard's verdict, before anything of the job runs (a running job is not stopped by a new policy)."""
        if not self.guard.enabled or old.phase not in (None, Phase.pending):
            return None
        named = guard.secrets(job.spec) if self.guard.secret_label else []
        labels, missing = {}, []
        for field, name in named:
            found = await kube.get_secret_labels(self.api, job.metadata.namespace, name)
            if found is None:
                missing.append(f"{name!r} ({field})")
            else:
                labels[name] = found
        denied = guard.denials(job.spec, self.guard, self.config, labels)
        return Admission(tuple(denied), tuple(missing), self.guard.describe())

    def _known_status(self, key: Key, body: dict[str, Any]) -> DistillationJobStatus:
        """The job's status as the API server holds it. While the cache still shows the object our last
        status write went over (a child's event ran this reconcile before the watch brought the write back),
        that is the cached status with our merge patch applied: starting from the cached one would take the
        same transition again, post its Events twice and write the status a second time."""
        meta = body.get("metadata") or {}
        written = self._written.get(key)
        if written is not None and written.stale(meta):
            return read_status({"status": merge_patch(body.get("status") or {}, written.status)})
        return read_status(body)

    def unchanged(self, key: Key, body: dict[str, Any]) -> bool:
        """Whether a watch event only echoes what our last reconcile of the job wrote (nothing to do)."""
        seen = self._seen.get(key)
        generation = (body.get("metadata") or {}).get("generation")
        return seen is not None and seen == (generation, status.status_document(read_status(body)))

    def _fault_report(
        self, key: Key, new: DistillationJobStatus, restarts: dict[str, int], now: datetime
    ) -> list[faults.Notice]:
        """Set `new.faults` and return the fault Events due (`faults.report`); remember when the next is due."""
        self.faults.collect(key, now)
        previous = new.faults or {}
        updated, notices = faults.report(
            previous, self.faults.operator(key, now), restarts, now, self.faults.posted(key, previous)
        )
        self.faults.reported(key, [n.fault_class for n in notices], now)
        new.faults = updated or None
        due = faults.next_due(updated, self.faults.pending(key), restarts, now)
        if due is not None:
            self._fault_due[key] = due
        return notices

    async def _write(
        self,
        body: dict[str, Any],
        old: DistillationJobStatus,
        new: DistillationJobStatus,
        notices: Sequence[faults.Notice] = (),
    ) -> None:
        new_doc = status.status_document(new)
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self._seen[key] = ((body.get("metadata") or {}).get("generation"), new_doc)
        metadata = body.get("metadata") or {}
        last = self._written.get(key)
        if new_doc == status.status_document(old) or (
            last is not None and last.stale(metadata) and last.status == new_doc
        ):
            return
        namespace, name = metadata["namespace"], metadata["name"]
        answer = await kube.patch_status(self.api, namespace, name, new_doc)
        self._written[key] = Written.after(last, metadata, answer, new_doc)
        fault_events = [status.Event("Warning", n.reason, n.message) for n in notices]
        for event in [*status.events(old, new), *fault_events]:
            logger.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
            try:
                await kube.post_event(self.api, body, event.type, event.reason, event.message)
            except (ApiException, *TRANSIENT) as error:
                # Events are a courtesy; the status (written above) is the record. Never retry for them.
                logger.warning(
                    "%s/%s: could not post the %s Event: %s",
                    namespace,
                    name,
                    event.reason,
                    kube.describe_error(error),
                )

    async def _retry(self, key: Key, body: dict[str, Any], error: Exception, reason: str) -> Backoff:
        """A failed reconcile (API trouble, or a bug of ours): back off, and say so in status (best effort:
        the API may be down)."""
        attempts = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff.delay(attempts - 1, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, self.rng)
        if reason == "unexpected":
            cause = f"the operator failed: {type(error).__name__}: {error}"
            logger.exception("%s/%s: %s; retrying in %.0f s (attempt %d)", *key, cause, delay, attempts)
        else:
            cause = kube.describe_error(error)
            logger.warning("%s/%s: %s; retrying in %.0f s (attempt %d)", *key, cause, delay, attempts)
        old = read_status(body)
        new = old.model_copy(
            update={"phase": old.phase or Phase.pending, "message": f"retrying: {cause} (attempt {attempts})"}
        )
        notices = self._fault_report(key, new, {}, datetime.now(timezone.utc))
        self._fault_due.pop(key, None)  # the retry comes sooner than a minute: it reports what is due then
        with contextlib.suppress(Exception):
            await self._write(body, old, new, notices)  # the next attempt tries again
        return Backoff(delay)


@dataclass(frozen=True)
class Written:
    """The operator's last status write of a job, and the resourceVersions of the job that show it as it
    was before that write: those it wrote over, and those its own earlier writes made (an event of one of
    them can still be on its way). Opaque strings, compared for equality only, as the API asks."""

    uid: Any
    status: dict[str, Any]
    made: Any  # the resourceVersion this write made (None: the answer did not say)
    before: tuple[Any, ...]  # the latest last, at most KEPT_VERSIONS

    def stale(self, metadata: dict[str, Any]) -> bool:
        """Whether a cached body with this metadata predates the write."""
        return metadata.get("uid") == self.uid and metadata.get("resourceVersion") in self.before

    @staticmethod
    def after(
        last: Written | None,
        metadata: dict[str, Any],
        answer: dict[str, Any] | None,
        document: dict[str, Any],
    ) -> Written:
        uid = metadata.get("uid")
        before = (*last.before, last.made) if last is not None and last.uid == uid else ()
        before = (*before, metadata.get("resourceVersion"))[-KEPT_VERSIONS:]
        made = ((answer or {}).get("metadata") or {}).get("resourceVersion")
        return Written(uid, document, made, before)


# A job's status is written a few times per stage; events older than this many writes are long delivered.
KEPT_VERSIONS = 16


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies the operator's status writes."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


def read_status(body: dict[str, Any]) -> DistillationJobStatus:
    try:
        return DistillationJobStatus.model_validate(body.get("status") or {})
    except ValueError:
        return DistillationJobStatus()  # a status we cannot read is rebuilt from the children


_parsed: dict[tuple[Any, ...], tuple[DistillationJob | None, list[str]]] = {}


def parse(body: dict[str, Any]) -> tuple[DistillationJob | None, list[str]]:
    """The job validated, or the problems; the same spec is validated once (its models are frozen in use)."""
    meta = body.get("metadata") or {}
    key = (
        meta.get("namespace"),
        meta.get("name"),
        meta.get("uid"),
        json.dumps(body.get("spec"), sort_keys=True),
    )
    if key not in _parsed:
        if len(_parsed) > 4096:  # bounded: a job's old specs go
            _parsed.clear()
        _parsed[key] = _parse(body)
    return _parsed[key]


def _parse(body: dict[str, Any]) -> tuple[DistillationJob | None, list[str]]:
    document = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    document["metadata"] = {
        k: v for k, v in (body.get("metadata") or {}).items() if k in ("name", "namespace", "uid")
    }
    try:
        job = parse_job(document)
    except InvalidJob as error:
        return None, [format_problem(p) for p in error.problems]
    refused = cluster_problems(job.spec)
    if refused:
        return None, [format_problem(p) for p in refused]
    return job, []
