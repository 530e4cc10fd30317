"""The typed hand-offs between processes: each written by its producer and read back by every consumer
through the one model in `contract/` (records, the evaluation report, the stages' series names)."""

from __future__ import annotations

import importlib

import pytest

from distillery.contract import series

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ series


def exported(registry) -> set[str]:
    """The Distillery series a registry exports, named as constructed (a counter with its `_total`)."""
    names = set()
    for family in registry.collect():
        if family.name.startswith("distillery_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


@pytest.mark.parametrize(
    "stage, module",
    [("generate", "generation"), ("train", "training"), ("evaluate", "evaluation")],
)
def test_the_series_constants_are_exactly_what_each_stage_process_exports(stage, module):
    registry = importlib.import_module(f"distillery.{module}.metrics").REGISTRY
    assert exported(registry) == set(series.BY_STAGE[stage])


@pytest.mark.parametrize("stage, module", [("train", "training"), ("evaluate", "evaluation")])
def test_the_operator_finds_its_progress_series_in_a_stage_pods_scrape(stage, module):
    from prometheus_client import generate_latest

    from distillery.controller.progress import samples
    from distillery.controller.progress import series as progress_series

    scraped = samples(
        generate_latest(importlib.import_module(f"distillery.{module}.metrics").REGISTRY).decode()
    )
    wanted = set(progress_series(stage).values())
    assert wanted and wanted <= set(scraped) & set(series.BY_STAGE[stage])


# ------------------------------------------------------------------ the teacher's records


def generated_shard(tmp_path, monkeypatch, answers, **spec):
    """Run generation's own writer (one shard, both splits) against a fake teacher answering `answers`."""
    import json

    from distillery.api import DistillationJob
    from distillery.generation import shard as shard_module
    from distillery.serving.client import ChatChoice, ChatResult, TeacherConnection

    for split, noun in (("train", "apples"), ("validation", "pears")):  # no overlap to decontaminate
        lines = [
            json.dumps(
                {
                    "id": f"{split}-{i}",
                    "prompt": f"Sam has {i} {noun} and buys {i} more {noun}. What is {i} + {i}?",
                    "answer": str(2 * i),
                }
            )
            for i in range(1, 4)
        ]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")

    class Teacher:
        def __init__(self, connection, **_):
            self.connection = connection

        async def __aenter__(self):
            return self

        async def __aexit__(self, *_):
            return False

        async def list_models(self):
            return ["teacher"]

        async def complete(self, messages, **params):
            text = answers(messages[-1]["content"])
            logprobs = [{"token_id": 7, "logprob": -0.5, "top": [[7, -0.5], [9, -1.25]]}]
            return ChatResult([ChatChoice(text, "stop", 1, logprobs)], 11, 1, 0.0123, model="teacher")

    monkeypatch.setattr(shard_module, "ChatClient", Teacher)
    job = DistillationJob.model_validate(
        {
            "metadata": {"name": "handoff"},
            "spec": {
                "teacher": {"model": "models/teacher"},
                "student": {"model": "models/student"},
                "data": {"taskType": "math", "train": "train.jsonl", "validation": "validation.jsonl"},
                "generation": {
                    "topLogprobs": 2,
                    "smokeTestPrompts": 1,
                    "minSuccessRatio": 0.1,
                    "filters": {"verify": True},
                },
                **spec,
            },
        }
    )
    shard_module.generate_shard(job, tmp_path, 0, TeacherConnection("http://teacher/v1", "teacher"))
    return job


def test_a_record_generation_writes_is_what_training_and_evaluation_read(tmp_path, monkeypatch):
    import json

    from distillery.contract.records import Record, RejectedRecord, read_records
    from distillery.evaluation.answers import teacher_records
    from distillery.storage import REJECTED, Layout
    from distillery.training.data import record_files

    # 1 + 1 is answered right, the others wrong: accepted and rejected records both.
    job = generated_shard(
        tmp_path, monkeypatch, lambda q: "The answer is 2." if "1 + 1" in q else "No idea: 5"
    )
    layout = Layout.of(job, tmp_path)
    files = record_files(layout.generated("train"), job.spec.generation.shards)
    assert [f.name for f in files] == ["shard-00000-of-00001.jsonl"]
    (written,) = files[0].read_text().splitlines()
    record = Record.from_line(written)
    assert json.loads(written) == record.model_dump(mode="json")  # every field, by the model's name
    assert list(json.loads(written)) == list(Record.model_fields)  # in the order of the format
    assert record.to_line() == written + "\n"  # the bytes a rewrite would give
    assert (record.line, record.sample, record.response, record.prompt_tokens) == (
        1,
        0,
        "The answer is 2.",
        11,
    )
    assert record.has_teacher_top and record.logprobs[0].top == [(7, -0.5), (9, -1.25)]

    (trained,) = read_records(files)  # the training reader
    assert trained == record
    rejected = list(read_records(layout.shard_files("train", 1, REJECTED), RejectedRecord))
    assert [(r.line, r.reject_reason) for r in rejected] == [(2, "wrong_answer"), (3, "wrong_answer")]

    by_line = teacher_records(layout, job.spec.generation.shards)  # the evaluation reader: rejected too
    assert sorted(by_line) == [1, 2, 3]
    assert by_line[1].response == "The answer is 2." and by_line[2].response == "No idea: 5"
    assert by_line[1].latency_ms == 12.3 and by_line[1].completion_tokens == 1


# ------------------------------------------------------------------ the evaluation report


def no_extras(model) -> list[str]:
    """Fields of a parsed report (at any depth) that its model does not name."""
    from pydantic import BaseModel

    found = [f"{type(model).__name__}.{k}" for k in model.model_extra or {}]
    for name in type(model).model_fields:
        values = getattr(model, name)
        for value in (
            values.values() if isinstance(values, dict) else values if isinstance(values, list) else [values]
        ):
            if isinstance(value, BaseModel) and value.model_config.get("extra") == "allow":
                found += no_extras(value)
    return found


def test_the_report_the_evaluation_stage_writes_is_what_its_readers_parse(tmp_path, monkeypatch):
    import contextlib
    import json

    from distillery.contract.report import EvaluationReport
    from distillery.evaluation import evaluate, export, measure
    from distillery.evaluation.answers import Answer
    from distillery.evaluation.card import model_card
    from distillery.evaluation.report import render_markdown, summary_lines
    from distillery.storage import Layout

    job = generated_shard(
        tmp_path,
        monkeypatch,
        lambda q: "The answer is 2." if "1 + 1" in q else "The answer is 4.",
        evaluation={"gpus": 0, "compare": ["teacher", "student"], "gate": {"minRetention": 0.5}},
        output={"uri": "exported"},
    )
    layout = Layout.of(job, tmp_path)
    layout.student.mkdir(parents=True)
    (layout.student / "config.json").write_text("{}")

    def student_answers(name, connection, pid, prompts, job, say):  # one round of a served student
        answers = [Answer(f"The answer is {2 * i}.", 10.0 * i, 4) for i in range(1, len(prompts) + 1)]
        return answers, 1.5, 1 << 20, 0.5

    monkeypatch.setattr(measure, "_ask_round", student_answers)
    serve = lambda *args: contextlib.nullcontext((None, 4242))  # noqa: E731
    # The stage's writer; the teacher from its records, so the report carries both kinds of source.
    returned = evaluate.evaluate_job(
        job, tmp_path, serve=serve, say=lambda m: None, teacher_from_records=True
    )

    written = json.loads(layout.evaluation_report.read_text())
    assert written == returned
    report = EvaluationReport.read(layout.evaluation_report)
    assert no_extras(report) == []  # the model names every field the stage writes
    assert report.model_dump(mode="json", by_alias=True, exclude_unset=True) == written  # lossless
    assert report.metric == "accuracy" and report.samples == 3 and report.task_type == "math"
    assert report.score("teacher") == 2 / 3 and report.score("student") == 1.0
    assert report.gate.passed and report.gate.checks[0].name == "minRetention"
    assert report.models["teacher"].source == "generation records" and not report.models["teacher"].live
    assert report.live_requests == 3  # the student's answers; the teacher's came from its records
    assert report.output is not None and report.output.written and report.output.files
    assert report.fingerprints is not None and report.fingerprints.evaluate

    # Its readers: the stage's summary, the renderings, the model card, the export's plan.
    summary = evaluate.evaluate_summary(written, "jobs/handoff/reports/evaluation.json")
    assert summary.evaluation.gate_passed and summary.evaluation.student.score == 1.0
    assert summary.requests == 3 and summary.output == "exported"
    assert summary_lines(written) == summary_lines(report)
    assert "PASSED" in summary_lines(report)[-2] and "retention 1.500" in "\n".join(summary_lines(report))
    assert "| **student** | 1.000 |" in render_markdown(report, None)
    assert "| **teacher** | 0.667 |" in model_card(job, report, None)
    assert export.plan(job, report) == {
        "uri": "exported",
        "written": True,
        "reason": "output.when is gatePassed",
    }
    assert (tmp_path / "exported" / "README.md").read_text() == model_card(job, report, None)
