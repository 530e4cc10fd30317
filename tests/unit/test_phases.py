"""The phase machine: every transition, table-driven, with no API server at all."""

from __future__ import annotations

from datetime import timedelta

import pytest

from distillery.api import ConditionType, DistillationJobStatus, Phase
from distillery.contract.summaries import (
    EvaluateSummary,
    GenerateSummary,
    TrainSummary,
)
from distillery.controller.observe import Observed, TeacherState
from distillery.controller.phases import decide
from distillery.controller.status import events, next_status
from tests.support.phase_machine import (
    CHECK_FAILED,
    CHECK_PASSED,
    ENDPOINT,
    EVAL_FAIL,
    EVAL_PASS,
    GEN_SUMMARY,
    NOW,
    ON_POLICY,
    TEACHER_LOADING,
    TEACHER_UP,
    job,
    spec,
    status,
)

pytestmark = pytest.mark.unit

C = ConditionType


# (id, spec, status, observed, expected phase, exactly the children ensured, exactly the children deleted,
#  condition (type, status, reason, a fragment its message must hold))
TEACHER = ("teacher", "teacher-service", "teacher-policy")
TABLE = [
    (
        "new job checks its inputs before anything else",
        spec(),
        status(),
        Observed(),
        Phase.pending,
        {"pvc", "check"},
        (),
        (C.inputs_ready, "False", "Checking", "opening data.train"),
    ),
    (
        "a failed check fails the job with the check's reason",
        spec(),
        status(Phase.pending),
        Observed(check=job(failed=True, reason="BackoffLimitExceeded", failed_summary=CHECK_FAILED)),
        Phase.failed,
        set(),
        (),
        (C.inputs_ready, "False", "InputNotFound", "s3://prompts/train.parquet does not exist"),
    ),
    (
        "inputs readable: the teacher starts",
        spec(),
        status(Phase.pending),
        Observed(check=job(complete=True, summaries=(CHECK_PASSED,))),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.inputs_ready, "True", "Completed", "readable: s3://prompts/train.parquet (parquet)"),
    ),
    (
        "a job generating before the check existed goes on",
        spec(),
        status(Phase.generating),
        Observed(teacher=TEACHER_UP, generate=job(active=4)),
        Phase.generating,
        {"pvc", "generate", *TEACHER},
        (),
        (C.data_generated, "False", "Generating", "0/4 shards done"),
    ),
    (
        "new job starts the teacher",
        spec(),
        status(None, C.inputs_ready),
        Observed(),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Starting", "loading models/teacher"),
    ),
    (
        "teacher still loading",
        spec(),
        status(Phase.teacher_starting, C.inputs_ready),
        Observed(teacher=TEACHER_LOADING),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Starting", "loading models/teacher"),
    ),
    (
        "teacher ready starts generation",
        spec(),
        status(Phase.teacher_starting, C.inputs_ready),
        Observed(teacher=TEACHER_UP),
        Phase.generating,
        {"pvc", "generate", *TEACHER},
        (),
        (C.teacher_ready, "True", "Ready", "serves models/teacher as 'teacher'"),
    ),
    (
        "endpoint teacher needs no deployment",
        spec(teacher=ENDPOINT),
        status(None, C.inputs_ready),
        Observed(),
        Phase.generating,
        {"pvc", "generate"},
        (),
        (C.teacher_ready, "True", "ExternalEndpoint", "using https://llm.example.com/v1"),
    ),
    (
        "shards running",
        spec(),
        status(Phase.generating),
        Observed(teacher=TEACHER_UP, generate=job(succeeded=2, active=2)),
        Phase.generating,
        {"pvc", "generate", *TEACHER},
        (),
        (C.data_generated, "False", "Generating", "2/4 shards done"),
    ),
    (
        "generation done: teacher removed, training starts",
        spec(),
        status(Phase.generating),
        Observed(teacher=TEACHER_UP, generate=job(complete=True, succeeded=4, summaries=GEN_SUMMARY)),
        Phase.training,
        {"pvc", "train"},
        TEACHER,
        (
            C.data_generated,
            "True",
            "Completed",
            "10 records, 100 tokens from 4 shards (3 responses rejected)",
        ),
    ),
    (
        "a failed shard fails the job",
        spec(),
        status(Phase.generating),
        Observed(
            teacher=TEACHER_UP,
            generate=job(
                failed=True,
                reason="MaxFailedIndexesExceeded",
                failed_indexes="2",
                pod_error="teacher returned 500",
            ),
        ),
        Phase.failed,
        set(),
        TEACHER,
        (
            C.data_generated,
            "False",
            "MaxFailedIndexesExceeded",
            "(failed shards: 2); last error: teacher returned 500",
        ),
    ),
    (
        "training running",
        spec(),
        status(Phase.training, C.data_generated),
        Observed(train=job(active=1)),
        Phase.training,
        {"pvc", "train"},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
    (
        "training on two nodes: the Service that names its pods too",
        spec(training={"nodes": 2}),
        status(Phase.training, C.data_generated),
        Observed(train=job(active=2)),
        Phase.training,
        {"pvc", "train-service", "train"},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
    (
        "training failed",
        spec(),
        status(Phase.training, C.data_generated),
        Observed(train=job(failed=True, reason="BackoffLimitExceeded", pod_error="CUDA out of memory")),
        Phase.failed,
        set(),
        (),
        (C.student_trained, "False", "BackoffLimitExceeded", "last error: CUDA out of memory"),
    ),
    (
        "training done starts evaluation",
        spec(),
        status(Phase.training, C.data_generated),
        Observed(train=job(complete=True, summaries=(TrainSummary(train_loss=1.25, step=30),))),
        Phase.evaluating,
        {"pvc", "evaluate"},
        (),
        (C.student_trained, "True", "Completed", "final loss 1.25"),
    ),
    (
        "evaluation running",
        spec(),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(active=1)),
        Phase.evaluating,
        {"pvc", "evaluate"},
        (),
        (C.evaluated, "False", "Evaluating", "held-out"),
    ),
    (
        "gate passed: succeeded",
        spec(),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(complete=True, summaries=EVAL_PASS)),
        Phase.succeeded,
        set(),
        (),
        (C.quality_gate_passed, "True", "GatePassed", "retention 0.875 >= 0.8"),
    ),
    (
        "gate failed (the eval pod exits 0 with the verdict): failed",
        spec(),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(complete=True, summaries=EVAL_FAIL)),
        Phase.failed,
        set(),
        (),
        (C.quality_gate_passed, "False", "GateFailed", "retention 0.50 < 0.80"),
    ),
    (
        "evaluator crashed",
        spec(),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(failed=True, reason="DeadlineExceeded")),
        Phase.failed,
        set(),
        (),
        (C.evaluated, "False", "DeadlineExceeded", "the evaluate Job failed"),
    ),
    (
        "no gate: succeeded",
        spec(evaluation={}),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(
            evaluate=job(
                complete=True,
                summaries=(EvaluateSummary.model_validate({"evaluation": {"student": {"score": 0.5}}}),),
            )
        ),
        Phase.succeeded,
        set(),
        (),
        (C.quality_gate_passed, "True", "NoGate", "sets no threshold"),
    ),
    (
        "suspend while generating",
        spec(suspend=True),
        status(Phase.generating, C.teacher_ready),
        Observed(teacher=TEACHER_UP, generate=job(active=4)),
        Phase.suspended,
        set(),
        TEACHER,
        (C.teacher_ready, "False", "Suspended", "removed while suspended"),
    ),
    (
        "resume waits for the teacher before the shards",
        spec(),
        status(Phase.suspended),
        Observed(generate=job(suspended=True, succeeded=1)),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Starting", "loading models/teacher"),
    ),
    (
        "resume with teacher up resumes shards",
        spec(),
        status(Phase.teacher_starting),
        Observed(teacher=TEACHER_UP, generate=job(suspended=True, succeeded=1)),
        Phase.generating,
        {"pvc", "generate", *TEACHER},
        (),
        (C.data_generated, "False", "Generating", "1/4 shards done"),
    ),
    (
        "resume while training",
        spec(),
        status(Phase.suspended, C.data_generated),
        Observed(train=job(suspended=True)),
        Phase.training,
        {"pvc", "train"},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
    (
        "an existing claim that is not there yet keeps the job pending",
        spec(storage={"pvc": {"claimName": "shared"}}),
        status(),
        Observed(claim_missing=True),
        Phase.pending,
        set(),
        (),
        None,
    ),
    (
        "succeeded stays succeeded and removes a leftover teacher",
        spec(),
        status(Phase.succeeded),
        Observed(teacher=TEACHER_UP),
        Phase.succeeded,
        set(),
        TEACHER,
        None,
    ),
    (
        "failed stays failed",
        spec(),
        status(Phase.failed, message="x"),
        Observed(),
        Phase.failed,
        set(),
        (),
        None,
    ),
    (
        "onPolicy: generation done keeps the teacher and starts training",
        spec(training=ON_POLICY),
        status(Phase.generating),
        Observed(teacher=TEACHER_UP, generate=job(complete=True, succeeded=4, summaries=GEN_SUMMARY)),
        Phase.training,
        {"pvc", "train", *TEACHER},
        (),
        (C.teacher_ready, "True", "Ready", "serves models/teacher"),
    ),
    (
        "onPolicy: training keeps the teacher",
        spec(training=ON_POLICY),
        status(Phase.training, C.data_generated),
        Observed(teacher=TEACHER_UP, train=job(active=1)),
        Phase.training,
        {"pvc", "train", *TEACHER},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
    (
        "onPolicy: resumed training waits for the teacher before the training pod",
        spec(training=ON_POLICY),
        status(Phase.suspended, C.data_generated),
        Observed(train=job(suspended=True)),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Starting", "loading models/teacher"),
    ),
    (
        "onPolicy: training done removes the teacher",
        spec(training=ON_POLICY),
        status(Phase.training, C.data_generated, C.teacher_ready),
        Observed(
            teacher=TEACHER_UP, train=job(complete=True, summaries=(TrainSummary(train_loss=0.5, step=9),))
        ),
        Phase.evaluating,
        {"pvc", "evaluate"},
        TEACHER,
        (C.teacher_ready, "False", "ScaledDown", "training is done; the teacher is removed"),
    ),
    (
        "onPolicy with an endpoint: nothing to keep",
        spec(training=ON_POLICY, teacher=ENDPOINT),
        status(Phase.training, C.data_generated),
        Observed(train=job(active=1)),
        Phase.training,
        {"pvc", "train"},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
    # Kueue: a stage Job suspended with the queue label, or a teacher pod still gated, is Queued.
    (
        "Kueue holds the check Job: queued, in which queue",
        spec(queueName="gpu-queue"),
        status(Phase.pending),
        Observed(check=job(suspended=True, queue="gpu-queue")),
        Phase.pending,
        {"pvc", "check"},
        (),
        (C.inputs_ready, "False", "Queued", "waiting for Kueue to admit the check Job (queue gpu-queue)"),
    ),
    (
        "Kueue gates the teacher's pod: queued, not loading",
        spec(queueName="gpu-queue"),
        status(Phase.teacher_starting, C.inputs_ready),
        Observed(teacher=TeacherState(exists=True, queue="gpu-queue", gated=1)),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Queued", "waiting for Kueue to admit the teacher (queue gpu-queue)"),
    ),
    (
        "the teacher's pod admitted: it loads",
        spec(queueName="gpu-queue"),
        status(Phase.teacher_starting, C.inputs_ready),
        Observed(teacher=TeacherState(exists=True, queue="gpu-queue")),
        Phase.teacher_starting,
        {"pvc", *TEACHER},
        (),
        (C.teacher_ready, "False", "Starting", "loading models/teacher"),
    ),
    (
        "Kueue holds the generate Job: queued, the ready teacher stays",
        spec(queueName="gpu-queue"),
        status(Phase.generating, C.inputs_ready),
        Observed(teacher=TEACHER_UP, generate=job(suspended=True, queue="gpu-queue")),
        Phase.generating,
        {"pvc", "generate", *TEACHER},
        (),
        (C.data_generated, "False", "Queued", "the generate Job (queue gpu-queue)"),
    ),
    (
        "Kueue took the train Job back (preempted): queued again",
        spec(queueName="gpu-queue"),
        status(Phase.training, C.data_generated),
        Observed(train=job(suspended=True, queue="gpu-queue", succeeded=0)),
        Phase.training,
        {"pvc", "train"},
        (),
        (C.student_trained, "False", "Queued", "the train Job (queue gpu-queue)"),
    ),
    (
        "Kueue holds the evaluate Job: queued",
        spec(queueName="gpu-queue"),
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(suspended=True, queue="gpu-queue")),
        Phase.evaluating,
        {"pvc", "evaluate"},
        (),
        (C.evaluated, "False", "Queued", "the evaluate Job (queue gpu-queue)"),
    ),
    (
        "onPolicy: Kueue holds the train Job; the teacher stays for it",
        spec(queueName="gpu-queue", training=ON_POLICY),
        status(Phase.training, C.data_generated),
        Observed(teacher=TEACHER_UP, train=job(suspended=True, queue="gpu-queue")),
        Phase.training,
        {"pvc", "train", *TEACHER},
        (),
        (C.student_trained, "False", "Queued", "the train Job (queue gpu-queue)"),
    ),
    (
        "a suspended Job without the queue label is not Kueue's: the operator resumes it",
        spec(),
        status(Phase.training, C.data_generated),
        Observed(train=job(suspended=True)),
        Phase.training,
        {"pvc", "train"},
        (),
        (C.student_trained, "False", "Training", "training models/student"),
    ),
]


@pytest.mark.parametrize(
    ("case", "s", "st", "obs", "phase", "ensure", "delete", "cond"), TABLE, ids=[row[0] for row in TABLE]
)
def test_transition(case, s, st, obs, phase, ensure, delete, cond):
    step = decide(s, [], st, obs, NOW, "j")
    assert step.phase is phase, step.message
    # Exactly: an extra child (a GPU teacher kept through training) is as wrong as a missing one.
    assert {str(child) for child in step.ensure} == ensure, step.ensure
    assert len(step.ensure) == len(set(step.ensure)), step.ensure
    assert tuple(str(child) for child in step.delete) == delete
    if cond is not None:
        kind, value, reason, fragment = cond
        found = [c for c in step.conditions if c.type == kind]
        assert found, f"no {kind} in {step.conditions}"
        assert (found[-1].status, found[-1].reason) == (value, reason)
        assert fragment in found[-1].message, found[-1].message


def test_generation_progress_sums_the_shard_summaries():
    step = decide(
        spec(),
        [],
        status(Phase.generating),
        Observed(teacher=TEACHER_UP, generate=job(complete=True, succeeded=4, summaries=GEN_SUMMARY * 2)),
        NOW,
        "j",
    )
    assert (step.progress.records, step.progress.tokens, step.progress.rejected) == (20, 200, 6)
    assert step.progress.shards_done == 4
    assert "generate" in step.finished_stages


def test_failure_message_names_the_shard_and_the_error():
    obs = Observed(
        teacher=TEACHER_UP,
        generate=job(
            failed=True,
            reason="MaxFailedIndexesExceeded",
            failed_indexes="2",
            pod_error="teacher returned 500",
        ),
    )
    step = decide(spec(), [], status(Phase.generating), obs, NOW, "j")
    assert "2" in step.message and "teacher returned 500" in step.message


def test_teacher_startup_timeout_fails_the_job():
    started = (NOW - timedelta(seconds=601)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = DistillationJobStatus.model_validate(
        {
            "phase": "TeacherStarting",
            "conditions": [
                {"type": "InputsReady", "status": "True", "reason": "Completed"},
                {
                    "type": "TeacherReady",
                    "status": "False",
                    "reason": "Starting",
                    "lastTransitionTime": started,
                },
            ],
        }
    )
    obs = Observed(teacher=TeacherState(exists=True, waiting_reason="CrashLoopBackOff"))
    step = decide(spec(), [], st, obs, NOW, "j")
    assert step.phase is Phase.failed
    assert step.conditions[0].reason == "StartupTimeout"
    assert "startupTimeoutSeconds" in step.message and "CrashLoopBackOff" in step.message
    assert step.delete == ("teacher",)
    still = decide(spec(), [], st, obs, NOW - timedelta(seconds=2), "j")
    assert still.phase is Phase.teacher_starting


def test_invalid_spec_fails_with_the_field_and_then_stays_quiet():
    step = decide(None, ["spec.storage.pvc: is required in a cluster"], status(), Observed(), NOW, "j")
    assert step.phase is Phase.failed and "spec.storage.pvc" in step.message
    after = next_status(status(), step, NOW, 1)
    again = decide(None, ["spec.storage.pvc: is required in a cluster"], after, Observed(), NOW, "j")
    assert again.phase is Phase.failed and not again.ensure and not again.delete


def test_suspend_suspends_only_running_jobs():
    obs = Observed(generate=job(complete=True), train=job(active=1))
    step = decide(spec(suspend=True), [], status(Phase.training, C.data_generated), obs, NOW, "j")
    assert step.suspend == ("train",)


def test_kueue_jobs_are_not_resumed_by_the_operator():
    obs = Observed(train=job(suspended=True))
    plain = decide(spec(), [], status(Phase.training, C.data_generated), obs, NOW, "j")
    queued = decide(spec(queueName="q"), [], status(Phase.training, C.data_generated), obs, NOW, "j")
    assert plain.resume == ("train",) and queued.resume == ()


def test_ttl_after_finished():
    done = status(Phase.succeeded, completionTime="2026-11-28T11:00:00Z")
    assert decide(spec(ttlSecondsAfterFinished=3599), [], done, Observed(), NOW, "j").delete_self
    waiting = decide(spec(ttlSecondsAfterFinished=3601), [], done, Observed(), NOW, "j")
    assert not waiting.delete_self and waiting.requeue_after == pytest.approx(1)
    assert not decide(spec(), [], done, Observed(), NOW, "j").delete_self


def test_success_fills_evaluation_and_artifacts():
    step = decide(
        spec(),
        [],
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(complete=True, summaries=EVAL_PASS)),
        NOW,
        "j",
    )
    new = next_status(status(Phase.evaluating), step, NOW, 3)
    assert new.evaluation.retention == 0.875 and new.evaluation.gate_passed is True
    assert new.evaluation.student.score == 0.7
    assert new.artifacts.report == "/data/jobs/j/reports/evaluation.json"
    assert new.artifacts.student == "/data/jobs/j/student"
    assert new.completion_time and new.observed_generation == 3


def test_queued_for_kueue_does_not_use_up_the_teacher_startup_timeout():
    """While Kueue gates the teacher's pods nothing loads: the timeout counts from admission, when
    TeacherReady moves from Queued to Starting (and so gets a new transition time)."""
    long_ago = (NOW - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = DistillationJobStatus.model_validate(
        {
            "phase": "TeacherStarting",
            "conditions": [
                {"type": "InputsReady", "status": "True", "reason": "Completed"},
                {
                    "type": "TeacherReady",
                    "status": "False",
                    "reason": "Queued",
                    "lastTransitionTime": long_ago,
                },
            ],
        }
    )
    gated = Observed(teacher=TeacherState(exists=True, queue="q", gated=1))
    step = decide(spec(queueName="q"), [], st, gated, NOW, "j")
    assert step.phase is Phase.teacher_starting and step.requeue_after is None, step.message
    admitted = Observed(teacher=TeacherState(exists=True, queue="q"))
    new = next_status(st, decide(spec(queueName="q"), [], st, admitted, NOW, "j"), NOW, 1)
    teacher = next(c for c in new.conditions if c.type == C.teacher_ready)
    assert (teacher.reason, teacher.last_transition_time) == ("Starting", "2026-11-28T12:00:00Z")
    assert new.phase is Phase.teacher_starting
    # Queued is work under way (a progress reason), not trouble: no Warning Event.
    queued = next_status(
        status(Phase.pending),
        decide(
            spec(queueName="q"),
            [],
            status(Phase.pending),
            Observed(check=job(suspended=True, queue="q")),
            NOW,
            "j",
        ),
        NOW,
        1,
    )
    assert not [e for e in events(status(Phase.pending), queued) if e.type == "Warning"]
    assert queued.progress.summary == "check queued"


def test_conditions_keep_their_transition_time_until_they_change():
    checked = status(None, C.inputs_ready)
    first = next_status(checked, decide(spec(), [], checked, Observed(), NOW, "j"), NOW, 1)
    later = NOW + timedelta(minutes=5)
    second = next_status(
        first, decide(spec(), [], first, Observed(teacher=TEACHER_LOADING), later, "j"), later, 1
    )
    c1, c2 = (next(c for c in s.conditions if c.type == C.teacher_ready) for s in (first, second))
    assert c1.last_transition_time == c2.last_transition_time == "2026-11-28T12:00:00Z"
    ready = next_status(
        second, decide(spec(), [], second, Observed(teacher=TEACHER_UP), later, "j"), later, 1
    )
    teacher = next(c for c in ready.conditions if c.type == C.teacher_ready)
    assert teacher.status == "True" and teacher.last_transition_time == "2026-11-28T12:05:00Z"


def test_events_for_phase_and_condition_changes():
    old = status(Phase.generating)
    new = next_status(
        old,
        decide(
            spec(), [], old, Observed(generate=job(failed=True, reason="MaxFailedIndexesExceeded")), NOW, "j"
        ),
        NOW,
        1,
    )
    got = {(e.type, e.reason) for e in events(old, new)}
    assert ("Warning", "Failed") in got and ("Warning", "DataGeneratedMaxFailedIndexesExceeded") in got
    assert events(new, new) == []


def test_the_operator_reads_the_summaries_the_stages_write():
    """Evaluate's own `evaluate_summary`, through its wire form, read by the phase machine (the stage
    CLIs' real output is fed to the operator in tests/stages/test_contract.py)."""
    from distillery.contract.summaries import generation_totals, parse_summary, termination_message
    from distillery.evaluation.evaluate import evaluate_summary

    report = {
        "metric": "accuracy",
        "retention": 0.9,
        "gate": {"passed": False, "reason": "retention 0.90 < 0.95"},
        "models": {"teacher": {"score": 1.0, "latencyP50Ms": 12.0}, "student": {"score": 0.9}},
    }
    wire = termination_message(evaluate_summary(report, "jobs/j/reports/evaluation.json"))
    step = decide(
        spec(),
        [],
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(complete=True, summaries=(parse_summary(wire),))),
        NOW,
        "j",
    )
    assert step.evaluation.gate_passed is False and step.evaluation.gate_reason == "retention 0.90 < 0.95"
    assert step.evaluation.teacher.model_dump(by_alias=True, exclude_none=True) == {
        "score": 1.0,
        "latencyP50Ms": 12.0,
    }
    assert step.evaluation.retention == 0.9 and step.artifacts["report"] == "jobs/j/reports/evaluation.json"
    totals = generation_totals(GEN_SUMMARY + GEN_SUMMARY)
    assert (totals.records, totals.output_tokens, totals.rejected) == (20, 200, 6)


def test_status_does_not_change_on_every_tick_while_the_teacher_loads():
    """Status writes are API traffic and watch events: a loading teacher must not cause one per tick."""
    checked = status(None, C.inputs_ready)
    first = next_status(checked, decide(spec(), [], checked, Observed(), NOW, "j"), NOW, 1)
    ticks = []
    for seconds in (10, 20):
        now = NOW + timedelta(seconds=seconds)
        ticks.append(
            next_status(first, decide(spec(), [], first, Observed(teacher=TEACHER_LOADING), now, "j"), now, 1)
        )
    assert ticks[0] == ticks[1]
    assert "since 2026-11-28T12:00:00Z" in ticks[0].message


def test_a_failed_check_names_the_uri_in_the_message():
    obs = Observed(check=job(failed=True, reason="BackoffLimitExceeded", failed_summary=CHECK_FAILED))
    step = decide(spec(), [], status(Phase.pending), obs, NOW, "j")
    assert step.message == "check failed: spec.data.train: s3://prompts/train.parquet does not exist"
    assert "generate" not in step.ensure and "teacher" not in step.ensure


def test_the_check_reports_what_it_read_and_progress_counts_the_cleaning():
    step = decide(
        spec(),
        [],
        status(Phase.pending),
        Observed(check=job(complete=True, summaries=(CHECK_PASSED,))),
        NOW,
        "j",
    )
    ready = next(c for c in step.conditions if c.type == C.inputs_ready)
    assert ready.message == "readable: s3://prompts/train.parquet (parquet)"
    cleaned = GenerateSummary(records=5, decontaminated=3)
    step = decide(
        spec(),
        [],
        status(Phase.generating, C.inputs_ready),
        Observed(teacher=TEACHER_UP, generate=job(complete=True, succeeded=4, summaries=(cleaned,) * 2)),
        NOW,
        "j",
    )
    assert step.progress.decontaminated == 6
    step = decide(
        spec(),
        [],
        status(Phase.training, C.inputs_ready, C.data_generated),
        Observed(train=job(complete=True, summaries=(TrainSummary(train_loss=1.0, duplicates=4),))),
        NOW,
        "j",
    )
    assert step.progress.duplicates == 4


def test_progress_a_running_stage_reports_reaches_status_and_the_printer_column():
    training = decide(
        spec(),
        [],
        status(Phase.training, C.data_generated),
        Observed(train=job(active=1), live={"epoch": 1.25, "step": 40, "train_loss": 0.4213}),
        NOW,
        "j",
    )
    assert training.progress.summary == "train 41% (epoch 1.25/3, loss 0.421)"
    assert training.progress.step == 40
    evaluating = decide(
        spec(),
        [],
        status(Phase.evaluating, C.data_generated, C.student_trained),
        Observed(evaluate=job(active=1), live={"models_done": 1, "models_total": 3}),
        NOW,
        "j",
    )
    assert evaluating.progress.summary == "evaluate 33% (1/3 models)"
    new = next_status(status(Phase.evaluating), evaluating, NOW, 1)
    assert (new.progress.models_done, new.progress.models_total) == (1, 3)


def test_status_shows_the_on_policy_loss_the_training_stage_reports():
    from distillery.contract.summaries import parse_summary, termination_message

    wire = termination_message(TrainSummary(train_loss=0.4, on_policy_loss=0.4, step=12, on_policy_updates=6))
    observed = Observed(teacher=TEACHER_UP, train=job(complete=True, summaries=(parse_summary(wire),)))
    st = status(Phase.training, C.data_generated)
    step = decide(spec(training=ON_POLICY), [], st, observed, NOW, "j")
    assert next_status(st, step, NOW, 1).progress.on_policy_loss == 0.4


@pytest.mark.parametrize("stage", ["generate", "train", "evaluate"])
def test_a_complete_job_whose_pod_status_has_not_arrived_is_waited_for_then_judged_without_it(stage):
    """The Job and its pods are watched apart: the Job's Complete can come before the pod's termination
    message. The stage is seen as still running for a grace period (a pod event ends it early), not
    judged on a missing summary; after it, judged as the pods left it."""
    before = {
        "generate": status(Phase.generating),
        "train": status(Phase.training, C.data_generated),
        "evaluate": status(Phase.evaluating, C.data_generated, C.student_trained),
    }[stage]
    running = {"generate": Phase.generating, "train": Phase.training, "evaluate": Phase.evaluating}[stage]
    completed = {"complete": True, "succeeded": 4 if stage == "generate" else 1}

    def at(seconds_after_completion: float):
        when = (NOW - timedelta(seconds=seconds_after_completion)).isoformat()
        observed = Observed(teacher=TEACHER_UP, **{stage: job(**completed, completion_time=when)})
        return decide(spec(), [], before, observed, NOW, "j")

    waiting = at(5)
    assert waiting.phase is running and waiting.requeue_after == pytest.approx(55)
    later = at(61)
    after = {"generate": Phase.training, "train": Phase.evaluating, "evaluate": Phase.failed}[stage]
    assert later.phase is after, later.message
    if stage == "evaluate":
        assert "no gate result" in later.message
    # With every summary in, it is judged at once.
    arrived = Observed(evaluate=job(**completed, completion_time=NOW.isoformat(), summaries=EVAL_PASS))
    if stage == "evaluate":
        assert decide(spec(), [], before, arrived, NOW, "j").phase is Phase.succeeded


def test_status_does_not_change_on_every_scrape_while_a_shard_runs_only_when_the_figures_move():
    """A scrape every 15 s moves the prompts count a little each time; status (a write and a watch event)
    changes only when the whole percent or the ETA's minute moves, and then the line moves with it."""
    one = spec(generation={"shards": 1})
    started = (NOW - timedelta(minutes=10)).isoformat()
    st = status(Phase.generating, C.inputs_ready)
    lines = []
    writes = 0
    # 2 prompts/s over 5000 prompts (0.6 % a scrape); scraped every 15 s for 5 minutes, from minute 10.
    for tick in range(21):
        now = NOW + timedelta(seconds=15 * tick)
        live = {
            "prompts_done": 2 * (600 + 15 * tick),
            "prompts_total": 5000,
            "records": 1100 + tick,
            "tokens_per_second": 1234.5 + tick,
            "shards_reporting": 1,
        }
        observed = Observed(teacher=TEACHER_UP, generate=job(active=1, start_time=started), live=live)
        new = next_status(st, decide(one, [], st, observed, now, "j"), now, 1)
        writes += new.progress != st.progress  # (status.cost moves with the clock: controller.costs)
        lines.append(new.progress.summary)
        st = new
    assert lines[0] == "generate 24% (1200/5000 prompts, ETA 32m)"
    assert lines[-1] == "generate 36% (1800/5000 prompts, ETA 27m)"
    assert 12 <= writes <= 16, lines  # 24% -> 36% and ETA 32m -> 27m: a write per move, none between
    assert len(set(lines)) == writes
    assert st.progress.percent == 36 and st.progress.prompts_total == 5000
    # The same scrape twice: no change at all.
    again = next_status(st, decide(one, [], st, observed, now, "j"), now, 1)
    assert again == st


def test_a_stage_start_and_end_are_normal_events_with_its_figures():
    one = spec(generation={"shards": 1})
    teacher_ready = status(Phase.teacher_starting, C.inputs_ready)
    running = next_status(
        teacher_ready,
        decide(one, [], teacher_ready, Observed(teacher=TEACHER_UP), NOW, "j"),
        NOW,
        1,
    )
    started = [(e.type, e.reason, e.message) for e in events(teacher_ready, running)]
    assert ("Normal", "StageStarted", "generate started: 0/1 shards done") in started
    summary = GenerateSummary(prompts=5000, records=4870, output_tokens=1_234_567, rejected={"length": 130})
    later = NOW + timedelta(minutes=41)
    gen = job(
        complete=True,
        succeeded=1,
        summaries=(summary,),
        start_time=NOW.isoformat(),
        completion_time=later.isoformat(),
    )
    done = next_status(
        running, decide(one, [], running, Observed(teacher=TEACHER_UP, generate=gen), later, "j"), later, 1
    )
    ended = [(e.type, e.reason, e.message) for e in events(running, done)]
    assert (
        "Normal",
        "StageCompleted",
        "generate done in 41m: 5000 prompts, 4870 records, 1.23M tokens from 1 shard (130 responses rejected)",
    ) in ended
    assert not [e for e in events(done, done)]
