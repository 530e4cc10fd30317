"""Data in and stale results out: local readers (JSONL, Parquet), decontamination, stage fingerprints,
stale shard files moved aside, the current shard set, and `distillery run`'s bookkeeping."""

from __future__ import annotations

import json

import pytest

from distillery import fingerprints
from distillery.api import DataSpec, DistillationJob
from distillery.contract.summaries import FailureReason
from distillery.datasource import InputError, identity, input_format, iter_records
from distillery.evaluation.evaluate import rejudge
from distillery.generation.decontamination import Decontaminator, ngrams, overlap
from distillery.generation.files import supersede_stale
from distillery.local import runner as local
from distillery.storage import Layout, generated_fingerprint
from distillery.training.data import record_files

pytestmark = pytest.mark.unit


def job(uid: str | None = None, **spec) -> DistillationJob:
    base = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
        "evaluation": {"gate": {"minScore": 0.9}},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    metadata = {"name": "demo", **({"uid": uid} if uid else {})}
    return DistillationJob.model_validate({"metadata": metadata, "spec": base})


INPUTS = {"train": {"sha256": "sha256:a", "bytes": 1}, "validation": {"sha256": "sha256:b", "bytes": 1}}


# ------------------------------------------------------------------ readers


def test_parquet_is_read_in_batches_with_row_numbers_and_jsonl_with_line_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=700)
    got = list(iter_records(tmp_path / "in.parquet", select=lambda p: p % 1000 == 7))
    assert got == [(8, rows[7]), (1008, rows[1007]), (2008, rows[2007])]
    assert len(list(iter_records(tmp_path / "in.parquet", limit=10))) == 10
    (tmp_path / "in.jsonl").write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert list(iter_records("in.jsonl", root=tmp_path)) == [(1, {"prompt": "a"}), (3, {"prompt": "b"})]
    assert (input_format("s3://b/x.PARQUET"), input_format("x.jsonl.gz"), input_format("x.pq", "jsonl")) == (
        "parquet",
        "jsonl",
        "jsonl",
    )


def test_a_file_that_is_not_parquet_or_missing_names_the_field(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match=r"data.train \(.*bad.parquet\): not a Parquet file"):
        list(iter_records(tmp_path / "bad.parquet", field="data.train"))
    with pytest.raises(InputError) as missing:
        identity("absent.jsonl", root=tmp_path, field="data.validation")
    assert missing.value.reason is FailureReason.input_not_found and "data.validation" in str(missing.value)
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert identity("x.jsonl", root=tmp_path)["sha256"].startswith("sha256:")


# ------------------------------------------------------------------ decontamination


def test_a_training_prompt_sharing_a_13_gram_with_validation_is_dropped():
    shared = "the quick brown fox jumps over the lazy dog near the quiet river bank today"
    data = DataSpec.model_validate({"taskType": "qa", "train": "t", "validation": "v"})
    checker = Decontaminator(data, [{"prompt": f"Tell me: {shared}?"}, {"prompt": "What is 2+2?"}])
    assert not checker.keep({"prompt": f"{shared.upper()}!! and then some more words"})  # case, punctuation
    assert checker.keep({"prompt": "the quick brown fox jumps over the lazy dog near the quiet lake"})
    assert not checker.keep({"prompt": "what is 2 + 2"})  # a short prompt is one n-gram of all its words
    assert checker.keep({"prompt": "What is 2+3?"})
    lenient = DataSpec.model_validate(
        {"taskType": "qa", "train": "t", "validation": "v", "decontamination": {"maxOverlap": 0.5}}
    )
    assert Decontaminator(lenient, [{"prompt": shared}]).keep({"prompt": shared + " " + "x " * 40})
    grams = ngrams(shared, 13)
    assert len(grams) == 3 and overlap(grams, grams) == 1.0 and overlap(set(), grams) == 0.0


def test_the_template_around_a_prompt_is_not_what_is_compared():
    data = DataSpec.model_validate(
        {
            "taskType": "qa",
            "train": "t",
            "validation": "v",
            "promptTemplate": "Answer carefully, step by step, in one word, citing nothing at all: {prompt}",
        }
    )
    checker = Decontaminator(data, [{"prompt": "Capital of France?"}])
    assert checker.keep({"prompt": "Capital of Spain?"})


# ------------------------------------------------------------------ fingerprints


def test_each_change_reruns_its_stage_and_the_ones_after_it():
    base = fingerprints.chain(job(), INPUTS)
    teacher = fingerprints.chain(job(teacher={"model": "models/other-teacher"}), INPUTS)
    sampling = fingerprints.chain(job(generation={"temperature": 0.2}), INPUTS)
    data = fingerprints.chain(job(), {**INPUTS, "train": {"etag": "new", "bytes": 2}})
    training = fingerprints.chain(job(training={"learningRate": 1e-4}), INPUTS)
    evaluation = fingerprints.chain(job(evaluation={"maxSamples": 10}), INPUTS)
    for changed in (teacher, sampling, data):
        assert (changed.generate, changed.train, changed.evaluate) != (
            base.generate,
            base.train,
            base.evaluate,
        )
        assert (
            changed.generate != base.generate
            and changed.train != base.train
            and changed.evaluate != base.evaluate
        )
    assert training.generate == base.generate and training.train != base.train != training.evaluate
    assert (evaluation.generate, evaluation.train) == (
        base.generate,
        base.train,
    ) and evaluation.evaluate != base.evaluate


