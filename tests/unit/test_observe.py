"""Reading the cluster's objects into the phase machine's records: why a pod has not started."""

from __future__ import annotations

import pytest

from distillery.controller.observe import MESSAGE_LIMIT, job_state, pods_waiting, teacher_state

pytestmark = pytest.mark.unit


def pod(phase: str = "Pending", *, conditions=(), init=(), containers=()) -> dict:
    status = {"phase": phase, "conditions": list(conditions)}
    if init:
        status["initContainerStatuses"] = [{"name": f"i{n}", "state": s} for n, s in enumerate(init)]
    if containers:
        status["containerStatuses"] = [{"name": f"c{n}", "state": s} for n, s in enumerate(containers)]
    return {"metadata": {"name": "p"}, "status": status}


def waiting(reason: str, message: str | None = None) -> dict:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available:\n 3 Insufficient nvidia.com/gpu.",
}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], ""),
        (
            [
                pod(
                    conditions=[{"type": "PodScheduled", "status": "True"}],
                    containers=[waiting("ContainerCreating")],
                )
            ],
            "",
        ),
        ([pod(containers=[waiting("PodInitializing")])], ""),
        (
            [pod(conditions=[UNSCHEDULABLE])],
            "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        (
            [pod(containers=[waiting("ErrImagePull", 'pull access denied for "x"')])],
            'ErrImagePull: pull access denied for "x"',
        ),
        (
            [
                pod(
                    init=[waiting("CreateContainerConfigError", 'secret "hf" not found')],
                    containers=[waiting("PodInitializing")],
                )
            ],
            'CreateContainerConfigError: secret "hf" not found',
        ),
        ([pod("Running", containers=[{"running": {}}, waiting("CrashLoopBackOff")])], "CrashLoopBackOff"),
        # An ended pod (a replaced shard, a finished index) is history, not why the stage waits.
        (
            [
                pod("Failed", containers=[waiting("ImagePullBackOff")]),
                pod("Running", containers=[{"running": {}}]),
            ],
            "",
        ),
    ],
)
def test_why_a_pod_has_not_started(pods, expected):
    assert pods_waiting(pods) == expected


def test_a_long_reason_is_cut_so_status_stays_small():
    text = pods_waiting([pod(containers=[waiting("ErrImagePull", "x" * 5000)])])
    assert len(text) == MESSAGE_LIMIT and text.startswith("ErrImagePull: xxx") and text.endswith("...")


def test_stage_jobs_and_the_teacher_carry_it():
    job = {"metadata": {"name": "j"}, "status": {"active": 1}}
    assert job_state(job, [pod(conditions=[UNSCHEDULABLE])]).waiting.startswith("Unschedulable: 0/3 nodes")
    deployment = {"status": {"replicas": 1}}
    stuck = teacher_state(
        deployment, [pod(containers=[waiting("ImagePullBackOff", "Back-off pulling image")])]
    )
    assert stuck.waiting_reason == "ImagePullBackOff: Back-off pulling image" and not stuck.ready
    ready = teacher_state({"status": {"readyReplicas": 1}}, [pod(containers=[waiting("ImagePullBackOff")])])
    assert ready.ready and ready.waiting_reason == ""  # a rollout's new pod: the old one still serves


# What Kubernetes writes for a pod whose scheduling gates are not all removed yet.
SCHEDULING_GATED = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "SchedulingGated",
    "message": "Scheduling is blocked due to non-empty scheduling gates",
}
QUEUE = {"kueue.x-k8s.io/queue-name": "gpu-queue"}


def test_a_stage_job_suspended_with_the_queue_label_is_held_by_kueue():
    held = job_state({"metadata": {"labels": QUEUE}, "spec": {"suspend": True}})
    assert (held.queue, held.suspended, held.held_by_kueue) == ("gpu-queue", True, True)
    admitted = job_state({"metadata": {"labels": QUEUE}, "spec": {"suspend": False}})
    assert admitted.queue == "gpu-queue" and not admitted.held_by_kueue
    # Suspended without a queue label: the operator's own suspension (spec.suspend), not Kueue's.
    assert not job_state({"metadata": {"labels": {}}, "spec": {"suspend": True}}).held_by_kueue
    # A Job that ended is nobody's to admit any more.
    done = {
        "metadata": {"labels": QUEUE},
        "spec": {"suspend": True},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    assert not job_state(done).held_by_kueue


def test_a_teacher_pod_with_kueues_scheduling_gate_is_held_by_kueue():
    deployment = {"metadata": {"labels": QUEUE}, "status": {}}
    gated = {
        **pod(conditions=[SCHEDULING_GATED]),
        "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
    }
    teacher = teacher_state(deployment, [gated])
    assert (teacher.queue, teacher.gated, teacher.held_by_kueue) == ("gpu-queue", 1, True)
    assert teacher.waiting_reason.startswith("SchedulingGated")
    # Another controller's gate is not Kueue's; an admitted pod has none; a ready teacher is not held.
    other = {**gated, "spec": {"schedulingGates": [{"name": "example.com/other"}]}}
    assert not teacher_state(deployment, [other]).held_by_kueue
    assert not teacher_state(
        deployment, [pod(conditions=[{"type": "PodScheduled", "status": "True"}])]
    ).held_by_kueue
    ready = {"metadata": {"labels": QUEUE}, "status": {"readyReplicas": 1}}
    assert not teacher_state(ready, [gated]).held_by_kueue
