"""The tiny job finishes under continuous faults, with nothing lost and nothing done twice (issue 26).

The container tier's tiny job (tests/containers/test_tiny_job.py: the chart's operator pod, the tiny
job's claim, every pod a container) while tests/support/chaos.py's seeded driver runs for the whole
job: every 15-30 s a pod of the job (check, teacher, generation shard, training, evaluation) or the
operator is SIGKILLed or drained (a graceful delete, then forced), and training once more as soon as
it has a checkpoint; the API server's front (tests/harness/apifront.py) answers about 10% of the
operator's other requests with 500, 429 or a timeout, and ends every open watch once a minute.

Pass, from what the run left: the job Succeeded; every input prompt answered exactly once; training
resumed from a checkpoint and its logged updates are each step once; no child created twice; the
report scores every compared model on every validation prompt; the job's phase, sampled all along,
was never lost and never went back to Pending.

Replay one seed: `DISTILLERY_CHAOS_SEED=N pytest -m chaos tests/containers/test_chaos.py -s`;
`DISTILLERY_CHAOS_SEED=baseline` runs the same job with no faults (hack/bench_chaos.py's reference).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness.apifront import FrontFaults
from tests.harness.docker import DockerRuntime
from tests.support.chaos import EVICT, KILL, ChaosDriver, Fault, phase_violations, result_line, schedule
from tests.support.chart import RELEASE_NAMESPACE, Images
from tests.support.cluster import start_cluster
from tests.support.probes import creations, job_status
from tests.support.recovery import ChartOperator, assert_the_trained_student_was_scored, details
from tests.support.tiny import (
    CHILDREN,
    CLAIM,
    NAMESPACE,
    assert_each_input_answered_once,
    claim_object,
    prepare_claim,
    tiny_job,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.containers, pytest.mark.chaos, pytest.mark.timeout(1500)]

SEEDS = [1, 2, 3]
OPERATOR_READY_DEADLINE = 180
FINISHED_DEADLINE = 1200
SCHEDULE_SECONDS = 1200  # faults stop anyway once the job is terminal
# Retries a stage may use: a SIGKILL is a crash and counts (a drain does not: podFailurePolicy ignores
# it), and the driver may kill training up to 3 times (chaos.MAX_HITS, plus the checkpoint trigger).
BACKOFF_LIMIT = 5


def seeds() -> list[int | None]:
    chosen = os.environ.get("DISTILLERY_CHAOS_SEED", "").strip()
    if not chosen:
        return list(SEEDS)
    return [None if chosen == "baseline" else int(chosen)]


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models: dict[str, Path]) -> Path:
    """The claim: the session's tiny models (copied: a link would point outside the container) and prompts."""
    return prepare_claim(tmp_path_factory.mktemp("chaos-claim"), tiny_models, copy_models=True)


def chaos_job(images: Images) -> dict[str, Any]:
    job = tiny_job()
    job["spec"]["teacher"]["image"] = images.worker
    for stage in ("generation", "training", "evaluation"):
        job["spec"][stage]["backoffLimit"] = BACKOFF_LIMIT
    return job


def checkpointed(storage: Path) -> bool:
    """Training has written a checkpoint (tests/support/chaos.py's trigger: kill it then)."""
    return any((storage / "jobs" / "tiny" / "checkpoints").glob("step-*/state.pt"))


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed-{s}" if s is not None else "baseline")
def test_tiny_job_finishes_under_chaos(
    seed: int | None, runtime: DockerRuntime, images: Images, storage: Path, tmp_path: Path
):
    shutil.rmtree(storage / "jobs", ignore_errors=True)
    chaos = seed is not None
    front_faults = FrontFaults(seed) if chaos else None
    with start_cluster(
        tmp_path,
        [RELEASE_NAMESPACE, NAMESPACE],
        runtime=runtime,
        claims={CLAIM: storage},
        retry_delay=2,
        front_faults=front_faults,
    ) as cluster:
        operator = ChartOperator(cluster, images, OPERATOR_READY_DEADLINE)
        operator.start()
        api = cluster.api(NAMESPACE)
        job = chaos_job(images)
        api.create(claim_object())
        api.create(job)
        started = time.monotonic()
        plan = schedule(seed, SCHEDULE_SECONDS) if chaos else []
        triggers = [(lambda: checkpointed(storage), Fault(0.0, KILL, "train"))] if chaos else []
        driver = ChaosDriver(cluster, seed or 0, plan, NAMESPACE, RELEASE_NAMESPACE, triggers=triggers)

        def why() -> str:
            lines = [i.line(driver.seed) for i in driver.injected]
            front = front_faults.log[-30:] if front_faults else []
            return "\n".join([*lines, *front, *driver.errors, details(cluster, operator)])

        with driver:
            wait_for(lambda: driver.finished, "the DistillationJob to finish", FINISHED_DEADLINE, details=why)
        wall = time.monotonic() - started
        status = job_status(api)
        counts = driver.counts() + (front_faults.injected if front_faults else Counter())
        print(result_line(seed, wall, counts))
        if front_faults:
            print("\n".join(front_faults.log))

        assert status.get("phase") == "Succeeded", why()
        assert not driver.errors, driver.errors
        assert not cluster.rejected(), cluster.rejected()
        # The job's phase, sampled every quarter second, never lost and never back to Pending.
        assert not phase_violations(p for _, p in driver.phases), phase_violations(
            p for _, p in driver.phases
        )
        # Each child created once, though the operator was killed and its requests failed or timed out.
        for resource, name in CHILDREN:
            assert creations(cluster.emulator, resource, NAMESPACE, name) == 1, (resource, name, why())
        # Every input prompt answered exactly once in the records.
        assert_each_input_answered_once(job, storage)
        # The report is complete: every compared model scored on every validation prompt.
        assert_the_trained_student_was_scored(job, status, storage)
        # Training: every update logged once, in order, though it was killed; resumed from a checkpoint.
        training = json.loads((storage / "jobs" / "tiny" / "reports" / "training.json").read_text())
        steps = [point["step"] for point in training["history"]]
        assert steps == list(range(1, training["step"] + 1)), steps
        if chaos:
            assert {"operator", "train"} <= {i.role for i in driver.injected}, driver.injected
            assert counts[EVICT] >= 1 and counts[KILL] >= 2, counts
            assert sum(front_faults.injected[k] for k in ("500", "429", "timeout")) > 0, front_faults.injected
            assert training["resumed_from_step"] > 0, training["resumed_from_step"]