def test_where_a_stage_runs_and_the_gate_change_no_fingerprint():
    base = fingerprints.chain(job(), INPUTS)
    placed = job(
        generation={"concurrency": 64, "parallelism": 1, "resources": {"requests": {"cpu": "2"}}},
        training={"checkpointEverySteps": 7, "backoffLimit": 5},
        teacher={"startupTimeoutSeconds": 60},
    )
    assert fingerprints.chain(placed, INPUTS) == base
    gate = job(evaluation={"gate": {"minScore": 0.1}})
    assert fingerprints.chain(gate, INPUTS) == base
    assert fingerprints.verdict(gate, base.evaluate) != fingerprints.verdict(job(), base.evaluate)


def test_a_new_job_object_under_an_old_name_starts_over_on_a_cluster():
    first = fingerprints.chain(job(uid="11111111-0000-4000-8000-000000000000"), INPUTS)
    second = fingerprints.chain(job(uid="22222222-0000-4000-8000-000000000000"), INPUTS)
    assert first.generate != second.generate


def test_changing_only_the_gate_keeps_generation_and_training_in_distillery_run(tmp_path, monkeypatch):
    """Stale case 1's bookkeeping: after a failed gate, a lowered gate re-runs only evaluate (which re-judges)."""
    monkeypatch.setattr(fingerprints, "inputs", lambda j, root: INPUTS)
    layout = Layout(tmp_path, "demo")
    strict = job()
    keys = local.run_keys(strict, tmp_path)
    for stage in local.local_stages():
        layout.stage_done(stage).parent.mkdir(parents=True, exist_ok=True)
        layout.stage_done(stage).write_text(json.dumps({"runKey": keys[stage]}))
    lowered = local.run_keys(job(evaluation={"gate": {"minScore": 0.1}}), tmp_path)
    assert [local.stage_state(layout, s, lowered[s]) for s in local.local_stages()] == [
        "done",
        "done",
        "changed",
    ]
    resampled = local.run_keys(job(generation={"temperature": 1.0}), tmp_path)
    assert [local.stage_state(layout, s, resampled[s]) for s in local.local_stages()] == ["changed"] * 3


def test_rejudging_applies_the_new_gate_to_the_stored_scores():
    stored = {
        "metric": "accuracy",
        "retention": 0.6,
        "models": {"student": {"score": 0.6, "latencyP95Ms": 10.0}},
        "gate": {"passed": False, "reason": "quality gate failed: accuracy 0.6 < minScore 0.9", "checks": []},
    }
    judged = rejudge(job(evaluation={"gate": {"minScore": 0.5}}), stored)
    assert judged["gate"]["passed"] is True and judged["models"] == stored["models"]
    assert judged["rejudged"]["previousGate"].startswith("quality gate failed")


# ------------------------------------------------------------------ stale shard files


def write_shard(layout: Layout, split: str, k: int, n: int, stamp: str | None) -> None:
    directory = layout.generated(split)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"shard-{k:05d}-of-{n:05d}.jsonl").write_text('{"messages": [], "response": "x"}\n')
    (directory / f"shard-{k:05d}-of-{n:05d}.summary.json").write_text(json.dumps({"fingerprint": stamp}))
    if stamp:
        (directory / f"shard-{k:05d}-of-{n:05d}.fingerprint").write_text(stamp + "\n")


def test_a_new_shard_count_or_spec_moves_the_old_files_aside_and_training_reads_only_the_current_set(
    tmp_path,
):
    """Stale case 3 (generation.shards 4 -> 8): the 4-set is moved aside, never read twice."""
    layout = Layout(tmp_path, "demo")
    for k in range(4):
        write_shard(layout, "train", k, 4, "old")
    moved = supersede_stale(layout, "train", 0, 8, "new")
    assert len(moved) == 4 * 3 and not list(layout.generated("train").glob("*-of-00004*"))
    assert len(list((layout.superseded / "old" / "generated" / "train").iterdir())) == 12
    assert (layout.generated("train") / "shard-00000-of-00008.fingerprint").read_text() == "new\n"
    for k in range(8):
        write_shard(layout, "train", k, 8, "new")
    write_shard(layout, "train", 0, 4, "old")  # a straggler of the old set
    assert [p.name for p in record_files(layout.generated("train"), 8)] == [
        f"shard-{k:05d}-of-00008.jsonl" for k in range(8)
    ]
    assert generated_fingerprint(layout, "train", 8) == "new"
    assert supersede_stale(layout, "train", 3, 8, "new") == [
        "shard-00000-of-00004.fingerprint",
        "shard-00000-of-00004.jsonl",
        "shard-00000-of-00004.summary.json",
    ]
    # Stale case 2 (a changed spec, same name and storage): the shard's own files are moved, then restamped.
    assert supersede_stale(layout, "train", 5, 8, "changed") == [
        "shard-00005-of-00008.fingerprint",
        "shard-00005-of-00008.jsonl",
        "shard-00005-of-00008.summary.json",
    ]
    (layout.generated("train") / "shard-00006-of-00008.summary.json").write_text(
        json.dumps({"fingerprint": "changed"})
    )
    with pytest.raises(ValueError, match="made for different specs or inputs"):
        generated_fingerprint(layout, "train", 8)
