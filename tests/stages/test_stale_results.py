"""The three stale-result cases of issue 13, with the real stages and the session's vLLM teacher.

1. After a failed gate, a lowered gate re-judges the stored scores: nothing is served again.
2. A changed spec under the same job name and storage regenerates: training sees only the new answers.
3. More shards than before: the old shard set is moved aside, no record is read twice.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from pathlib import Path

import pytest

from distillery.api import DistillationJob
from distillery.contract.records import Record, read_records
from distillery.evaluation import evaluate
from distillery.generation.shard import generate_shard
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout, generated_fingerprint
from distillery.training.data import record_files

pytestmark = pytest.mark.stages

PROMPTS = 24


def make_job(**spec) -> DistillationJob:
    base = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {
            "taskType": "qa",
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl",
            "promptTemplate": "{prompt}",
            "systemPrompt": "",
            "decontamination": {"enabled": False},
        },  # every prompt is generated: the counts below are exact
        "generation": {
            "temperature": 0.0,
            "maxTokens": 8,
            "minSuccessRatio": 0.0,
            "concurrency": 4,
            "smokeTestPrompts": 0,
            "filters": {"verify": False, "dedup": False, "requireFinished": False, "minResponseChars": 0},
        },
        "evaluation": {"gpus": 0, "concurrency": 4, "compare": ["teacher", "student"]},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    return DistillationJob.model_validate({"metadata": {"name": "stale"}, "spec": base})


@pytest.fixture
def storage(tmp_path, tiny_models) -> Path:
    from make_tiny_models import task_examples  # hack/
    from prepare_tiny import write_records

    root = tmp_path / "storage"
    for name in ("teacher", "student"):
        shutil.copytree(tiny_models[name], root / "models" / name)
    write_records(root / "data" / "train.jsonl", task_examples(random.Random(11), PROMPTS), "train")
    write_records(root / "data" / "validation.jsonl", task_examples(random.Random(12), 8), "val")
    return root


def generate(job: DistillationJob, root: Path, teacher) -> None:
    connection = TeacherConnection(teacher.base_url, teacher.model)
    for k in range(job.spec.generation.shards):
        generate_shard(job, root, k, connection)


def train_records(job: DistillationJob, root: Path) -> list[Record]:
    layout = Layout.of(job, root)
    return list(read_records(record_files(layout.generated("train"), job.spec.generation.shards)))


def test_a_lowered_gate_rejudges_the_stored_scores_without_serving_anything(storage, vllm_teacher):
    strict = make_job(evaluation={"gate": {"minScore": 1.01}})
    generate(strict, storage, vllm_teacher)
    layout = Layout.of(strict, storage)
    shutil.copytree(storage / "models" / "student", layout.student)  # the "distilled" student: its base
    served = []

    @contextlib.contextmanager
    def serve(job, layout, name, model):
        served.append(name)
        yield TeacherConnection(vllm_teacher.base_url, vllm_teacher.model), vllm_teacher.process.pid

    first = evaluate.evaluate_job(strict, storage, serve=serve, say=lambda m: None)
    # Every compared model is served by the evaluation and measured the same way (evaluation/measure.py).
    assert first["gate"]["passed"] is False and served == ["teacher", "student"]
    answers = (layout.reports / "evaluation-answers.jsonl").read_text()

    lowered = make_job(evaluation={"gate": {"minScore": 0.0}})
    second = evaluate.evaluate_job(lowered, storage, serve=serve, say=lambda m: None)
    assert served == ["teacher", "student"], "a changed gate alone must not serve anything again"
    assert second["gate"]["passed"] is True and second["rejudged"]["previousGate"] == first["gate"]["reason"]
    assert second["models"] == first["models"] and second["fingerprints"] == first["fingerprints"]
    assert (layout.reports / "evaluation-answers.jsonl").read_text() == answers
    assert json.loads(layout.evaluation_report.read_text())["gate"]["passed"] is True

    rescored = make_job(evaluation={"gate": {"minScore": 0.0}, "maxSamples": 4})  # not the gate: scored again
    evaluate.evaluate_job(rescored, storage, serve=serve, say=lambda m: None)
    assert served == ["teacher", "student", "teacher", "student"]


def test_a_changed_spec_under_the_same_name_regenerates_and_training_reads_only_the_new_answers(
    storage, vllm_teacher
):
    before = make_job()
    generate(before, storage, vllm_teacher)
    old = train_records(before, storage)
    assert len(old) == PROMPTS and all(r.messages[0]["role"] == "user" for r in old)
    old_fingerprint = generated_fingerprint(Layout.of(before, storage), "train", 1)

    after = make_job(data={"systemPrompt": "Answer in one word."}, generation={"maxTokens": 6})
    generate(after, storage, vllm_teacher)
    new = train_records(after, storage)
    assert len(new) == PROMPTS, "the old answers are not read beside the new ones"
    assert all(r.messages[0] == {"role": "system", "content": "Answer in one word."} for r in new)
    layout = Layout.of(after, storage)
    assert generated_fingerprint(layout, "train", 1) not in (None, old_fingerprint)
    moved = list((layout.superseded / old_fingerprint).rglob("shard-00000-of-00001.jsonl"))
    assert len(moved) == 2, "the old records of both splits are kept aside, not read"


def test_more_shards_than_before_leave_no_record_twice(storage, vllm_teacher):
    two = make_job(generation={"shards": 2})
    generate(two, storage, vllm_teacher)
    assert len(train_records(two, storage)) == PROMPTS
    three = make_job(generation={"shards": 3})
    generate(three, storage, vllm_teacher)
    records = train_records(three, storage)
    assert len(records) == PROMPTS and len({r.line for r in records}) == PROMPTS
    directory = Layout.of(three, storage).generated("train")
    assert not list(directory.glob("*-of-00002*")), "the 2-shard set is moved aside"
    assert len(record_files(directory, 3)) == 3
