"""Writes a kill cannot cut in half: each writer (records, a checkpoint, a summary, the report, the
export), run as the stage runs it, is killed at seeded random byte offsets (the fault hook of
`distillery.atomic`), and its real reader then sees the old complete state or the new complete one,
never a torn one. A failure prints the seed and the offset; replay it with the same seed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from distillery.api import DistillationJob
from distillery.atomic import KILLED_EXIT_CODE
from distillery.contract.records import read_records
from distillery.contract.summaries import TrainSummary, read_summary
from distillery.evaluation.evaluate import stored_report
from distillery.generation.files import partial_path
from distillery.generation.shard import Shard
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout
from distillery.training.checkpoints import Checkpoints
from tests.support.killed_writers import (
    CHECKPOINT,
    EXPORT,
    GENERATE,
    REPORT,
    SUMMARY,
    TeacherDouble,
    answer,
    export_job,
    exported,
    report,
    run_writer,
)

pytestmark = pytest.mark.stages

SEEDS = (1, 2, 3)
PROMPTS = 12
SAMPLES = 2


def _cut_points(seed: int, size: int, count: int = 3) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.randrange(0, size) for _ in range(count))


def _shard_job(root: Path, url: str) -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "killed"},
            "spec": {
                "teacher": {"endpoint": {"url": url, "model": "teacher"}},
                "student": {"model": "models/student"},
                "data": {"taskType": "math", "train": "data/train.jsonl"},
                "generation": {
                    "shards": 1,
                    "samplesPerPrompt": SAMPLES,
                    "concurrency": 2,
                    "smokeTestPrompts": 1,
                },
                "storage": {"path": str(root)},
            },
        }
    )


def _prepare_inputs(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    lines = [json.dumps({"prompt": f"question number {i} " + "word " * 20}) for i in range(PROMPTS)]
    (root / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")


def _generate(root: Path, teacher: TeacherDouble, budget: int | None) -> int:
    job = _shard_job(root, teacher.base_url)
    return run_writer(GENERATE, [job.model_dump_json(by_alias=True), str(root), teacher.base_url], budget)


def _records_bytes(layout: Layout) -> int:
    return sum(p.stat().st_size for p in layout.generated("train").iterdir() if p.is_file())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shard_killed_mid_write_resumes_to_every_prompt_answered_exactly_once(tmp_path, seed):
    with TeacherDouble() as teacher:
        clean = tmp_path / "clean"
        _prepare_inputs(clean)
        assert _generate(clean, teacher, None) == 0
        size = _records_bytes(Layout(clean, "killed"))

        root = tmp_path / "killed"
        _prepare_inputs(root)
        layout = Layout(root, "killed")
        job = _shard_job(root, teacher.base_url)
        kills = 0
        for cut in _cut_points(seed, size // 2, 4):
            if _generate(root, teacher, cut) == KILLED_EXIT_CODE:
                kills += 1
            # The real reader (a restarted shard's recovery) finds whole prompts only: each input line has
            # all its samples or none.
            shard = Shard(job, root, 0, TeacherConnection(teacher.base_url, "teacher"))
            shard.prepare()
            (work,) = shard.splits
            if not work.complete:
                assert set(work.counts[1:]) <= {0, SAMPLES}, f"seed {seed}, cut at byte {cut}"
                text = partial_path(work.records).read_text() if partial_path(work.records).exists() else ""
                assert not text or text.endswith("\n"), f"seed {seed}: a torn line was left after recovery"
        assert kills >= 2, f"seed {seed}: the fault hook killed the writer {kills} times"
        assert _generate(root, teacher, None) == 0

    records = list(read_records(layout.shard_files("train", 1)))
    per_line = Counter(r.line for r in records)
    assert per_line == dict.fromkeys(range(1, PROMPTS + 1), SAMPLES), f"seed {seed}"
    assert {(r.line, r.sample) for r in records} == {
        (line, k) for line in range(1, PROMPTS + 1) for k in range(SAMPLES)
    }
    assert all(r.response == answer(r.messages[-1]["content"], r.sample) for r in records)
    summary = json.loads(layout.shard_summary("train", 0, 1).read_text())
    assert summary["records"] == PROMPTS * SAMPLES


@pytest.mark.parametrize("seed", SEEDS)
def test_a_checkpoint_killed_mid_write_leaves_the_previous_one_to_resume(tmp_path, seed):
    directory = tmp_path / "checkpoints"
    assert run_writer(CHECKPOINT, [str(directory), "1"], None) == 0
    old = torch.load(Checkpoints(directory).latest() / "state.pt", weights_only=True)
    size = (directory / "step-00000001" / "state.pt").stat().st_size
    for cut in _cut_points(seed, size):
        assert run_writer(CHECKPOINT, [str(directory), "2"], cut) == KILLED_EXIT_CODE
        latest = Checkpoints(directory).latest()
        assert latest is not None and latest.name == "step-00000001", f"seed {seed}, cut at byte {cut}"
        state = torch.load(latest / "state.pt", weights_only=True)
        assert state["step"] == 1 and torch.equal(state["weights"], old["weights"])
    assert run_writer(CHECKPOINT, [str(directory), "2"], None) == 0
    latest = Checkpoints(directory).latest()
    assert latest.name == "step-00000002"
    assert torch.load(latest / "state.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_a_summary_killed_mid_write_reads_as_the_old_one(tmp_path, seed):
    path = tmp_path / "state" / "train.summary.json"
    path.parent.mkdir()
    assert run_writer(SUMMARY, [str(path), "1"], None) == 0
    size = path.stat().st_size
    for cut in _cut_points(seed, size):
        assert run_writer(SUMMARY, [str(path), "2"], cut) == KILLED_EXIT_CODE
        summary = read_summary(path)
        assert isinstance(summary, TrainSummary) and summary.step == 1, f"seed {seed}, cut at byte {cut}"
    assert run_writer(SUMMARY, [str(path), "2"], None) == 0
    assert read_summary(path).step == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_a_report_killed_mid_write_is_the_old_report_or_the_new_one(tmp_path, seed):
    layout = Layout(tmp_path, "killed")
    old, new = report("old", 0.5), report("new", 0.7)
    assert run_writer(REPORT, [str(layout.evaluation_report), json.dumps(old)], None) == 0
    markdown = layout.evaluation_report.with_suffix(".md")
    old_markdown = markdown.read_text()
    # The PNG, the Markdown and the JSON, in the order the stage writes them.
    size = sum(layout.evaluation_report.with_suffix(s).stat().st_size for s in (".png", ".md", ".json"))
    for cut in _cut_points(seed, size):
        assert run_writer(REPORT, [str(layout.evaluation_report), json.dumps(new)], cut) == KILLED_EXIT_CODE
        assert stored_report(layout, "new") is None, f"seed {seed}, cut at byte {cut}"
        assert stored_report(layout, "old") == old
        assert markdown.read_text() in (old_markdown, _markdown_of(new, tmp_path))
    assert run_writer(REPORT, [str(layout.evaluation_report), json.dumps(new)], None) == 0
    assert stored_report(layout, "new") == new


def _markdown_of(document: dict, tmp_path: Path) -> str:
    """The Markdown the writer makes of `document`, written whole elsewhere."""
    target = tmp_path / "whole" / "evaluation.json"
    if not target.exists():
        run_writer(REPORT, [str(target), json.dumps(document)], None)
    return target.with_suffix(".md").read_text()


@pytest.mark.parametrize("seed", SEEDS)
def test_an_export_killed_mid_write_has_no_marker_or_is_whole(tmp_path, seed):
    """A directory of files is not replaced at once: README.md (the model card) is removed first and
    written last, so a reader that requires it sees the old export or the new one, never a mix."""
    root, output = tmp_path / "root", tmp_path / "output"
    layout = Layout(root, "killed")
    layout.student.mkdir(parents=True)
    (layout.student / "config.json").write_text("{}")
    layout.reports.mkdir(parents=True)
    job = json.dumps(export_job(root, output))

    def export(version: str, budget: int | None) -> int:
        document = report(version, 0.7)
        (layout.student / "model.safetensors").write_bytes(version.encode() * 20000)
        (layout.reports / "evaluation.json").write_text(json.dumps(document))
        return run_writer(EXPORT, [job, str(root), json.dumps(document)], budget)

    assert export("old", None) == 0
    old = exported(output)
    size = sum(len(data) for data in old.values())
    for cut in _cut_points(seed, size):
        assert export("new", cut) == KILLED_EXIT_CODE
        seen = exported(output)
        assert seen is None or seen == old, f"seed {seed}, cut at byte {cut}: a mixed export has its marker"
    assert export("new", None) == 0
    new = exported(output)
    assert new is not None and new["model.safetensors"] == b"new" * 20000
    assert set(new) == set(old) and not any(p.name.endswith(".tmp") for p in output.rglob("*"))
    assert os.path.getsize(output / "report" / "evaluation.json") > 0
