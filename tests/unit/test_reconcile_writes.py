"""A reconcile that runs before the watch brings the operator's own status write back (its cache still
shows the object it wrote over) must not write the same status again; once the cache has moved on, the
cached status decides again (someone else's change is answered)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from distillery.controller.cache import Cache
from distillery.controller.reconcile import Reconciler
from distillery.controller.settings import OperatorSettings

pytestmark = pytest.mark.unit

KEY = ("ml", "bad")


class StatusRecordingApi:
    """Answers every request with an empty object and keeps the status patches."""

    def __init__(self) -> None:
        self.status_patches: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> dict:
        if method == "PATCH" and url.endswith("/status"):
            self.status_patches.append(body)
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
