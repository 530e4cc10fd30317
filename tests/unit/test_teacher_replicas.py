"""Teacher replicas: the Deployment and headless Service the builders make, the cost of every replica's GPUs,
status.teacher and the TEACHER column, and the release of every teacher child on every way a job ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from distillery.api import ConditionType, DistillationJobStatus, Phase
from distillery.controller.costs import observed_cost, teacher_cost
from distillery.controller.observe import Observed, TeacherState, from_children
from distillery.controller.phases import decide
from distillery.controller.status import next_status, status_document
from distillery.crd import PRINTER_COLUMNS
from distillery.errors import InvalidJob, parse_job
from distillery.manifests import build, build_teacher_deployment, build_teacher_service
from distillery.manifests.common import BuildConfig
from tests.support.manifest_cases import tiny_job
from tests.support.phase_machine import NOW, TEACHER_UP, job, spec, status

pytestmark = pytest.mark.unit
C = ConditionType
TEACHER = ("teacher", "teacher-service", "teacher-policy")


def with_replicas(replicas: int):
    base = tiny_job()
    return base.model_copy(
        update={
            "spec": base.spec.model_copy(
                update={"teacher": base.spec.teacher.model_copy(update={"replicas": replicas})}
            )
        }
    )


def test_the_deployment_asks_for_every_replica_and_the_service_resolves_to_each_of_them():
    three = with_replicas(3)
    assert build_teacher_deployment(three)["spec"]["replicas"] == 3
    assert build_teacher_deployment(tiny_job())["spec"]["replicas"] == 1  # the default
    service = build_teacher_service(three)["spec"]
    # Headless: DNS answers with the ready pods' IPs, so a client can spread its own requests.
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is False
    # The Service selects exactly the Deployment's pods.
    pods = build_teacher_deployment(three)["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pods.items()


def test_replicas_are_refused_outside_their_range_and_with_an_endpoint_naming_the_field():
    document = {
        "metadata": {"name": "j"},
        "spec": tiny_job().spec.model_dump(by_alias=True, exclude_none=True),
    }
    for bad, field in ((0, "teacher.replicas"), (65, "teacher.replicas")):
        document["spec"]["teacher"]["replicas"] = bad
        with pytest.raises(InvalidJob) as error:
            parse_job(document)
        assert any(field in p.path for p in error.value.problems), error.value.problems
    document["spec"]["teacher"] = {
        "endpoint": {"url": "https://llm.example.com/v1", "model": "m"},
        "replicas": 2,
    }
    with pytest.raises(InvalidJob) as error:
        parse_job(document)
    assert [p for p in error.value.problems if p.path.endswith("teacher.replicas")], error.value.problems


def test_the_teacher_costs_every_replicas_gpus_for_its_whole_span():
    ready = status(Phase.generating, C.teacher_ready)  # TeacherReady True since 11:00
    ready.conditions[0].reason = "Ready"
    one = teacher_cost(spec(teacher={"model": "t", "gpus": 4}), ready, NOW)
    two = teacher_cost(spec(teacher={"model": "t", "gpus": 4, "replicas": 2}), ready, NOW)
    assert one.gpu_seconds == 4 * 3600 and two.gpu_seconds == 2 * 4 * 3600
    assert two.gpus == 4 and two.wall_seconds == 3600 and two.pod_seconds == 2 * 3600  # gpus per pod
    total = observed_cost(spec(teacher={"model": "t", "gpus": 4, "replicas": 2}), ready, Observed(), NOW)
    assert total.gpu_hours == pytest.approx(8.0)


def deployment(replicas: int, ready: int) -> dict:
    labels = {"distillery.dev/job": "j", "distillery.dev/stage": "teacher"}
    return {
        "metadata": {"name": "j-teacher", "labels": labels},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": ready},
    }


def test_status_and_the_teacher_column_show_ready_over_total_replicas():
    observed = from_children({"Deployment": [deployment(2, 1)]})
    assert (observed.teacher.replicas, observed.teacher.ready_replicas, observed.teacher.ready) == (
        2,
        1,
        True,
    )
    two = spec(teacher={"model": "t", "replicas": 2})
    started = status(Phase.generating, C.inputs_ready)
    step = decide(two, [], started, observed, NOW, "j")
    written = status_document(next_status(started, step, NOW, 1))
    assert written["teacher"] == {"replicas": 2, "readyReplicas": 1, "summary": "1/2"}
    column = next(c for c in PRINTER_COLUMNS if c["name"] == "Teacher")
    path = column["jsonPath"].strip(".").split(".")
    assert path[0] == "status" and written[path[1]][path[2]] == "1/2"  # what `kubectl get dj` reads
    # Released: 0/0, as a Deployment scaled to zero reads; a job that never served one writes nothing.
    gone = next_status(started, step, NOW, 1)
    after = decide(two, [], gone, Observed(), NOW, "j")
    assert next_status(gone, after, NOW, 1).teacher.summary == "0/0"
    endpoint = spec(teacher={"endpoint": {"url": "https://llm.example.com/v1", "model": "m"}})
    assert decide(endpoint, [], started, Observed(), NOW, "j").teacher is None


# Every way a job ends while a teacher is up, or after its Deployment went but its Service and
# NetworkPolicy were left (an operator before this fix): all three are deleted.
LEFT_OVER = TeacherState(others=("teacher-service", "teacher-policy"))
ENDINGS = [
    ("a failed shard", status(Phase.generating, C.teacher_ready), {"generate": job(failed=True)}, TEACHER_UP),
    ("a failed training", status(Phase.training, C.data_generated), {"train": job(failed=True)}, TEACHER_UP),
    ("already failed, leftovers", status(Phase.failed), {}, LEFT_OVER),
    ("already succeeded, leftovers", status(Phase.succeeded), {}, LEFT_OVER),
    ("an invalid spec", status(Phase.generating), {}, TEACHER_UP),
]


@pytest.mark.parametrize(("case", "st", "jobs", "teacher"), ENDINGS, ids=[e[0] for e in ENDINGS])
def test_every_ending_releases_the_teacher_deployment_service_and_network_policy(case, st, jobs, teacher):
    problems = ["spec.x: bad"] if case == "an invalid spec" else []
    step = decide(None if problems else spec(), problems, st, Observed(teacher=teacher, **jobs), NOW, "j")
    assert step.phase.is_terminal
    assert set(teacher.children) <= set(step.delete) and set(step.delete) & set(TEACHER) == set(
        teacher.children
    )


def test_generation_done_releases_all_three_and_a_startup_timeout_too():
    gen_done = Observed(teacher=TEACHER_UP, generate=job(complete=True, succeeded=4))
    step = decide(spec(), [], status(Phase.generating, C.teacher_ready), gen_done, NOW, "j")
    assert step.phase is Phase.training and set(TEACHER) <= set(step.delete)
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
    loading = TeacherState(exists=True, replicas=2, others=("teacher-service", "teacher-policy"))
    timed_out = decide(spec(), [], st, Observed(teacher=loading), NOW, "j")
    assert timed_out.phase is Phase.failed and set(timed_out.delete) == set(TEACHER)


def test_the_builders_make_every_teacher_child_for_a_replicated_teacher():
    job_ = with_replicas(2)
    kinds = {child: build(child, job_, BuildConfig())["kind"] for child in TEACHER}
    assert kinds == {"teacher": "Deployment", "teacher-service": "Service", "teacher-policy": "NetworkPolicy"}
