"""The phase machine's inputs as its tests write them: a spec from a small base with changes, a
status with some conditions true, a child Job's and the teacher's observed state, the stages'
typed summaries, and a fixed `NOW` (tests/unit: test_phases, test_stage_table, test_cost, test_guard)."""

from __future__ import annotations

from datetime import datetime, timezone

from distillery.api import ConditionType, DistillationJobSpec, DistillationJobStatus, Phase
from distillery.contract.summaries import (
    CheckSummary,
    EvaluateSummary,
    Failure,
    FailureReason,
    GenerateSummary,
    InputSummary,
)
from distillery.controller.observe import JobState, TeacherState

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


BASE = {
    "teacher": {"model": "models/teacher", "gpus": 1, "startupTimeoutSeconds": 600},
    "student": {"model": "models/student"},
    "data": {"taskType": "qa", "train": "d/train.jsonl", "validation": "d/val.jsonl"},
    "generation": {"shards": 4},
    "evaluation": {"gate": {"minRetention": 0.8}},
    "storage": {"pvc": {"size": "10Gi"}},
}


def spec(**changes) -> DistillationJobSpec:
    document = {**BASE, **changes}
    return DistillationJobSpec.model_validate(document)


ENDPOINT = {"endpoint": {"url": "https://llm.example.com/v1", "model": "big"}}


ON_POLICY = {"method": "onPolicy"}


def status(phase: Phase | None = None, *true: ConditionType, **fields) -> DistillationJobStatus:
    conditions = [
        {
            "type": t.value,
            "status": "True",
            "reason": "Completed",
            "lastTransitionTime": "2026-11-28T11:00:00Z",
        }
        for t in true
    ]
    return DistillationJobStatus.model_validate({"phase": phase, "conditions": conditions, **fields})


def job(**fields) -> JobState:
    return JobState(exists=True, **fields)


# The stages' typed summaries (contract.summaries), as the operator parses them from termination messages.
GEN_SUMMARY = (
    GenerateSummary(records=10, output_tokens=100, prompt_tokens=40, rejected={"length": 1, "verify": 2}),
)


EVAL_PASS = (
    EvaluateSummary.model_validate(
        {
            "evaluation": {
                "metric": "accuracy",
                "teacher": {"score": 0.8},
                "student": {"score": 0.7},
                "retention": 0.875,
                "gatePassed": True,
                "gateReason": "retention 0.875 >= 0.8",
            },
            "report": "/data/jobs/j/reports/evaluation.json",
        }
    ),
)


EVAL_FAIL = (
    EvaluateSummary.model_validate(
        {
            "evaluation": {
                "metric": "accuracy",
                "teacher": {"score": 0.8},
                "student": {"score": 0.4},
                "retention": 0.5,
                "gatePassed": False,
                "gateReason": "retention 0.50 < 0.80",
            }
        }
    ),
)


CHECK_FAILED = CheckSummary(
    failure=Failure.of(
        FailureReason.input_not_found, "spec.data.train: s3://prompts/train.parquet does not exist"
    )
)


CHECK_PASSED = CheckSummary(
    inputs={
        "spec.data.train": InputSummary(location="s3://prompts/train.parquet", format="parquet", checked=3)
    }
)


# As the cluster has them: the Deployment with its Service and NetworkPolicy (all released together).
TEACHER_UP = TeacherState(
    exists=True, ready=True, replicas=1, ready_replicas=1, others=("teacher-service", "teacher-policy")
)


TEACHER_LOADING = TeacherState(
    exists=True, ready=False, replicas=1, others=("teacher-service", "teacher-policy")
)
