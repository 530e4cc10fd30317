"""kopf wiring: watch events fill the cache and queue reconciles; leader election decides who runs them.

Event-driven: a DistillationJob's own events and its children's (Deployments, Jobs, Pods,
Services, NetworkPolicies and claims the operator labelled, watched with a server-side label
selector) queue a reconcile of that job (`queue`); the reconcile reads everything from the
cache (`cache`) and decides in pure code (`phases`, `status`). A slow resync (every
`resync_seconds`) is only a safety net. No kopf timers, so no finalizer on the jobs: deleting one
is immediate, the garbage collector removes what it owns.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import kopf
from kubernetes import client

from distillery import backoff
from distillery.api import GROUP, PLURAL, VERSION
from distillery.controller import metrics
from distillery.controller.apiclient import Api
from distillery.controller.cache import CHILD_KINDS, Cache, key_of
from distillery.controller.leader import LeaderElection, identity
from distillery.controller.progress import ProgressScraper
from distillery.controller.queue import WorkQueue
from distillery.controller.reconcile import Reconciler
from distillery.controller.settings import OperatorSettings
from distillery.manifests.common import MANAGED_BY, MANAGER

registry = kopf.OperatorRegistry()

OWN_LABELS = f"{MANAGED_BY}={MANAGER}"
# Children whose only state the phase machine reads is that they exist: their creation (by us)
# needs no reconcile of the job, their deletion does (they are made again).
PRESENCE_ONLY = frozenset({"Service", "NetworkPolicy", "PersistentVolumeClaim"})


class Runtime:
    """The operator's moving parts, made at startup from its settings (tests run several operators
    in one process, in turn)."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.cache = Cache()
        self.logged_in = asyncio.Event()
        self.api = Api(self.logged_in, limiter=settings.write_limit())
        self.live: dict[tuple[str, str], dict[str, Any]] = {}  # progress the running stage pods report
        self.election: LeaderElection | None = None
        self.reconciler = Reconciler(self.cache, self.api, self.live, settings)
        self.queue = WorkQueue(self.reconciler, workers=settings.workers, active=self.is_leader)
        self.scraper = ProgressScraper(self.cache, self.live, self.queue.request, self.is_leader)
        self.scraper.interval = settings.progress_seconds
        self.ready = False
        self.beat = 0.0
        self.tasks: list[asyncio.Task] = []  # background loops, cancelled at cleanup

    def is_leader(self) -> bool:
        return self.election is None or self.election.leader


# Made by `configure` when kopf starts (kopf runs the startup handler before any other), from the
# settings `use_settings` gave; nothing is made, and nothing read, when this module is imported.
runtime: Runtime | None = None
_settings: dict[str, OperatorSettings] = {}


def use_settings(settings: OperatorSettings | None) -> None:
    """The settings the next operator run starts with (`distillery operator`, tests); None: the defaults."""
    _settings.pop("next", None)
    if settings is not None:
        _settings["next"] = settings


def health() -> dict[str, Any]:
    """What /healthz and /readyz report: ready once started; healthy while the event loop beats."""
    if runtime is None:
        return {"ready": False, "age": None, "leader": False}
    return {
        "ready": runtime.ready,
        "age": time.monotonic() - runtime.beat if runtime.beat else None,
        "leader": runtime.is_leader(),
    }


# ------------------------------------------------------------------ login

# Set by `use_configuration` (tests, embedding); None: in-cluster service account or kubeconfig.
_configuration: dict[str, client.Configuration] = {}


def use_configuration(configuration: client.Configuration) -> None:
    """Point both the official client and kopf at this API server instead of the usual lookup."""
    client.Configuration.set_default(configuration)
    _configuration["explicit"] = configuration


