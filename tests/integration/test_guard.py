"""The operator's guard against the emulated API server, configured as the chart configures it.

A job asking for an image, a Secret or a toleration the guard refuses fails before any child
exists, its status and a Warning Event naming the field; a Secret not there yet is waited for;
the Secrets are read as metadata only, and that `get` is the one right the guard adds to the
chart's roles.
"""

from __future__ import annotations

import pytest

from distillery.controller import handlers
from distillery.controller.settings import from_environment
from tests.support.chart import find, granted, render
from tests.support.kmock_cluster import Cluster, spec, verb_of
from tests.support.waiting import wait_for_async

pytestmark = [pytest.mark.integration]

LABEL = "distillery.dev/usable"
# What the chart sets from operator.guard (templates/deployment.yaml).
POLICY = {
    "DISTILLERY_GUARD_IMAGE_PREFIXES": "registry.corp/ml/,vllm/",
    "DISTILLERY_GUARD_SECRET_LABEL": f"{LABEL}=true",
    "DISTILLERY_GUARD_TOLERATION_KEYS": "nvidia.com/gpu",
}


@pytest.fixture
def guarded(cluster: Cluster) -> None:
    """The operator's settings, read from that environment as `distillery operator` reads it."""
    handlers.use_settings(from_environment(POLICY, progress_seconds=1))


def _chart_env() -> dict[str, str]:
    docs = render(
        "operator.guard.allowedImagePrefixes={registry.corp/ml/,vllm/}",
        f"operator.guard.secretLabel={LABEL}=true",
        "operator.guard.allowedTolerationKeys={nvidia.com/gpu}",
    )
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("DISTILLERY_GUARD_")}


def test_the_chart_sets_the_policy_these_tests_run_with():
    assert _chart_env() == POLICY


@pytest.mark.asyncio
async def test_a_refused_image_and_toleration_fail_the_job_before_any_child(cluster: Cluster, guarded: None):
    teacher = {
        "model": "models/teacher",
        "gpus": 0,
        "image": "ghcr.io/someone/vllm:1",
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    }
    async with cluster.operator():
        await cluster.create_job("denied", spec(teacher=teacher))
        status = await cluster.wait_phase("denied", "Failed")
        events = await wait_for_async(lambda: _warnings(cluster, "denied"), "a Warning Event", 20)
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "PolicyDenied")
    assert (
        "spec.teacher.image: image 'ghcr.io/someone/vllm:1' is not under an allowed prefix"
        in status["message"]
    )
    assert "spec.teacher.tolerations[0]: toleration of taint 'dedicated' is not allowed" in status["message"]
    assert any("spec.teacher.image" in e["message"] for e in events)
    created = [
        r
        for r in cluster.operator_requests()
        if r.method.value.upper() == "POST" and r.resource.plural not in ("events",)
    ]
    assert created == [], "nothing of a refused job is created, not even its claim or check"


@pytest.mark.asyncio
async def test_a_secret_is_waited_for_then_allowed_only_with_its_label(cluster: Cluster, guarded: None):
    hf = {"model": "models/teacher", "gpus": 0, "hfTokenSecret": {"name": "hf", "key": "token"}}
    async with cluster.operator():
        await cluster.create_job("gated", spec(teacher=hf))
        waiting = await cluster.wait_phase("gated", "Pending")
        assert "waiting for Secret 'hf' (spec.teacher.hfTokenSecret.name) to exist" in waiting["message"]
        await cluster.create(
            "v1/secrets",
            {"metadata": {"name": "hf", "labels": {LABEL: "true"}}, "data": {"token": "c2VjcmV0"}},
        )
        await cluster.wait_child("batch/v1/jobs", "gated-check", timeout=30)  # rechecked every 10 s
        status = await cluster.job_status("gated")

        await cluster.create("v1/secrets", {"metadata": {"name": "other", "labels": {LABEL: "no"}}})
        await cluster.create_job(
            "unlabelled", spec(teacher={**hf, "hfTokenSecret": {"name": "other", "key": "k"}})
        )
        refused = await cluster.wait_phase("unlabelled", "Failed")
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("True", "Allowed")
    assert "Secret 'other' lacks the label distillery.dev/usable=true" in refused["message"]
    reads = [r for r in cluster.operator_requests() if r.resource.plural == "secrets"]
    assert reads and all(r.method.value.upper() == "GET" for r in reads)
    assert all("as=PartialObjectMetadata" in r.headers.get("Accept", "") for r in reads), "metadata only"
    used = {(r.resource.group or "", r.resource.plural, verb_of(r)) for r in reads}
    with_guard = granted(find(render(f"operator.guard.secretLabel={LABEL}=true"), "ClusterRole"))
    without = granted(find(render(), "ClusterRole"))
    assert with_guard - without == used == {("", "secrets", "get")}


async def _warnings(cluster: Cluster, name: str) -> list[dict]:
    return [
        e
        for e in await cluster.list("v1/events")
        if e.get("type") == "Warning" and e["involvedObject"]["name"] == name
    ]
