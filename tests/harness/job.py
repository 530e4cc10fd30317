"""The batch/v1 Job controller, for the Jobs the harness sees.

Pods for `NonIndexed` and `Indexed` jobs (one per index, labelled `job-name`,
`controller-uid`, `batch.kubernetes.io/job-completion-index`, with `JOB_COMPLETION_INDEX`
injected and the hostname `<job>-<index>` set as the real controller does), `parallelism`, `suspend`, `backoffLimit`,
`backoffLimitPerIndex` + `maxFailedIndexes`, `activeDeadlineSeconds`; status
`startTime/active/ready/succeeded/failed/completedIndexes/failedIndexes/conditions/
completionTime`, with zero counts omitted as the API server omits them. A failed pod's
replacement waits a back-off from the kubelet's `retry_delay` (doubling, capped at 10 s).

Not emulated (a Job that uses them is refused with a `HarnessError` rather than run
wrongly): `podFailurePolicy` and `successPolicy`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from tests.harness.controller import Controller
from tests.harness.errors import HarnessError
from tests.harness.helpers import compress_indexes, now_rfc3339, random_suffix
from tests.harness.pod import MAX_BACKOFF_SECONDS, Pod

if TYPE_CHECKING:
    from tests.harness.kubelet import Kubelet


class JobController(Controller):
    """The batch/v1 Job controller for one Job (see the module docstring for what is covered)."""

    kind = "Job"

    def __init__(self, kubelet: Kubelet, obj: dict[str, Any]):
        self.counted: set[str] = set()
        self.succeeded_indexes: set[int] = set()
        self.failed_indexes: set[int] = set()
        self.index_failures: dict[int, int] = {}
        self.retry_at: dict[int | None, float] = {}
        self.succeeded = 0
        self.failed = 0
        self.start_time: str | None = None
        self.started_at = 0.0
        self.conditions: list[dict[str, Any]] = []
        self.completion_time: str | None = None
        self.policy_failure: tuple[str, str] | None = None  # a podFailurePolicy FailJob rule matched
        super().__init__(kubelet, obj)

    @property
    def finished(self) -> bool:
        return any(c["type"] in ("Complete", "Failed") for c in self.conditions)

    async def reconcile(self) -> float | None:
        spec = self.obj.get("spec") or {}
        for unsupported in ("successPolicy",):
            if spec.get(unsupported):
                raise HarnessError(
                    f"spec.{unsupported} is not emulated; the harness cannot run this Job faithfully"
                )
        indexed = spec.get("completionMode", "NonIndexed") == "Indexed"
        completions = spec.get("completions")
        parallelism = spec.get("parallelism", 1)
        per_index = spec.get("backoffLimitPerIndex")
        backoff_limit = spec.get("backoffLimit", 2**31 - 1 if per_index is not None else 6)
        restart_policy = (spec.get("template", {}).get("spec") or {}).get("restartPolicy")
        if restart_policy not in ("Never", "OnFailure"):
            raise HarnessError(
                f"spec.template.spec.restartPolicy is {restart_policy!r}; a Job needs Never or OnFailure"
            )
        if indexed and completions is None:
            raise HarnessError("spec.completions: an Indexed Job needs it")

        self._count_terminated(spec, indexed, per_index)
        active = [pod for pod in self.pods if pod.active]
        # With restartPolicy OnFailure, container restarts count as failures.
        restarts = sum(c.restart_count for pod in self.pods for c in pod.containers)

        if not self.finished:
            if spec.get("suspend"):
                await asyncio.gather(*(pod.stop() for pod in active))
                self.pods = [pod for pod in self.pods if not pod.deleted]
                self.start_time = None
                self._set_condition("Suspended", "JobSuspended", "Job suspended")
                await self._write(indexed, per_index)
                return None
            self.conditions = [c for c in self.conditions if c["type"] != "Suspended"]
            if self.start_time is None:
                self.start_time, self.started_at = now_rfc3339(), time.monotonic()
            failure = self.policy_failure or self._failure(
                spec, indexed, completions, per_index, backoff_limit, restarts
            )
            if failure is not None:
                reason, message = failure
                self._set_condition("FailureTarget", reason, message)
                self._set_condition("Failed", reason, message)
                self.kubelet.event(f"Job {self.namespace}/{self.name} failed: {reason}: {message}")
            elif self._complete(indexed, completions, active):
                self._set_condition(
                    "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
                )
                self._set_condition(
                    "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
                )
                self.completion_time = now_rfc3339()
                self.kubelet.event(f"Job {self.namespace}/{self.name} complete")
        if self.finished:  # the controller deletes what still runs of a finished Job
            await asyncio.gather(*(pod.stop() for pod in active))
            await self._write(indexed, per_index)
            return None
        wait = await self._create_pods(spec, indexed, completions, parallelism)
        await self._write(indexed, per_index)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            left = self.started_at + deadline - time.monotonic()
            wait = left if wait is None else min(wait, left)
        return None if wait is None else max(wait, 0.05)

    def _count_terminated(self, spec: dict[str, Any], indexed: bool, per_index: int | None) -> None:
        for pod in self.pods:
            if not pod.finished_in_api or pod.name in self.counted:
                continue
            self.counted.add(pod.name)
            if pod.stopping and not pod.disrupted:
                continue  # removed by this controller (suspend, finished Job): not a pod failure
            if pod.phase == "Succeeded":
                self.succeeded += 1
                if pod.index is not None:
                    self.succeeded_indexes.add(pod.index)
                continue
            action = failure_action(spec.get("podFailurePolicy"), pod)
            if action == "Ignore":
                self.kubelet.event(f"pod {pod.name} failed; podFailurePolicy: Ignore (not counted)")
                continue
            if action == "FailJob":
                self.policy_failure = (
                    "PodFailurePolicy",
                    f"Pod {pod.name} failed; podFailurePolicy: FailJob",
                )
            self.failed += 1
            delay = min(self.kubelet.retry_delay * 2 ** (self.failed - 1), MAX_BACKOFF_SECONDS)
            self.retry_at[pod.index] = time.monotonic() + delay
            if pod.index is not None:
                self.index_failures[pod.index] = self.index_failures.get(pod.index, 0) + 1
                limit_passed = per_index is not None and self.index_failures[pod.index] > per_index
                if action == "FailIndex" or limit_passed:
                    self.failed_indexes.add(pod.index)

    def _failure(
        self,
        spec: dict[str, Any],
        indexed: bool,
        completions: int | None,
        per_index: int | None,
        backoff_limit: int,
        restarts: int,
    ) -> tuple[str, str] | None:
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self.started_at >= deadline:
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        if per_index is not None:
            max_failed = spec.get("maxFailedIndexes")
            if max_failed is not None and len(self.failed_indexes) > max_failed:
                return (
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes",
                )
            done = self.succeeded_indexes | self.failed_indexes
            if indexed and self.failed_indexes and len(done) >= (completions or 0):
                return "FailedIndexes", "Job has failed indexes"
            return None
        if self.failed + restarts > backoff_limit:
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        return None

    def _complete(self, indexed: bool, completions: int | None, active: list[Pod]) -> bool:
        if indexed:
            return len(self.succeeded_indexes) >= (completions or 0)
        if completions is None:  # work-queue Job: done when one pod succeeded and none runs
            return self.succeeded > 0 and not active
        return self.succeeded >= completions

    async def _create_pods(
        self, spec: dict[str, Any], indexed: bool, completions: int | None, parallelism: int
    ) -> float | None:
        default = "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
        wait_for_end = spec.get("podReplacementPolicy", default) == "Failed"
        # With podReplacementPolicy Failed a terminating pod still holds its place until it has ended.
        active = [pod for pod in self.pods if pod.active or (wait_for_end and not pod.terminal)]
        now = time.monotonic()
        wait: float | None = None
        if indexed:
            running = {pod.index for pod in active}
            wanted = [
                i
                for i in range(completions or 0)
                if i not in self.succeeded_indexes and i not in self.failed_indexes and i not in running
            ]
        else:
            remaining = (completions if completions is not None else parallelism) - self.succeeded
            if completions is None and self.succeeded:
                remaining = 0
            wanted = [None] * max(0, min(parallelism, remaining) - len(active))
        for index in wanted[: max(0, parallelism - len(active))]:
            due = self.retry_at.get(index, 0.0)
            if due > now:  # a failed pod's replacement waits its backoff
                wait = due - now if wait is None else min(wait, due - now)
                continue
            await self._create_pod(spec, index)
        return wait

    async def _create_pod(self, spec: dict[str, Any], index: int | None) -> None:
        template = spec.get("template") or {}
        labels = {
            "job-name": self.name,
            "batch.kubernetes.io/job-name": self.name,
            "controller-uid": self.uid,
            "batch.kubernetes.io/controller-uid": self.uid,
        }
        annotations = {}
        prefix = self.name
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
            prefix = f"{self.name}-{index}"
        obj = self.pod_object(template, f"{prefix}-{random_suffix()}", labels, annotations)
        if index is not None:
            # Each index's pod is the host `<job>-<index>` (with a subdomain: its name in DNS).
            obj["spec"]["hostname"] = obj["spec"].get("hostname") or f"{self.name}-{index}"
            # The Job controller injects the index into every container, from the annotation.
            for container in obj["spec"].get("containers", []) + obj["spec"].get("initContainers", []):
                container["env"] = [
                    *(container.get("env") or []),
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                            }
                        },
                    },
                ]
        await self.start_pod(obj, index)

    def _set_condition(self, kind: str, reason: str, message: str) -> None:
        if any(c["type"] == kind for c in self.conditions):
            return
        now = now_rfc3339()
        self.conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        )

    async def _write(self, indexed: bool, per_index: int | None) -> None:
        active = [pod for pod in self.pods if pod.active]
        status: dict[str, Any] = {
            "startTime": self.start_time,
            "active": len(active) or None,
            "ready": sum(1 for pod in active if pod.ready),
            "terminating": sum(1 for pod in self.pods if pod.stopping and not pod.terminal),
            "succeeded": self.succeeded or None,
            "failed": self.failed or None,
            "conditions": self.conditions or None,
            "completionTime": self.completion_time,
            "uncountedTerminatedPods": {},
        }
        if indexed:
            status["completedIndexes"] = compress_indexes(self.succeeded_indexes) or None
            if per_index is not None:
                status["failedIndexes"] = compress_indexes(self.failed_indexes) or None
        await self.write_status(status)


def failure_action(policy: dict[str, Any] | None, pod: Pod) -> str:
    """The action of the first podFailurePolicy rule a failed pod matches; Count when none does."""
    conditions = {c["type"] for c in pod.status().get("conditions") or [] if c.get("status") == "True"}
    codes = {c.name: c.exit_codes[-1] for c in pod.containers if c.exit_codes}
    for rule in (policy or {}).get("rules") or []:
        on_conditions = rule.get("onPodConditions")
        if on_conditions and any(
            c["type"] in conditions for c in on_conditions if c.get("status", "True") == "True"
        ):
            return rule["action"]
        on_codes = rule.get("onExitCodes")
        if on_codes:
            names = [on_codes["containerName"]] if on_codes.get("containerName") else list(codes)
            values = set(on_codes.get("values") or [])
            hit = any(
                (codes[n] in values) == (on_codes["operator"] == "In")
                for n in names
                if n in codes and codes[n] != 0
            )
            if hit:
                return rule["action"]
    return "Count"
