"""A reconcile that runs before the watch brings the operator's own status write back (its cache still
shows the object it wrote over) must not write the same status again; once the cache has moved on, the
cached status decides again (someone else's change is answered)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from distillery.controller import reconcile as reconcile_module
from distillery.controller.cache import Cache
from distillery.controller.reconcile import Reconciler
from distillery.controller.settings import OperatorSettings

pytestmark = pytest.mark.unit

KEY = ("ml", "bad")
KEY_OK = ("ml", "good")


class StatusRecordingApi:
    """Answers every request with an empty object and keeps the status patches."""

    def __init__(self) -> None:
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[str] = []  # the reasons of the Events posted

    async def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> dict:
        if method == "PATCH" and url.endswith("/status"):
            self.status_patches.append(body)
        if method == "POST" and url.endswith("/events"):
            self.events.append(body["reason"])
        return {}


def invalid_job(resource_version: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job the operator fails at once: kd needs the teacher's top log-probabilities."""
    spec = {
        "teacher": {"model": "models/teacher", "gpus": 0},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
        "training": {"method": "kd"},
        "storage": {"pvc": {"size": "1Gi"}},
    }
    body = {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {
            "name": "bad",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": resource_version,
        },
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def valid_job(resource_version: str) -> dict[str, Any]:
    """A job the operator starts: its first reconcile creates the input check."""
    body = invalid_job(resource_version)
    body["metadata"]["name"] = "good"
    del body["spec"]["training"]
    return body


@pytest.mark.asyncio
async def test_a_stale_cache_does_not_write_the_same_status_twice():
    cache, api = Cache(), StatusRecordingApi()
    cache.put_job(invalid_job("1"))
    reconcile = Reconciler(cache, api, settings=OperatorSettings())

    await reconcile(KEY)
    assert len(api.status_patches) == 1
    written = api.status_patches[0]
    assert written["status"]["phase"] == "Failed", written

    for _ in range(3):  # the watch has not brought our write back: the cache shows resourceVersion 1
        await reconcile(KEY)
    assert len(api.status_patches) == 1, "the same status written again over a stale cache"

    cache.put_job(invalid_job("2", copy.deepcopy(written["status"])))  # our write, back through the watch
    await reconcile(KEY)
    assert len(api.status_patches) == 1

    cache.put_job(invalid_job("3"))  # someone cleared the status: the operator writes it again
    await reconcile(KEY)
    assert len(api.status_patches) == 2


class Later(datetime):
    """The reconcile's clock, moved on by `shift` (a later reconcile of the same job)."""

    shift = timedelta(0)

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + cls.shift


@pytest.mark.asyncio
async def test_a_later_reconcile_over_a_stale_cache_takes_no_transition_twice(monkeypatch):
    """A child's event can run the job's next reconcile before the watch brings back the status the last
    one wrote; seconds later, starting from the cached status would start the job again: new times in
    status, a second status write, the same Events twice."""
    monkeypatch.setattr(reconcile_module, "datetime", Later)
    cache, api = Cache(), StatusRecordingApi()
    cache.put_job(valid_job("1"))
    reconcile = Reconciler(cache, api, settings=OperatorSettings())

    await reconcile(KEY_OK)
    assert len(api.status_patches) == 1 and api.events, (api.status_patches, api.events)
    events = list(api.events)
    Later.shift = timedelta(seconds=5)
    await reconcile(KEY_OK)  # the cache still shows resourceVersion 1, without the status written
    assert len(api.status_patches) == 1, api.status_patches
    assert api.events == events, "the same transition's Events posted twice"

    cache.put_job(valid_job("3"))  # someone cleared the status: the operator writes it again
    await reconcile(KEY_OK)
    assert len(api.status_patches) == 2


class VersionedApi(StatusRecordingApi):
    """As the API server answers a status patch: the job with its new resourceVersion (2, 3, ...)."""

    async def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> dict:
        await super().request(method, url, body, *args, **kwargs)
        if method == "PATCH" and url.endswith("/status"):
            return {"metadata": {"resourceVersion": str(len(self.status_patches) + 1)}}
        return {}


def completed_check(job: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The job's check Job, complete, and the pod it ran, whose termination message is the stage's summary."""
    from distillery.api import DistillationJob
    from distillery.contract.summaries import CheckSummary, termination_message
    from distillery.manifests import BuildConfig, build

    check = build("check", DistillationJob.model_validate(job), BuildConfig())
    check["metadata"].update(uid="j-1", resourceVersion="1")
    check["status"] = {
        "succeeded": 1,
        "startTime": "2026-12-07T12:00:00Z",
        "completionTime": "2026-12-07T12:00:05Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    template = check["spec"]["template"]
    terminated = {"exitCode": 0, "reason": "Completed", "message": termination_message(CheckSummary())}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "good-check-x1",
            "namespace": "ml",
            "labels": {**template["metadata"]["labels"], "job-name": check["metadata"]["name"]},
        },
        "spec": template["spec"],
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": c["name"], "ready": False, "state": {"terminated": terminated}}
                for c in template["spec"]["containers"]
            ],
        },
    }
    return [("Job", check), ("Pod", pod)]


@pytest.mark.asyncio
async def test_the_echo_of_an_earlier_write_is_not_taken_for_the_latest_status(monkeypatch):
    """Two writes before the watch brings the first back: the first's event (a newer resourceVersion than
    the cache had) still predates the second, so the job does not go back and take the second step again."""
    monkeypatch.setattr(reconcile_module, "datetime", Later)
    Later.shift = timedelta(0)
    cache, api = Cache(), VersionedApi()
    cache.put_job(valid_job("1"))
    reconcile = Reconciler(cache, api, settings=OperatorSettings())
    await reconcile(KEY_OK)  # Pending, the check created; the write makes resourceVersion 2
    for kind, body in completed_check(valid_job("1")):
        cache.put_child(kind, body)
    await reconcile(KEY_OK)  # the check done: TeacherStarting, over the cache's resourceVersion 1
    first, second = (patch["status"] for patch in api.status_patches)
    assert (first["phase"], second["phase"]) == ("Pending", "TeacherStarting")
    events = list(api.events)

    echo = valid_job("2")
    echo["status"] = copy.deepcopy(first)
    cache.put_job(echo)  # the first write's own event arrives now
    Later.shift = timedelta(seconds=5)
    await reconcile(KEY_OK)
    assert len(api.status_patches) == 2, api.status_patches[2:]
    assert api.events == events
