"""The DistillationJob models: defaults, ranges, cross-field rules and error messages."""

from __future__ import annotations

import copy

import pytest

from distillery.api import DistillationJob, TrainingMethod
from distillery.errors import InvalidJob, parse_job

pytestmark = pytest.mark.unit

MINIMAL = {
    "apiVersion": "distillery.dev/v1alpha1",
    "kind": "DistillationJob",
    "metadata": {"name": "j"},
    "spec": {
        "teacher": {"model": "big"},
        "student": {"model": "small"},
        "data": {"taskType": "qa", "train": "train.jsonl", "validation": "val.jsonl"},
    },
}


def job(**spec_changes) -> dict:
    document = copy.deepcopy(MINIMAL)
    for dotted, value in spec_changes.items():
        node = document["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return document


def problems(document: dict) -> list[str]:
    with pytest.raises(InvalidJob) as caught:
        parse_job(document)
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_defaults_are_the_classic_ones():
    spec = parse_job(job()).spec
    assert spec.training.learning_rate == 2e-5
    assert spec.training.batch_size == 2
    assert spec.training.epochs == 3
    assert spec.generation.temperature == 0.7
    assert spec.training.method is TrainingMethod.sft
    assert spec.generation.shards == 1
    assert spec.suspend is False
    assert spec.storage.mount_path == "/data"


def test_round_trip_uses_camel_case():
    dumped = parse_job(job(training__learningRate=1e-4)).model_dump(by_alias=True, exclude_none=True)
    assert dumped["spec"]["training"]["learningRate"] == 1e-4
    assert "learning_rate" not in dumped["spec"]["training"]
    assert DistillationJob.model_validate(dumped) == parse_job(job(training__learningRate=1e-4))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"generation__shards": 0}, "spec.generation.shards: input should be greater than or equal to 1"),
        ({"training__learningRate": 0}, "spec.training.learningRate: input should be greater than 0"),
        (
            {"generation__temperature": 3},
            "spec.generation.temperature: input should be less than or equal to 2",
        ),
        ({"generation__topP": 0}, "spec.generation.topP: input should be greater than 0"),
        ({"data__taskType": "poetry"}, "spec.data.taskType: input should be 'nli', 'conversation'"),
        ({"training__method": "dpo"}, "spec.training.method: input should be 'sft', 'kd' or 'onPolicy'"),
        ({"generation__temprature": 1}, "spec.generation.temprature: is not a known field"),
        (
            {"evaluation__gate__minRetention": -1},
            "spec.evaluation.gate.minRetention: input should be greater",
        ),
        (
            {"teacher__endpoint": {"url": "ftp://x", "model": "m"}, "teacher__model": None},
            "spec.teacher.endpoint.url: string should match pattern",
        ),
        (
            {"training__tolerations": [{"operator": "Maybe"}]},
            "spec.training.tolerations[0].operator: input should be",
        ),
    ],
)
def test_field_errors_name_the_field_and_what_is_expected(changes, expected):
    found = problems(job(**changes))
    assert any(line.startswith(expected) for line in found), found


def test_the_wrong_value_is_quoted():
    assert problems(job(training__batchSize="two")) == [
        "spec.training.batchSize: expected a whole number from 1 to 4096, or 'auto' (got 'two')"
    ]
    assert problems(job(training__epochs="two")) == [
        "spec.training.epochs: input should be a valid integer (got 'two')"
    ]
    # As the CRD types it: a quoted number is a string, never coerced (the API server refuses it too).
    assert problems(job(training__epochs="3")) == [
        "spec.training.epochs: input should be a valid integer (got '3')"
    ]


