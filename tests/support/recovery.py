"""The kill-and-recover scenario: the tiny job survives its operator's and a generation shard's SIGKILL.

Written once, run on each runtime backend: tests/e2e/test_operator_e2e.py (the process runtime;
the operator a local process, started again by the test) and tests/containers/test_tiny_job.py
(the Docker runtime; the operator the chart's Deployment, restarted by the kubelet).

Once a generation shard has written some, but at most half, of its records, it is frozen
(SIGSTOP, so it is still mid-shard when killed), the operator is SIGKILLed, then the shard; the
Job controller replaces the shard's pod, which resumes; the operator comes back. The job must
succeed with every child created once and every input record answered exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.harness import kubeconfig
from tests.harness.pod import PodInfo
from tests.support.chart import RELEASE_NAMESPACE, Images, chart_objects
from tests.support.cluster import Cluster
from tests.support.probes import creations, job_status
from tests.support.tiny import (
    CHILDREN,
    NAMESPACE,
    assert_each_input_answered_once,
    claim_object,
    partial_records,
    shard_size,
)
from tests.support.waiting import wait_for

REPLACEMENT_DEADLINE = 60


class Operator(Protocol):
    """The operator as the scenario handles it, whatever runs it."""

    def start(self) -> None: ...
    def kill(self) -> None: ...  # SIGKILL: no cleanup, no graceful shutdown, as when its node dies
    def recover(self, details: Any) -> None: ...  # it is back (started again, or restarted for us)
    def diagnostics(self) -> str: ...


class ProcessOperator:
    """`distillery operator` as its own process (logging in with a kubeconfig), so that it can be killed for real."""

    def __init__(self, cluster: Cluster, workdir: Path):
        self.emulator = cluster.emulator
        self.config = workdir / "kubeconfig"
        self.config.write_text(kubeconfig(cluster.url))
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        watches = self._watches()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.config),
            # Read the running stage pods' /metrics every second instead of every 15 (a setting the operator reads).
            "DISTILLERY_PROGRESS_SECONDS": "1",
        }
        # Every namespace, as the chart installs it by default (kmock cannot list namespaces,
        # which `--namespace` would need).
        command = [str(Path(sys.executable).with_name("distillery")), "operator", "--metrics-port", "0"]
        with self.log.open("a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(command)}\n")
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: self._watches() > watches or self.process.poll() is not None,
            "the operator to watch DistillationJobs",
            60,
            details=self.tail,
        )
        assert self.process.poll() is None, f"the operator exited at start:\n{self.tail()}"

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, "the operator is not running"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def recover(self, details: Any) -> None:
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        return f"operator log:\n{self.tail()}"

    def _watches(self) -> int:
        return sum(
            1
            for r in list(self.emulator)
            if r.resource is not None
            and r.resource.plural == "distillationjobs"
            and r.params.get("watch") in ("true", "1")
        )


class ChartOperator:
    """The chart's operator Deployment (defaults, image names only) as a pod of the cluster's kubelet."""

    def __init__(self, cluster: Cluster, images: Images, ready_deadline: float):
        self.cluster, self.images, self.ready_deadline = cluster, images, ready_deadline
        self.pod: PodInfo | None = None

    def start(self) -> None:
        system = self.cluster.api(RELEASE_NAMESPACE)
        for obj in chart_objects(self.images, RELEASE_NAMESPACE):
            if obj["kind"] in ("Deployment", "Service"):
                system.create(obj)
        kubelet = self.cluster.kubelet
        (self.pod,) = wait_for(
            lambda: [p for p in kubelet.pods() if p.namespace == RELEASE_NAMESPACE and p.ready] or None,
            "the operator pod to be ready",
            self.ready_deadline,
            details=kubelet.diagnostics,
        )

    def kill(self) -> None:
        self.cluster.kubelet.kill(self.pod.name, signal.SIGKILL)

    def recover(self, details: Any) -> None:
        """The kubelet restarts the operator's container after its back-off."""
        wait_for(
            lambda: self.current().restarts == 1,
            "the operator's container to be started again",
            60,
            details=details,
        )

    def current(self) -> PodInfo:
        return next(p for p in self.cluster.kubelet.pods() if p.name == self.pod.name)

    def diagnostics(self) -> str:
        return f"refused by the API front: {self.cluster.rejected()[-5:]}"


@dataclass
class Recovery:
    """What the scenario saw: the job as posted, its final status, the shard it killed, timings."""

    job: dict[str, Any]
    status: dict[str, Any]
    victim: PodInfo
    generating_at: float  # seconds from the scenario's start to the victim found mid-shard
    finished_at: float
    live: list[dict[str, Any]] = field(default_factory=list)  # status.progress seen while Training


def details(cluster: Cluster, operator: Operator) -> str:
    status = job_status(cluster.api(NAMESPACE))
    return (
        f"job status: {json.dumps(status, indent=1)[:3000]}\n"
        f"{operator.diagnostics()}\n{cluster.kubelet.diagnostics()}"
    )


