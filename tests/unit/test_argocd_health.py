"""The Argo CD health check for DistillationJob, run in Lua 5.1 as Argo CD runs it, on statuses the
operator's own phase machine produces.

Every status here comes from `controller.phases.decide` and `controller.status.next_status` driven
through a job's life on realistic observations of its children (the stages' typed summaries, a
Job's Failed condition with the reason the Kubernetes Job controller writes); the expectations
use `api.Phase`, `api.Reason`, `api.ConditionType` and `contract.FailureReason`, never copies.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from distillery.api import ConditionType, DistillationJobSpec, DistillationJobStatus, Phase, Reason
from distillery.contract.summaries import (
    CheckSummary,
    EvaluateSummary,
    Failure,
    FailureReason,
    GenerateSummary,
    InputSummary,
    TrainSummary,
)
from distillery.controller.observe import JobState, Observed, TeacherState
from distillery.controller.phases import decide
from distillery.controller.status import next_status

pytestmark = pytest.mark.unit

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "examples" / "argocd"
LUA_FILE = ARGOCD_DIR / "health-distillationjob.lua"
CONFIGMAP_FILE = ARGOCD_DIR / "argocd-cm-health.yaml"
HEALTH_KEY = "resource.customizations.health.distillery.dev_DistillationJob"

C = ConditionType
START = datetime(2026, 11, 28, 10, 0, 0, tzinfo=timezone.utc)
SPEC = {
    "teacher": {"model": "models/teacher", "gpus": 1},
    "student": {"model": "models/student"},
    "data": {"taskType": "qa", "train": "d/train.jsonl", "validation": "d/val.jsonl"},
    "generation": {"shards": 2},
    "evaluation": {"gate": {"minRetention": 0.8}, "compare": ["teacher", "student"]},
    "storage": {"pvc": {"size": "10Gi"}},
}
# The phases the operator reports while work goes on; Argo CD shows them as Progressing.
PROGRESSING = {Phase.pending, Phase.teacher_starting, Phase.generating, Phase.training, Phase.evaluating}


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


def resource(status: DistillationJobStatus | None) -> dict[str, Any]:
    """The DistillationJob as Argo CD reads it from the API server (the status as the operator writes it)."""
    obj: dict[str, Any] = {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "nli", "namespace": "default", "generation": 1},
        "spec": SPEC,
    }
    if status is not None:
        obj["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def life(*observations: Observed, spec: dict | None = None, problems: tuple[str, ...] = ()):
    """The statuses the operator writes as it sees each observation in turn, a minute apart."""
    job_spec = DistillationJobSpec.model_validate(spec or SPEC)
    status = DistillationJobStatus()
    statuses = []
    for minute, observed in enumerate(observations):
        now = START + timedelta(minutes=minute)
        step = decide(None if problems else job_spec, list(problems), status, observed, now, "nli")
        status = next_status(status, step, now, 1)
        statuses.append(status)
    return statuses


def running(**fields) -> JobState:
    return JobState(exists=True, **fields)


CHECKED = running(
    complete=True,
    summaries=(
        CheckSummary(inputs={"spec.data.train": InputSummary(location="/data/d/train.jsonl", checked=3)}),
    ),
)
UP = TeacherState(exists=True, ready=True)
GENERATED = running(complete=True, succeeded=2, summaries=(GenerateSummary(records=10, output_tokens=100),))
TRAINED = running(complete=True, summaries=(TrainSummary(train_loss=1.25, step=30),))


def _evaluated(retention: float, passed: bool, reason: str) -> JobState:
    summary = EvaluateSummary.model_validate(
        {
            "evaluation": {
                "metric": "accuracy",
                "teacher": {"score": 0.8},
                "student": {"score": 0.8 * retention},
                "retention": retention,
                "gatePassed": passed,
                "gateReason": reason,
            }
        }
    )
    return running(complete=True, summaries=(summary,))


# The observations of a job that runs to the end, one per phase it goes through.
HAPPY = (
    Observed(),  # new: the check Job is created
    Observed(check=running(active=1)),
    Observed(check=CHECKED),  # the teacher is created
    Observed(check=CHECKED, teacher=TeacherState(exists=True, ready=False)),
    Observed(check=CHECKED, teacher=UP),  # generation starts
    Observed(check=CHECKED, teacher=UP, generate=running(active=2)),
    Observed(check=CHECKED, teacher=UP, generate=GENERATED),  # training starts
    Observed(check=CHECKED, generate=GENERATED, train=running(active=1)),
    Observed(check=CHECKED, generate=GENERATED, train=TRAINED),  # evaluation starts
    Observed(check=CHECKED, generate=GENERATED, train=TRAINED, evaluate=running(active=1)),
    Observed(
        check=CHECKED,
        generate=GENERATED,
        train=TRAINED,
        evaluate=_evaluated(0.9, True, "retention 0.90 >= 0.80"),
    ),
)


def test_a_job_that_succeeds_is_progressing_through_every_running_phase_then_healthy():
    statuses = life(*HAPPY)
    phases = [s.phase for s in statuses]
    assert set(phases) >= PROGRESSING, phases  # the life above goes through every running phase
    for status in statuses[:-1]:
        assert status.phase in PROGRESSING, status.phase
        assert health(resource(status)) == {
            "status": "Progressing",
            "message": status.message or status.phase.value,
        }
    final = statuses[-1]
    assert final.phase is Phase.succeeded
    assert health(resource(final)) == {"status": "Healthy", "message": final.message or Phase.succeeded.value}


def assert_degraded(status: DistillationJobStatus, condition: ConditionType, reason: str) -> None:
    """Argo CD says Degraded, naming the failing condition's reason and type and the job's message."""
    assert status.phase is Phase.failed
    got = (
        next(c for c in status.conditions if c.type == condition).status,
        next(c for c in status.conditions if c.type == condition).reason,
    )
    assert got == ("False", reason)
    assert health(resource(status)) == {
        "status": "Degraded",
        "message": f"{reason} ({condition.value}): {status.message}",
    }


def test_a_failed_check_is_degraded_with_the_checks_reason():
    failure = Failure.of(
        FailureReason.input_not_found, "spec.data.train: s3://prompts/train.parquet does not exist"
    )
    # A check's verdict (InputNotFound exits 2) fails its Job at once through podFailurePolicy's FailJob.
    check = running(failed=True, reason="PodFailurePolicy", failed_summary=CheckSummary(failure=failure))
    *_, status = life(Observed(), Observed(check=check))
    assert_degraded(status, C.inputs_ready, FailureReason.input_not_found.value)
    assert "does not exist" in status.message


def test_a_failed_shard_is_degraded_with_the_stages_reason_not_the_jobs():
    failure = Failure.of(FailureReason.too_few_accepted, "teacher answered 500 to 80% of requests")
    # maxFailedIndexes 0 with backoffLimitPerIndex: the Job controller writes MaxFailedIndexesExceeded
    # (kubernetes pkg/controller/job/job_controller.go, syncJob).
    shards = running(
        failed=True,
        reason="MaxFailedIndexesExceeded",
        failed_indexes="1",
        succeeded=1,
        failed_summary=GenerateSummary(shard=1, shards=2, failure=failure),
    )
    *_, status = life(*HAPPY[:6], Observed(check=CHECKED, teacher=UP, generate=shards))
    assert_degraded(status, C.data_generated, FailureReason.too_few_accepted.value)


def test_a_training_pod_without_a_summary_is_degraded_with_the_jobs_reason():
    # No summary (killed for memory): the condition carries the Job controller's reason.
    train = running(failed=True, reason="BackoffLimitExceeded", pod_error="OOMKilled")
    *_, status = life(*HAPPY[:8], Observed(check=CHECKED, generate=GENERATED, train=train))
    assert_degraded(status, C.student_trained, "BackoffLimitExceeded")


def test_a_failed_quality_gate_is_degraded_with_the_gates_reason():
    evaluate = _evaluated(0.5, False, "retention 0.50 < 0.80")
    *_, status = life(
        *HAPPY[:10], Observed(check=CHECKED, generate=GENERATED, train=TRAINED, evaluate=evaluate)
    )
    assert_degraded(status, C.quality_gate_passed, Reason.gate_failed.value)
    assert "0.50" in health(resource(status))["message"]


def test_an_invalid_spec_is_degraded_with_the_operators_message():
    (status,) = life(Observed(), problems=("spec.storage.pvc: is required in a cluster",))
    assert status.phase is Phase.failed
    assert health(resource(status)) == {"status": "Degraded", "message": status.message}
    assert "spec.storage.pvc" in status.message


def test_a_suspended_job_is_suspended():
    *_, status = life(
        *HAPPY[:6],
        Observed(check=CHECKED, teacher=UP, generate=running(active=2)),
        spec={**SPEC, "suspend": True},
    )
    assert status.phase is Phase.suspended
    assert health(resource(status)) == {
        "status": "Suspended",
        "message": status.message or Phase.suspended.value,
    }


def test_no_status_yet_waits_for_the_operator():
    assert health(resource(None)) == {"status": "Progressing", "message": "Waiting for the operator"}
    assert health(resource(DistillationJobStatus())) == {
        "status": "Progressing",
        "message": "Waiting for the operator",
    }


def test_every_phase_the_api_defines_maps_to_an_argocd_health_status():
    """The script knows every api.Phase (an unknown phase would show as Unknown)."""
    expected = {Phase.succeeded: "Healthy", Phase.failed: "Degraded", Phase.suspended: "Suspended"}
    for phase in Phase:
        status = DistillationJobStatus(phase=phase)
        assert health(resource(status))["status"] == expected.get(phase, "Progressing"), phase
    assert health({**resource(None), "status": {"phase": "Exploded"}})["status"] == "Unknown"


def test_configmap_example_embeds_exactly_the_lua_file() -> None:
    cm = yaml.safe_load(CONFIGMAP_FILE.read_text())
    assert cm["apiVersion"] == "v1"
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][HEALTH_KEY] == LUA_FILE.read_text(), (
        f"{CONFIGMAP_FILE.name} must embed {LUA_FILE.name} verbatim under {HEALTH_KEY}"
    )
