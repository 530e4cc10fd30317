"""What a user sees of faults (controller/faults.py): one Event per class per minute, naming the class, and
a status record that moves only with an Event; the stages' restarts come from the children as observed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from distillery.api import DistillationJobStatus
from distillery.controller import faults, status
from distillery.controller.apiclient import fault_reason
from distillery.controller.observe import from_children
from distillery.manifests.common import STAGE_LABEL

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("last", "now", "post"),
    [
        (None, T0, True),
        (T0, T0, False),
        (T0, T0 + timedelta(seconds=59), False),
        (T0, T0 + timedelta(seconds=60), True),
        (T0, T0 + timedelta(hours=1), True),
    ],
)
def test_should_post_at_most_once_a_minute_per_class(last, now, post):
    posted = {"throttled": last} if last else {}
    assert faults.should_post("throttled", posted, now) is post
    assert faults.should_post("server_error", posted, now), "another class has its own minute"


def test_operator_faults_become_one_notice_per_class_naming_it():
    recorder = faults.Recorder()
    key = ("ml", "j")
    recorder.add(key, ["throttled", "throttled", "server_error", "throttled"], T0)
    faults_, notices = faults.report({}, recorder.operator(key, T0), {}, T0)
    by_class = {n.fault_class: n for n in notices}
    assert set(by_class) == {"throttled", "server_error"}
    assert by_class["throttled"].message == "API server throttled (429): retrying; 3 times in the last minute"
    assert by_class["server_error"].message == "API server error (5xx): retrying; once in the last minute"
    assert {n.reason for n in notices} == {faults.RETRYING}
    assert faults_["throttled"].count == 3 and faults_["throttled"].last_time == "2026-12-07T12:00:00Z"


def test_a_flood_of_faults_posts_once_a_minute_and_status_moves_only_with_an_event():
    """Two minutes of a fault every second: the pure decision run at every reconcile posts at most one
    Event per class per minute, and the status document changes exactly when an Event is posted."""
    recorder, key = faults.Recorder(), ("ml", "flood")
    current = DistillationJobStatus()
    posts, changes = [], 0
    for second in range(120):
        now = T0 + timedelta(seconds=second)
        recorder.add(key, ["server_error"], now)
        updated, notices = faults.report(
            current.faults or {},
            recorder.operator(key, now),
            {},
            now,
            recorder.posted(key, current.faults or {}),
        )
        recorder.reported(key, [n.fault_class for n in notices], now)
        new = current.model_copy(update={"faults": updated or None})
        if status.status_document(new) != status.status_document(current):
            changes += 1
        current = new
        posts += [(now, n) for n in notices]
    assert [when - T0 for when, _ in posts] == [timedelta(0), timedelta(seconds=60)]
    assert changes == len(posts)
    assert posts[1][1].message == "API server error (5xx): retrying; 60 times in the last minute"
    assert current.faults["server_error"].count == 61, "counted up to the last Event"
    # Nothing new: status stays as it is, however often it is reconciled.
    later = T0 + timedelta(minutes=10)
    assert faults.next_due(current.faults, recorder.pending(key), {}, later) == 0.0
    final, notices = faults.report(current.faults, recorder.operator(key, later), {}, later)
    assert [n.message for n in notices] == ["API server error (5xx): retrying; 59 times since its last Event"]
    recorder.reported(key, ["server_error"], later)
    assert final["server_error"].count == 120
    assert faults.report(final, recorder.operator(key, later), {}, later + timedelta(minutes=5)) == (
        final,
        [],
    )


def test_the_recorder_says_when_a_pending_fault_may_be_posted():
    recorder, key = faults.Recorder(), ("ml", "j")
    assert recorder.due(key, T0) is None
    recorder.add(key, ["throttled"], T0)
    assert recorder.due(key, T0) == 0.0, "never posted: now"
    recorder.reported(key, ["throttled"], T0)
    assert recorder.due(key, T0) is None
    recorder.add(key, ["throttled"], T0 + timedelta(seconds=5))
    assert recorder.due(key, T0 + timedelta(seconds=5)) == 55.0
    recorder.forget(key)
    assert recorder.due(key, T0) is None and recorder.operator(key, T0) == {}


def test_nothing_new_changes_nothing():
    previous = {"throttled": faults.FaultStatus(count=2, last_time="2026-12-07T11:00:00Z", message="m")}
    for minutes in (0, 5, 60):
        now = T0 + timedelta(minutes=minutes)
        assert faults.report(previous, {}, {}, now) == (previous, [])
        assert faults.report(previous, {"throttled": (0, 0)}, {}, now) == (previous, [])


def test_a_status_record_keeps_a_restarted_operator_from_posting_again_within_the_minute():
    previous = {"timeout": faults.FaultStatus(count=1, last_time="2026-12-07T12:00:00Z", message="m")}
    assert faults.report(previous, {"timeout": (1, 1)}, {}, T0 + timedelta(seconds=30))[1] == []
    assert faults.next_due(previous, {"timeout": 1}, {}, T0 + timedelta(seconds=30)) == 30.0
    _, notices = faults.report(previous, {"timeout": (1, 1)}, {}, T0 + timedelta(seconds=61))
    assert [n.message for n in notices] == ["API request timed out: retrying; once in the last minute"]


def _pod(stage: str, name: str, restarts: int) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {STAGE_LABEL: stage},
            "creationTimestamp": "2026-12-07T12:00:00Z",
        },
        "status": {"phase": "Running", "containerStatuses": [{"name": "main", "restartCount": restarts}]},
    }


def test_stage_restarts_are_read_from_the_children_and_reported_when_they_grow():
    children = {
        "Deployment": [
            {
                "metadata": {"name": "j-teacher", "labels": {STAGE_LABEL: "teacher"}},
                "spec": {"replicas": 2},
                "status": {"readyReplicas": 2},
            }
        ],
        "Pod": [_pod("teacher", "t-0", 2), _pod("teacher", "t-1", 1), _pod("generate", "g-0", 0)],
        "Job": [
            {"metadata": {"name": "j-generate", "labels": {STAGE_LABEL: "generate"}}, "status": {"failed": 2}}
        ],
    }
    restarts = from_children(children).restarts()
    assert restarts["teacher"] == 3 and restarts["generate"] == 2 and "train" not in restarts
    updated, notices = faults.report({}, {}, restarts, T0)
    assert sorted((n.fault_class, n.reason) for n in notices) == [
        ("generate_restarted", faults.RESTARTED),
        ("teacher_restarted", faults.RESTARTED),
    ]
    assert updated["teacher_restarted"].message == "teacher: a replica restarted; 3 restarts so far"
    # The same counts later: nothing new, nothing posted, nothing changed.
    assert faults.report(updated, {}, restarts, T0 + timedelta(minutes=5)) == (updated, [])
    # One more generate restart within the minute waits for it, then is posted.
    grown = restarts | {"generate": 3}
    assert faults.report(updated, {}, grown, T0 + timedelta(seconds=10))[1] == []
    assert faults.next_due(updated, {}, grown, T0 + timedelta(seconds=10)) == 50.0
    later, notices = faults.report(updated, {}, grown, T0 + timedelta(seconds=60))
    assert [n.message for n in notices] == [
        "generate: a pod failed or restarted and was retried; 3 restarts so far"
    ]
    assert later["generate_restarted"].count == 3


def test_every_class_the_api_client_sorts_faults_into_has_words():
    import asyncio

    from kubernetes.client.rest import ApiException

    for error in (
        ApiException(status=429),
        ApiException(status=503),
        ApiException(status=403),
        asyncio.TimeoutError(),
        ConnectionResetError(),
        ValueError(),
    ):
        assert fault_reason(error) in faults.DESCRIPTIONS