def kill_and_recover(
    cluster: Cluster,
    operator: Operator,
    storage: Path,
    job: dict[str, Any],
    *,
    generating_deadline: float,
    succeeded_deadline: float,
) -> Recovery:
    """Start the operator, post the claim and `job`, kill the operator and a shard mid-way, wait for the end."""
    started = time.monotonic()
    api = cluster.api(NAMESPACE)
    kubelet = cluster.kubelet

    def why() -> str:
        return details(cluster, operator)

    operator.start()
    api.create(claim_object())
    api.create(job)

    # 1. Mid-generation: a shard running with some, but at most half, of its records written.
    sizes = {index: shard_size(job, storage, index) for index in (0, 1)}

    def shard_mid_way() -> Any:
        written = partial_records(storage)
        running = [p for p in kubelet.pods() if p.owner == "Job/tiny-generate" and p.pid]
        return next((p for p in running if 0 < written.get(p.index, 0) <= sizes[p.index] // 2), None)

    victim = wait_for(
        shard_mid_way, "a generation shard to have written records", generating_deadline, details=why
    )
    generating_at = time.monotonic() - started
    # Freeze it at once (SIGSTOP), so it is still mid-shard when it is killed below.
    kubelet.kill(victim.name, signal.SIGSTOP)
    assert job_status(api).get("phase") == "Generating", why()

    # 2. The operator dies (SIGKILL), then the shard's pod is killed mid-shard.
    operator.kill()
    kubelet.kill(victim.name, signal.SIGKILL)

    # 3. The Job controller replaces the pod without the operator; the operator comes back.
    wait_for(
        lambda: [p for p in kubelet.pods() if p.index == victim.index and p.name != victim.name],
        f"a replacement pod for shard {victim.index}",
        REPLACEMENT_DEADLINE,
        details=why,
    )
    operator.recover(why)

    # 4. The job ends; on the way, training may report its progress live (from its pod's /metrics).
    live: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        status = job_status(api)
        progress = status.get("progress") or {}
        if status.get("phase") == "Training" and progress.get("step") is not None:
            live.append(progress)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, "the DistillationJob to finish", succeeded_deadline, details=why)
    return Recovery(job, status, victim, generating_at, time.monotonic() - started, live)


def assert_recovered(cluster: Cluster, operator: Operator, recovery: Recovery, storage: Path) -> None:
    """What every backend must show: success, the teacher gone, each child created once, the shard resumed."""
    api, kubelet, status = cluster.api(NAMESPACE), cluster.kubelet, recovery.status
    assert status["phase"] == "Succeeded", details(cluster, operator)

    conditions = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}
    for kind in ("DataGenerated", "StudentTrained", "Evaluated", "QualityGatePassed"):
        assert conditions.get(kind, ("",))[0] == "True", (kind, status)
    assert status["evaluation"]["gatePassed"] is True, status

    # The teacher is gone after generation, and its process (or container) with it.
    teacher = api.get("apps/v1", "deployments", "tiny-teacher")
    assert teacher is None or teacher["spec"].get("replicas") == 0, teacher
    pods = kubelet.pods()
    teacher_pods = [p for p in pods if p.owner == "Deployment/tiny-teacher"]
    assert teacher_pods and all(p.pid is None for p in teacher_pods), teacher_pods

    # No duplicate children, though the operator ran twice: each created exactly once.
    for resource, name in CHILDREN:
        assert creations(cluster.emulator, resource, NAMESPACE, name) == 1, (resource, name)

    # The killed shard was replaced once and resumed; the other shard ran once.
    victim = recovery.victim
    generate = api.get("batch/v1", "jobs", "tiny-generate")["status"]
    assert generate.get("failed") == 1 and generate.get("succeeded") == 2, generate
    shard_pods = [p for p in pods if p.owner == "Job/tiny-generate"]
    assert sorted(p.index for p in shard_pods) == sorted([0, 1, victim.index]), shard_pods
    assert next(p for p in shard_pods if p.name == victim.name).exit_codes == [137]
    replacement = next(p for p in shard_pods if p.index == victim.index and p.name != victim.name)
    (replacement_pod,) = [p for p in api.items("v1", "pods") if p["metadata"]["name"] == replacement.name]
    resumed = json.loads(replacement_pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert resumed["resumed"] > 0, resumed

    assert_each_input_answered_once(recovery.job, storage)
    assert_the_trained_student_was_scored(recovery.job, status, storage)


def assert_the_trained_student_was_scored(job: dict[str, Any], status: dict[str, Any], storage: Path) -> None:
    """The report's student is the model training wrote (status.artifacts.student), not the base model the
    baseline row serves, and every compared model answered every validation prompt."""
    from distillery.contract.report import EvaluationReport

    mount = job["spec"]["storage"].get("mountPath", "/data")

    def local(path: str) -> Path:
        """A path as a pod names it (under the mount, or relative to it) on this machine's storage; a path the
        process backend's pods already name on this machine stays as it is."""
        if Path(path).is_relative_to(storage):
            return Path(path)
        return storage / os.path.relpath(path, mount) if path.startswith("/") else storage / path

    report = EvaluationReport.read(local(status["artifacts"]["report"]))
    trained = local(status["artifacts"]["student"])
    student, baseline = report.models["student"], report.models["baseline"]
    assert local(student.model) == trained, (student.model, trained)
    assert (trained / "config.json").is_file(), "the scored student is not on the storage"
    base = local(job["spec"]["student"]["model"])
    assert local(baseline.model) == base != trained, (baseline.model, student.model)
    validation = local(job["spec"]["data"]["validation"])
    prompts = sum(1 for line in validation.read_text().splitlines() if line.strip())
    answered = {name: entry.answered for name, entry in report.compared()}
    assert answered and set(answered.values()) == {prompts}, (answered, prompts)
