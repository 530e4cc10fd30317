"""The Argo CD health check for DistillationJob, run in Lua 5.1 as Argo CD runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "examples" / "argocd"
LUA_FILE = ARGOCD_DIR / "health-distillationjob.lua"
CONFIGMAP_FILE = ARGOCD_DIR / "argocd-cm-health.yaml"
HEALTH_KEY = "resource.customizations.health.distillery.dev_DistillationJob"

PROGRESSING_PHASES = ["Pending", "TeacherStarting", "Generating", "Training", "Evaluating"]


def health(obj: dict[str, Any]) -> dict[str, Any]:
    """Run the health script on `obj` the way Argo CD does: `obj` global, script returns hs."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(LUA_FILE.read_text())
    assert hs is not None, "the script must return hs"
    result = dict(hs.items())
    assert set(result) == {"status", "message"}, result
    return result


def job(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "nli", "namespace": "default", "generation": 1},
        "spec": {"teacher": {"model": "t"}, "student": {"model": "s"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(
    type_: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
    at: str = "2026-11-28T10:00:00Z",
) -> dict[str, Any]:
    c = {"type": type_, "status": status, "lastTransitionTime": at}
    if reason is not None:
        c["reason"] = reason
    if message is not None:
        c["message"] = message
    return c


@pytest.mark.unit
@pytest.mark.parametrize("phase", PROGRESSING_PHASES)
def test_running_phases_are_progressing(phase: str) -> None:
    assert health(job({"phase": phase, "message": "3/8 shards"})) == {
        "status": "Progressing",
        "message": "3/8 shards",
    }
    # Without a message the phase itself is shown.
    assert health(job({"phase": phase})) == {"status": "Progressing", "message": phase}


@pytest.mark.unit
def test_succeeded_is_healthy() -> None:
    assert health(job({"phase": "Succeeded", "message": "retention 0.97"})) == {
        "status": "Healthy",
        "message": "retention 0.97",
    }
    assert health(job({"phase": "Succeeded"}))["status"] == "Healthy"


@pytest.mark.unit
def test_suspended_is_suspended() -> None:
    assert health(job({"phase": "Suspended", "message": "spec.suspend is true"})) == {
        "status": "Suspended",
        "message": "spec.suspend is true",
    }


@pytest.mark.unit
def test_failed_without_conditions_is_degraded_with_the_message() -> None:
    assert health(job({"phase": "Failed", "message": "spec.training.epochs: must be > 0"})) == {
        "status": "Degraded",
        "message": "spec.training.epochs: must be > 0",
    }
    assert health(job({"phase": "Failed", "conditions": []})) == {"status": "Degraded", "message": "Failed"}


@pytest.mark.unit
def test_failed_names_the_failing_conditions_reason() -> None:
    status = {
        "phase": "Failed",
        "message": "2 of 8 shards failed after 3 retries",
        "conditions": [
            cond("TeacherReady", "True", "DeploymentAvailable", at="2026-11-28T10:00:00Z"),
            cond("DataGenerated", "False", "ShardsFailed", "shard 3: timeout", at="2026-11-28T10:05:00Z"),
        ],
    }
    assert health(job(status)) == {
        "status": "Degraded",
        "message": "ShardsFailed (DataGenerated): 2 of 8 shards failed after 3 retries",
    }


@pytest.mark.unit
def test_failed_falls_back_to_the_conditions_message() -> None:
    status = {
        "phase": "Failed",
        "conditions": [cond("QualityGatePassed", "False", "RetentionBelowMinimum", "retention 0.71 < 0.90")],
    }
    assert health(job(status)) == {
        "status": "Degraded",
        "message": "RetentionBelowMinimum (QualityGatePassed): retention 0.71 < 0.90",
    }
    # Reason only, when nobody wrote a message.
    status = {"phase": "Failed", "conditions": [cond("StudentTrained", "False", "OOMKilled")]}
    assert health(job(status))["message"] == "OOMKilled (StudentTrained)"


@pytest.mark.unit
def test_failed_picks_the_most_recent_false_condition() -> None:
    status = {
        "phase": "Failed",
        "message": "boom",
        "conditions": [
            # Not reached yet: False too, but earlier.
            cond("Evaluated", "False", "NotStarted", at="2026-11-28T09:00:00Z"),
            cond("StudentTrained", "False", "BackoffLimitExceeded", at="2026-11-28T11:30:00Z"),
            cond("QualityGatePassed", "False", "NotStarted", at="2026-11-28T09:00:00Z"),
        ],
    }
    assert health(job(status))["message"] == "BackoffLimitExceeded (StudentTrained): boom"


@pytest.mark.unit
def test_failed_ignores_conditions_without_a_reason() -> None:
    status = {
        "phase": "Failed",
        "message": "teacher endpoint unreachable",
        "conditions": [cond("TeacherReady", "False"), cond("DataGenerated", "True", "Done")],
    }
    assert health(job(status)) == {"status": "Degraded", "message": "teacher endpoint unreachable"}


@pytest.mark.unit
@pytest.mark.parametrize("status", [None, {}, {"phase": ""}, {"observedGeneration": 1}])
def test_no_phase_yet_waits_for_the_operator(status: dict[str, Any] | None) -> None:
    assert health(job(status)) == {"status": "Progressing", "message": "Waiting for the operator"}


@pytest.mark.unit
def test_unknown_phase_is_unknown_not_an_error() -> None:
    assert health(job({"phase": "Exploded"})) == {"status": "Unknown", "message": "Unknown phase Exploded"}


@pytest.mark.unit
def test_every_phase_maps_to_an_argocd_health_status() -> None:
    # The phases the DistillationJob status may carry (DESIGN.md, "API").
    phases = [*PROGRESSING_PHASES, "Succeeded", "Failed", "Suspended"]
    argocd_statuses = {"Healthy", "Progressing", "Degraded", "Suspended"}
    for phase in phases:
        assert health(job({"phase": phase}))["status"] in argocd_statuses, phase


@pytest.mark.unit
def test_configmap_example_embeds_exactly_the_lua_file() -> None:
    cm = yaml.safe_load(CONFIGMAP_FILE.read_text())
    assert cm["apiVersion"] == "v1"
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][HEALTH_KEY] == LUA_FILE.read_text(), (
        f"{CONFIGMAP_FILE.name} must embed {LUA_FILE.name} verbatim under {HEALTH_KEY}"
    )