@kopf.on.login(registry=registry)
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf and the official client share one set of credentials.

    kopf's `login_via_client` loads the service account (in a pod) or the kubeconfig and
    sets it as the official client's default too; it runs again whenever the API answers
    401, so a rotated service-account token is picked up.
    """
    configuration = _configuration.get("explicit")
    if configuration is None:
        info = kopf.login_via_client(**kwargs)
    else:
        info = kopf.ConnectionInfo(
            server=configuration.host,
            insecure=not configuration.verify_ssl,
            ca_path=configuration.ssl_ca_cert,
        )
    runtime.logged_in.set()  # the official client's default configuration is now the operator's
    return info


# ------------------------------------------------------------------ startup and shutdown


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global runtime
    runtime = Runtime(_settings.get("next") or OperatorSettings())
    # Ask the API server to end each watch after 5 min, and give up on our side a little
    # later: a watch whose TCP connection died without a FIN otherwise hangs forever and the
    # operator silently stops seeing changes (kopf issues #204 and #585).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's own API calls (events) must not block forever either.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # kopf resumes a watch that ends (from its last resourceVersion, or listing again after 410 Gone), but
    # gives up on a request once its error_backoffs run out (about a minute of 5xx, 429 or timeouts), and a
    # watch that gave up stops the operator (a restart then lists everything afresh). Retry instead for as
    # long as the API server is away, 1-2, 2-4 ... 15-30 s apart: waiting beats a crash loop.
    settings.networking.error_backoffs = EndlessBackoff()
    # Only the operator's own children and their pods are watched, filtered by the API server.
    for group, version, plural in CHILD_KINDS.values():
        settings.watching.label_selectors[group or version, plural] = OWN_LABELS
    # Our transitions become Events; kopf's own chatter does not.
    settings.posting.level = logging.WARNING
    # kopf deep-copies every watched body twice per event to diff it against the last handled state, for
    # change-detecting handlers (on.create/update/...). The operator has none (index and event handlers
    # only), so that copy is pure cost: about a quarter of kopf's work per event at a thousand jobs.
    settings.persistence.diffbase_storage = NoDiffBase()
    logging.getLogger("distillery.operator").info("%s", runtime.reconciler.guard.describe())
    loops = [_resync(), _heartbeat(), runtime.scraper.run()]
    chosen = runtime.settings
    if chosen.leader_elect:
        runtime.election = LeaderElection(
            runtime.api,
            chosen.leader_elect,
            chosen.lease_namespace(),
            identity(chosen.pod_name),
            on_elected=_take_over,
        )
        loops.append(runtime.election.run())
    else:
        metrics.LEADER.set(1)
    await runtime.queue.start()
    runtime.tasks = [asyncio.create_task(loop) for loop in loops]
    runtime.beat, runtime.ready = time.monotonic(), True


@kopf.on.cleanup(registry=registry)
async def shut_down(**_: Any) -> None:
    runtime.ready = False
    for task in runtime.tasks:
        task.cancel()
    await runtime.queue.stop()
    await runtime.api.close()


def _take_over() -> None:
    """Just elected: reconcile every job the cache holds (the old leader may have left work half done)."""
    runtime.queue.request_all(runtime.cache.jobs())


async def _resync() -> None:
    while True:
        await asyncio.sleep(runtime.settings.resync_seconds)
        if runtime.is_leader():
            runtime.queue.request_all(runtime.cache.jobs())


async def _heartbeat() -> None:
    """Beats while the operator's event loop is responsive; /healthz fails when it stops."""
    while True:
        runtime.beat = time.monotonic()
        await asyncio.sleep(5)


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence to diff: kopf builds one only for change-detecting handlers, which this operator has not.

    `build` returning None makes kopf skip the diff (and its progress-storage copy); were a change
    handler ever added, `configure` must drop this storage, and tests/unit/test_operator_events.py says so."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


class EndlessBackoff:
    """kopf's error_backoffs that never run out: iterated afresh for every request."""

    def __iter__(self) -> Iterator[float]:
        for attempt in itertools.count():
            yield backoff.delay(attempt, 2.0, 30.0)


# ------------------------------------------------------------------ watch events
#
# kopf runs every indexing handler for the initial listing of every watched resource before it
# runs any other handler: so the cache is filled from indexing handlers (they store nothing in
# kopf's own index), and a job's first reconcile sees all its children, never a cold cache that
# would re-create them or rewrite its status backwards after an operator restart. Deletions
# reach the event handlers (indexing handlers are not called for them).


@kopf.index(GROUP, VERSION, PLURAL, registry=registry)
async def job_index(body: kopf.Body, **_: Any) -> None:
    runtime.cache.put_job(dict(body))


@kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
async def job_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    key = key_of(body)
    if type == "DELETED":
        runtime.cache.drop_job(key)
        metrics.forget_job(*key, body.get("metadata", {}).get("uid", ""))
        return
    if not runtime.reconciler.unchanged(key, dict(body)):  # not just the echo of our own status write
        runtime.queue.request(key)


def _child_handlers(kind: str) -> tuple[Any, Any]:
    async def index(body: kopf.Body, **_: Any) -> None:
        runtime.cache.put_child(kind, dict(body))

    async def event(type: str | None, body: kopf.Body, **_: Any) -> None:
        deleted = type == "DELETED"
        owner = runtime.cache.put_child(kind, dict(body), deleted=deleted)
        if owner is not None and (deleted or kind not in PRESENCE_ONLY):
            runtime.queue.request(owner)

    return index, event


for _kind, (_group, _version, _plural) in CHILD_KINDS.items():
    _resource = (_group, _version, _plural) if _group else (_version, _plural)
    _index, _event = _child_handlers(_kind)
    kopf.index(*_resource, labels={MANAGED_BY: MANAGER}, registry=registry, id=f"{_kind.lower()}-index")(
        _index
    )
    kopf.on.event(*_resource, labels={MANAGED_BY: MANAGER}, registry=registry, id=f"{_kind.lower()}-event")(
        _event
    )
