"""`distillery run`: where its storage is, and bad input refused before any work starts."""

from __future__ import annotations

import json

import pytest
import yaml

from distillery import cli
from distillery.api import DistillationJob
from distillery.contract.summaries import StageSummary, generation_totals
from distillery.local import runner as local
from distillery.storage import Layout

pytestmark = pytest.mark.unit


def job(**spec) -> DistillationJob:
    base = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
    }
    base.update(spec)
    return DistillationJob.model_validate({"metadata": {"name": "demo"}, "spec": base})


def test_storage_is_relative_to_the_spec_file(tmp_path):
    spec_file = tmp_path / "examples" / "demo.yaml"
    assert (
        local.storage_root(job(storage={"path": "../build/x"}), spec_file)
        == (tmp_path / "build" / "x").resolve()
    )
    assert local.storage_root(job(), spec_file) == (tmp_path / "examples" / ".distillery" / "demo").resolve()
    assert local.storage_root(job(), spec_file, str(tmp_path / "s")) == (tmp_path / "s").resolve()


def make_storage(root):
    for model in ("teacher", "student"):
        (root / "models" / model).mkdir(parents=True)
    (root / "data").mkdir()
    for split in ("train", "validation"):
        (root / "data" / f"{split}.jsonl").write_text('{"prompt": "q", "answer": "a"}\n')


def test_preflight_passes_a_complete_storage(tmp_path):
    make_storage(tmp_path)
    assert local.preflight(job(), tmp_path) == []


def test_preflight_names_each_missing_input(tmp_path):
    make_storage(tmp_path)
    (tmp_path / "data" / "validation.jsonl").unlink()
    (tmp_path / "models" / "teacher").rmdir()
    problems = {p.path: p.message for p in local.preflight(job(), tmp_path)}
    assert set(problems) == {"spec.data.validation", "spec.teacher.model"}
    assert "data/validation.jsonl is not a file under the storage" in problems["spec.data.validation"]
    assert "models/teacher is not a model directory" in problems["spec.teacher.model"]


def test_a_hub_id_is_not_mistaken_for_a_missing_directory(tmp_path):
    make_storage(tmp_path)
    spec = job(teacher={"model": "meta-llama/Llama-3.1-8B-Instruct"}, student={"model": "./models/student"})
    assert local.preflight(spec, tmp_path) == []


def test_bad_spec_fails_before_any_work_with_one_line_per_problem(tmp_path, capsys):
    document = {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "bad"},
        "spec": {
            "teacher": {"model": "models/teacher"},
            "student": {"model": "models/student"},
            "data": {"taskType": "qa", "train": "data/train.jsonl"},
            "generation": {"shards": 0},
            "storage": {"path": "store"},
        },
    }
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(document))
    assert cli.main(["run", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert "spec.generation.shards: input should be greater than or equal to 1 (got 0)" in err
    assert not (tmp_path / "store").exists()

    document["spec"]["generation"]["shards"] = 1  # valid now, but the storage has no inputs
    spec_file.write_text(yaml.safe_dump(document))
    assert cli.main(["run", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert f"{spec_file}: spec.data.train: data/train.jsonl is not a file under the storage" in err
    assert not (tmp_path / "store" / "jobs").exists()


def test_generation_counts_as_complete_only_when_every_shard_summary_exists(tmp_path):
    spec = job(generation={"shards": 2})
    layout = Layout(tmp_path, "demo")
    assert not local.generation_complete(spec, layout)
    for split in ("train", "validation"):
        for k in range(2):
            path = layout.shard_summary(split, k, 2)
            path.parent.mkdir(parents=True, exist_ok=True)
            if (split, k) != ("validation", 1):
                path.write_text(json.dumps({"records": 3, "rejected": {"duplicate": 1}, "errors": 0}))
    assert not local.generation_complete(spec, layout)
    layout.shard_summary("validation", 1, 2).write_text(json.dumps({"records": 2, "errors": 1}))
    assert local.generation_complete(spec, layout)
    totals = generation_totals(local.shard_summaries(spec, layout))
    assert (totals.shards, totals.records, totals.rejected, totals.errors) == (2, 11, 3, 1)


@pytest.mark.parametrize(
    ("method", "done", "keep", "expected"),
    [
        # onPolicy: one teacher from generation through training, gone before evaluation.
        (
            "onPolicy",
            (),
            False,
            ["teacher up", "generate with it", "train with it", "teacher down", "evaluate"],
        ),
        # resumed after generation: the teacher comes back for training only.
        ("onPolicy", ("generate",), False, ["teacher up", "train with it", "teacher down", "evaluate"]),
        ("onPolicy", ("generate", "train"), False, ["evaluate"]),
        # other methods: the teacher serves generation only.
        ("sft", (), False, ["teacher up", "generate with it", "teacher down", "train alone", "evaluate"]),
        ("sft", ("generate",), False, ["train alone", "evaluate"]),
        # kept for the evaluation (`local.teacher.keep_teacher`): its cost span ends where generation does,
        # training runs without it, the evaluation is handed it, and it goes after the evaluation.
        (
            "sft",
            (),
            True,
            ["teacher up", "generate with it", "span", "train alone", "evaluate with it", "teacher down"],
        ),
        (
            "onPolicy",
            (),
            True,
            ["teacher up", "generate with it", "train with it", "span", "evaluate with it", "teacher down"],
        ),
        # nothing to keep when generation is not run again: the evaluation serves its own teacher.
        ("sft", ("generate",), True, ["train alone", "evaluate"]),
    ],
)
def test_the_teacher_is_kept_through_training_for_on_policy_and_for_the_evaluation_when_it_can(
    tmp_path, monkeypatch, method, done, keep, expected
):
    """The stage functions and the teacher are stand-ins that record what run_job asks of them."""
    import contextlib

    calls: list[str] = []
    connection = object()

    @contextlib.contextmanager
    def teacher(*_args, **_kwargs):
        calls.append("teacher up")
        recorded = []

        def record():
            if not recorded:
                recorded.append(True)
                calls.append("span")

        yield connection, record
        calls.append("teacher down")

    def stage(name):
        def run(_job, _root, layout, _progress, given=None):
            if name == "evaluate":
                assert isinstance(given, local.Spent)  # what the stages before it cost, for the report
                calls.append("evaluate with it" if given.teacher is connection else "evaluate")
                layout.evaluation_report.parent.mkdir(parents=True, exist_ok=True)
                layout.evaluation_report.write_text("{}")
            else:
                calls.append(
                    f"{name} with it" if given is connection else f"{name} alone" if given is None else "?"
                )
            return StageSummary(stage=name)

        return run

    monkeypatch.setattr(local, "teacher", teacher)
    monkeypatch.setattr(local, "keep_teacher", lambda *_args: keep)
    monkeypatch.setattr(local, "STAGE_FUNCTIONS", {name: stage(name) for name in local.local_stages()})
    spec = job(training={"method": method})
    layout = Layout.of(spec, tmp_path)
    for split in ("train", "validation"):  # the inputs the stages' fingerprints hash
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / f"{split}.jsonl").write_text('{"prompt": "p"}\n')
    keys = local.run_keys(spec, tmp_path)
    for name in done:
        layout.stage_done(name).parent.mkdir(parents=True, exist_ok=True)
        layout.stage_done(name).write_text(json.dumps({"runKey": keys[name]}))
    local.run_job(spec, tmp_path)
    assert calls == expected
