"""Generation over two real teacher replicas (vLLM CPU servers, the tiny teacher): the shard's real client
spreads its requests fairly, by the replicas' own counts, and a replica killed mid-run costs no record and
duplicates none.

Two servers on one port at 127.0.0.2 and 127.0.0.3 stand for the pods behind the job's headless Service
(tests/support/replicas.py); they start once for this module (~40 s each on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

from distillery.api import DistillationJob
from distillery.generation.shard import generate_shard
from distillery.storage import Layout
from tests.fixtures_models import vllm_options
from tests.support import replicas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stages

# Keep every answer: the counts must not depend on what the tiny teacher says.
KEEP_ALL = {"verify": False, "dedup": False, "requireFinished": False, "minResponseChars": 0}


@pytest.fixture(scope="module")
def two_replicas(tiny_models, tmp_path_factory):
    with replicas.serve_replicas(
        tiny_models["teacher"], 2, tmp_path_factory.mktemp("replicas"), **vllm_options()
    ) as servers:
        yield servers


def shard_job(storage: Path, prompts: int, **generation) -> tuple[DistillationJob, list[str]]:
    storage.mkdir(parents=True, exist_ok=True)
    ids = [f"q{i}" for i in range(prompts)]
    (storage / "train.jsonl").write_text(
        "".join(
            json.dumps({"id": q, "prompt": f"What is {i % 10}+{(i // 10) % 10}?", "answer": "0"}) + "\n"
            for i, q in enumerate(ids)
        )
    )
    spec = {
        "teacher": {"model": "teacher", "replicas": 2},
        "student": {"model": "student"},
        "data": {"taskType": "math", "train": "train.jsonl", "systemPrompt": ""},
        "generation": {
            "temperature": 0.0,
            "maxTokens": 8,
            "concurrency": 8,
            "requestTimeoutSeconds": 30,
            "maxRetries": 8,
            "minSuccessRatio": 1.0,
            "filters": KEEP_ALL,
            **generation,
        },
    }
    return DistillationJob.model_validate({"metadata": {"name": "tiny"}, "spec": spec}), ids


def written_ids(storage: Path) -> Counter:
    layout = Layout(storage, "tiny")
    ids: Counter = Counter()
    for path in (layout.shard_records("train", 0, 1), layout.shard_rejected("train", 0, 1)):
        if path.exists():
            ids.update(json.loads(line)["id"] for line in path.read_text().splitlines())
    return ids


def test_each_replica_answers_its_fair_share_by_its_own_request_count(tmp_path, two_replicas):
    job, ids = shard_job(tmp_path, 60)
    before = [replicas.requests_served(s) for s in two_replicas]
    summary = generate_shard(job, tmp_path, 0, replicas.connection(two_replicas))
    served = [replicas.requests_served(s) - b for s, b in zip(two_replicas, before, strict=True)]
    assert summary.errors == 0 and sum(served) == len(ids), served
    mean = sum(served) / len(served)
    assert all(abs(count - mean) <= 0.2 * mean for count in served), served
    assert written_ids(tmp_path) == Counter({q: 1 for q in ids})


def test_a_replica_killed_mid_run_loses_no_record_and_duplicates_none(tmp_path, two_replicas):
    survivor, victim = two_replicas
    job, ids = shard_job(tmp_path, 160)
    before = replicas.requests_served(victim)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = generate_shard(job, tmp_path, 0, replicas.connection(two_replicas))
        except BaseException as error:  # re-raised in the test's thread below
            outcome["error"] = error

    shard = threading.Thread(target=run)
    shard.start()
    wait_for(
        lambda: replicas.requests_served(victim) - before >= 10, "the victim answering requests", timeout=120
    )
    os.killpg(victim.process.pid, signal.SIGKILL)  # the pod dies at once, requests in flight with it
    killed_at = replicas.requests_served(survivor)
    shard.join(timeout=300)
    assert not shard.is_alive(), "the shard did not finish after a replica died"
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    assert summary.errors == 0 and summary.prompts == len(ids)
    assert written_ids(tmp_path) == Counter({q: 1 for q in ids})  # every prompt answered exactly once
    assert replicas.requests_served(survivor) > killed_at  # the rest went to the survivor
