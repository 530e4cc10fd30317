"""The harness's Job controller and kubelet on hand-written Jobs: indexes, volumes, env,
termination messages, back-off limits, kills, deletion, missing Secrets, refusals."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from tests.harness import HarnessError, api_path
from tests.support.harness_workloads import (
    NS,
    alive,
    condition,
    finished,
    group_members,
    job,
    storage_mount,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.unit


def test_indexed_job_runs_each_index_with_volume_env_and_termination_message(cluster):
    emulator, api, kubelet, storage = cluster
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "greeting", "namespace": NS},
            "data": {"word": base64.b64encode(b"hello").decode()},
        }
    )
    script = (
        # $(WORD) is expanded by the kubelet before sh runs; $JOB_COMPLETION_INDEX by sh.
        "echo $(WORD) $JOB_COMPLETION_INDEX $(POD) > /data/out-$JOB_COMPLETION_INDEX.txt && "
        "pwd > /data/cwd-$JOB_COMPLETION_INDEX.txt && "
        "printf '{\"index\":%s}' $JOB_COMPLETION_INDEX > /dev/termination-log"
    )
    api.create(
        job(
            "shards",
            {
                "command": ["sh", "-c", script],
                **storage_mount(),
                "env": [
                    {"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "word"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
            },
            completionMode="Indexed",
            completions=3,
            parallelism=2,
        )
    )
    status = wait_for(
        lambda: finished(api, "shards"), "the Indexed Job to finish", 30, details=kubelet.diagnostics
    )

    assert condition(status, "Complete") is not None, status
    assert status["succeeded"] == 3
    assert status["completedIndexes"] == "0-2"
    assert (
        "failed" not in status and "active" not in status
    )  # zero counts are omitted, as the API server does
    assert status["startTime"] and status["completionTime"]
    pods = api.pods(**{"job-name": "shards"})
    assert len(pods) == 3
    for pod in pods:
        labels = pod["metadata"]["labels"]
        index = int(labels["batch.kubernetes.io/job-completion-index"])
        assert labels["controller-uid"] == "uid-shards"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-shards"
        assert pod["status"]["phase"] == "Succeeded"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0
        assert json.loads(terminated["message"]) == {"index": index}
        name = pod["metadata"]["name"]
        assert re.fullmatch(rf"shards-{index}-[a-z0-9]{{5}}", name)
        assert (storage / f"out-{index}.txt").read_text().split() == ["hello", str(index), name]
        assert (storage / f"cwd-{index}.txt").read_text().strip() == str(storage)
    # parallelism 2: the Job never had more than two pods active at once.
    versions = emulator.objects["batch/v1/jobs", NS, "shards"].history
    actives = [(v.raw.get("status") or {}).get("active", 0) for v in versions if v is not None]
    assert max(actives) == 2, actives


def test_backoff_limit_fails_the_job_with_the_log_tail_as_message(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "broken",
            {
                "command": ["sh", "-c", "echo boom from $HOSTNAME; exit 3"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            },
            backoffLimit=1,
        )
    )
    status = wait_for(
        lambda: finished(api, "broken"), "the failing Job to finish", 30, details=kubelet.diagnostics
    )

    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded", status
    assert status["failed"] == 2  # the first try and one retry
    assert "succeeded" not in status and "completionTime" not in status
    pods = api.pods(**{"job-name": "broken"})
    assert len(pods) == 2
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert pod["status"]["phase"] == "Failed"
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        assert terminated["message"].strip() == f"boom from {pod['metadata']['name']}"


def test_backoff_limit_per_index_fails_only_that_index(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "per-index",
            {"command": ["sh", "-c", '[ "$JOB_COMPLETION_INDEX" != 1 ]']},
            completionMode="Indexed",
            completions=3,
            parallelism=3,
            backoffLimitPerIndex=1,
        )
    )
    status = wait_for(
        lambda: finished(api, "per-index"), "the per-index Job to finish", 30, details=kubelet.diagnostics
    )

    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "FailedIndexes", status
    assert status["completedIndexes"] == "0,2"
    assert status["failedIndexes"] == "1"
    assert status["succeeded"] == 2 and status["failed"] == 2
    by_index: dict[str, int] = {}
    for pod in api.pods(**{"job-name": "per-index"}):
        index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        by_index[index] = by_index.get(index, 0) + 1
    assert by_index == {"0": 1, "1": 2, "2": 1}


def test_max_failed_indexes_fails_the_job_at_once(cluster):
    _, api, kubelet, _ = cluster
    # Index 1 fails at once; index 0 would run for a minute: the Job must not wait for it.
    api.create(
        job(
            "fail-fast",
            {"command": ["sh", "-c", '[ "$JOB_COMPLETION_INDEX" = 1 ] && exit 1; exec sleep 60']},
            completionMode="Indexed",
            completions=2,
            parallelism=2,
            backoffLimitPerIndex=0,
            maxFailedIndexes=0,
        )
    )
    status = wait_for(lambda: finished(api, "fail-fast"), "the Job to fail", 20, details=kubelet.diagnostics)
    assert condition(status, "Failed")["reason"] == "MaxFailedIndexesExceeded", status
    wait_for(
        lambda: all(p.pid is None for p in kubelet.pods()),
        "the running shard to be stopped",
        30,
        details=kubelet.diagnostics,
    )


def test_killed_pod_is_replaced_and_the_replacement_resumes(cluster):
    _, api, kubelet, storage = cluster
    script = "if [ -f progress ]; then echo resumed > result; else touch progress; exec sleep 60; fi"
    api.create(job("resumable", {"command": ["sh", "-c", script], **storage_mount()}, backoffLimit=2))
    first = wait_for(
        lambda: [p for p in kubelet.pods() if p.pid and (storage / "progress").exists()],
        "the first pod to be running",
        30,
        details=kubelet.diagnostics,
    )[0]
    kubelet.kill(first.name)
    status = wait_for(
        lambda: finished(api, "resumable"),
        "the Job to finish after the kill",
        30,
        details=kubelet.diagnostics,
    )

    assert condition(status, "Complete") is not None, status
    assert status["failed"] == 1 and status["succeeded"] == 1
    assert (storage / "result").read_text().strip() == "resumed"
    pods = {p.name: p for p in kubelet.pods()}
    assert pods[first.name].exit_codes == [137]  # 128 + SIGKILL, as a container runtime reports it
    assert not alive(first.pid)


def test_deleting_a_job_stops_its_processes_and_deletes_its_pods(cluster):
    _, api, kubelet, storage = cluster
    # A child in the container's process group, and one that left it (as vLLM servers do).
    script = "sleep 60 & setsid sleep 61 & echo $! > escaped.pid; sleep 60"
    api.create(job("doomed", {"command": ["sh", "-c", script], **storage_mount()}))
    pid = wait_for(
        lambda: next((p.pid for p in kubelet.pods() if p.pid), None),
        "the pod to run",
        30,
        details=kubelet.diagnostics,
    )
    escaped = int(
        wait_for(
            lambda: (storage / "escaped.pid").exists() and (storage / "escaped.pid").read_text(),
            "the escaped child's pid",
            30,
            details=kubelet.diagnostics,
        )
    )
    assert alive(escaped) and os.getpgid(escaped) != pid
    api.call("DELETE", api_path("batch/v1", "jobs", NS, "doomed"))

    wait_for(
        lambda: not api.pods(**{"job-name": "doomed"}),
        "the Job's pods to be deleted",
        30,
        details=kubelet.diagnostics,
    )
    wait_for(lambda: not alive(pid), "the pod's process to end", 30, details=kubelet.diagnostics)
    # Every process of the container ends, as with a cgroup: its group and the escaped child.
    assert group_members(pid) == []
    wait_for(lambda: not alive(escaped), "the escaped child to end", 30, details=kubelet.diagnostics)


def test_missing_secret_holds_the_pod_until_it_exists(cluster):
    _, api, kubelet, _ = cluster
    api.create(
        job(
            "needs-secret",
            {
                "command": ["sh", "-c", 'printf "$TOKEN" > /dev/termination-log'],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}],
            },
        )
    )

    def waiting_reason() -> str | None:
        pods = api.pods(**{"job-name": "needs-secret"})
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    wait_for(
        lambda: waiting_reason() == "CreateContainerConfigError",
        "CreateContainerConfigError",
        30,
        details=kubelet.diagnostics,
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later", "namespace": NS},
            "stringData": {"token": "s3cret"},
        }
    )
    status = wait_for(
        lambda: finished(api, "needs-secret"),
        "the Job to run once the Secret exists",
        30,
        details=kubelet.diagnostics,
    )
    assert condition(status, "Complete") is not None, status
    pod = api.pods(**{"job-name": "needs-secret"})[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "s3cret"


def test_an_unemulated_job_feature_is_an_error_not_a_silent_run(cluster):
    _, api, kubelet, _ = cluster
    api.create(job("policy", {"command": ["true"]}, successPolicy={"rules": [{"succeededCount": 1}]}))
    wait_for(lambda: kubelet.errors, "the harness to refuse successPolicy", 30)
    assert "successPolicy" in kubelet.errors[0]
    with pytest.raises(HarnessError, match="successPolicy"):
        kubelet.check()
    kubelet.errors.clear()  # checked: let the fixture's stop() pass


IGNORE_DISRUPTIONS = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
}


def test_pod_failure_policy_ignores_an_eviction_and_fails_the_job_on_an_exit_code(cluster):
    _, api, kubelet, storage = cluster
    script = "if [ -f evicted ]; then exit 0; else touch evicted; exec sleep 60; fi"
    api.create(
        job(
            "evicted",
            {"command": ["sh", "-c", script], **storage_mount()},
            backoffLimit=0,
            podFailurePolicy=IGNORE_DISRUPTIONS,
        )
    )
    first = wait_for(
        lambda: next((p for p in kubelet.pods() if p.pid and (storage / "evicted").exists()), None),
        "the first pod to run",
        30,
        details=kubelet.diagnostics,
    )
    api.call("DELETE", api_path("v1", "pods", NS, first.name))  # an eviction: the pod gets DisruptionTarget
    status = wait_for(
        lambda: finished(api, "evicted"),
        "the Job to finish after the eviction",
        30,
        details=kubelet.diagnostics,
    )
    assert condition(status, "Complete") is not None and not status.get("failed"), status

    rules = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}
    api.create(job("bad-input", {"command": ["sh", "-c", "exit 3"]}, backoffLimit=5, podFailurePolicy=rules))
    status = wait_for(
        lambda: finished(api, "bad-input"), "the Job to fail on exit code 3", 30, details=kubelet.diagnostics
    )
    assert condition(status, "Failed")["reason"] == "PodFailurePolicy" and status["failed"] == 1


@pytest.mark.parametrize("policy", ["Failed", "TerminatingOrFailed"])
def test_pod_replacement_policy_decides_whether_two_pods_overlap(cluster, policy):
    _, api, kubelet, storage = cluster
    # The first pod takes its time to stop (it ignores SIGTERM until the kubelet's KILL after 3 s).
    script = 'if [ -f started ]; then exit 0; else touch started; trap "" TERM; sleep 60; fi'
    # (The API server allows a podFailurePolicy only with podReplacementPolicy Failed.)
    policies = {"podFailurePolicy": IGNORE_DISRUPTIONS} if policy == "Failed" else {}
    api.create(
        job(
            f"slow-{policy.lower()}",
            {"command": ["sh", "-c", script], **storage_mount()},
            podReplacementPolicy=policy,
            **policies,
        )
    )
    name = f"slow-{policy.lower()}"
    first = wait_for(
        lambda: next((p for p in kubelet.pods() if p.pid and (storage / "started").exists()), None),
        "the first pod to run",
        30,
        details=kubelet.diagnostics,
    )
    api.call("DELETE", api_path("v1", "pods", NS, first.name))
    replacement = wait_for(
        lambda: next((p for p in kubelet.pods() if p.name != first.name), None),
        "a replacement pod",
        30,
        details=kubelet.diagnostics,
    )
    overlapped = alive(first.pid)  # was the old pod still running when its replacement was made?
    wait_for(lambda: finished(api, name), "the Job to finish", 30, details=kubelet.diagnostics)
    assert overlapped is (policy == "TerminatingOrFailed"), (policy, replacement.name)


def test_a_job_is_complete_only_after_its_pods_terminated_status_is_in_the_api(cluster):
    """A cluster's Job controller sees pods only through the API server, so whoever reads a
    Complete Job finds its pods' terminated states and termination messages already stored."""
    emulator, api, kubelet, _ = cluster
    api.create(job("quick", {"command": ["sh", "-c", "printf '{\"done\":1}' > /dev/termination-log"]}))
    wait_for(lambda: finished(api, "quick"), "the Job to finish", 30, details=kubelet.diagnostics)

    pod_done = job_done = None  # the first request with a pod's terminated state, with a Complete Job
    for number, request in enumerate(list(emulator)):
        plural = getattr(request.resource, "plural", None)
        status = (request.data if isinstance(request.data, dict) else {}).get("status") or {}
        if pod_done is None and plural == "pods":
            states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
            if any("terminated" in s and s["terminated"].get("message") for s in states):
                pod_done = number
        if job_done is None and plural == "jobs" and condition(status, "Complete"):
            job_done = number
    assert pod_done is not None and job_done is not None, (pod_done, job_done)
    assert pod_done < job_done, "the Job was Complete before its pod's terminated status was written"