def test_missing_required_fields():
    document = job()
    del document["spec"]["student"]
    assert problems(document) == ["spec.student: is required but missing"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"teacher__endpoint": {"url": "http://x/v1", "model": "m"}},
            "spec.teacher.model: set exactly one of",
        ),
        ({"teacher__model": None}, "spec.teacher.model: set exactly one of"),
        (
            {"teacher__gpus": 2, "teacher__tensorParallelSize": 4},
            "spec.teacher.tensorParallelSize: expected at most teacher.gpus",
        ),
        ({"training__method": "kd"}, "spec.generation.topLogprobs: is 0 but training.method is 'kd'"),
        (
            {"generation__shards": 2, "generation__parallelism": 4},
            "spec.generation.parallelism: expected at most generation.shards",
        ),
        (
            {"storage__pvc": {"claimName": "a", "size": "1Gi"}},
            "spec.storage.pvc.claimName: set exactly one of",
        ),
        ({"storage__pvc": {}}, "spec.storage.pvc.claimName: set exactly one of"),
        (
            {"evaluation__compare": ["student"], "evaluation__gate__minRetention": 0.9},
            "spec.evaluation.gate.minRetention: needs 'teacher'",
        ),
        ({"data__validation": None, "evaluation__gate__minScore": 0.5}, "spec.data.validation: is empty"),
        ({"data__taskType": "nli", "data__labels": ["yes"]}, "spec.data.labels: expected at least two"),
        (
            {"evaluation__benchmarks": [{"task": "piqa"}, {"task": "piqa", "limit": 5}]},
            "spec.evaluation.benchmarks: lists a task twice",
        ),
        (
            {"evaluation__benchmarks": [{"task": " "}]},
            "spec.evaluation.benchmarks[0].task: string should match pattern",
        ),
        (
            {"evaluation__benchmarks": [{"task": "piqa", "numFewshot": -1}]},
            "spec.evaluation.benchmarks[0].numFewshot: input should be greater",
        ),
        (
            {"evaluation__benchmarks": [{"task": "piqa", "limit": 0}]},
            "spec.evaluation.benchmarks[0].limit: input should be greater",
        ),
        ({"evaluation__benchmarkTasks": "gs://b/tasks"}, "spec.evaluation.benchmarkTasks: expected a path"),
        (
            {"evaluation__gate__benchmarks": [{"task": "piqa", "metric": "acc", "minScore": 0.5}]},
            "spec.evaluation.gate.benchmarks: names a task that is not in evaluation.benchmarks",
        ),
        (
            {
                "evaluation__benchmarks": [{"task": "piqa"}],
                "evaluation__gate__benchmarks": [{"task": "piqa", "metric": "acc"}],
            },
            "spec.evaluation.gate.benchmarks[0].minRetention: set exactly one of minRetention and minScore",
        ),
        (
            {
                "evaluation__compare": ["student"],
                "evaluation__benchmarks": [{"task": "piqa"}],
                "evaluation__gate__benchmarks": [{"task": "piqa", "metric": "acc", "minRetention": 0.9}],
            },
            "spec.evaluation.gate.benchmarks: a minRetention floor needs 'teacher'",
        ),
    ],
)
def test_cross_field_rules(changes, expected):
    found = problems(job(**changes))
    assert any(line.startswith(expected) for line in found), found


def test_benchmarks_are_read_with_their_defaults():
    evaluation = parse_job(
        job(
            evaluation__benchmarks=[{"task": "arc_easy"}, {"task": "piqa", "numFewshot": 5, "limit": 50}],
            evaluation__benchmarkTasks="s3://tasks-bucket/lm-eval",
            evaluation__gate__benchmarks=[{"task": "piqa", "metric": "acc_norm", "minRetention": 0.9}],
        )
    ).spec.evaluation
    assert [(b.task, b.num_fewshot, b.limit) for b in evaluation.benchmarks] == [
        ("arc_easy", 0, None),
        ("piqa", 5, 50),
    ]
    assert evaluation.benchmark_tasks == "s3://tasks-bucket/lm-eval"
    assert evaluation.gate.benchmarks[0].metric == "acc_norm"


def test_kd_with_logprobs_is_accepted():
    spec = parse_job(job(training__method="kd", generation__topLogprobs=5)).spec
    assert spec.training.method is TrainingMethod.kd


def test_not_a_mapping():
    with pytest.raises(InvalidJob, match="expected a DistillationJob mapping"):
        parse_job(["a list"])


def test_wrong_kind():
    document = job()
    document["kind"] = "Deployment"
    assert problems(document)[0].startswith("kind: input should be 'DistillationJob'")
