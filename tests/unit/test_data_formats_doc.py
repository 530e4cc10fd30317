"""docs/data-formats.md: each task type's sample record is one the check stage accepts.

Every ```json block under a `### <taskType>` heading is written as the job's train and validation
file and checked with `distillery.check.inputs.check_job` (what `distillery check` and `distillery
run`'s preflight run), with the task type's built-in prompt (no template); the verifiable task
types must also yield a reference.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from distillery.api import TaskType
from distillery.check.inputs import check_job
from distillery.errors import parse_job
from distillery.tasks import build_messages, reference_of

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "data-formats.md"


def samples() -> dict[str, dict]:
    found = re.findall(r"^### (\w+)\n+```json\n(.*?)\n```", DOC.read_text(), re.S | re.M)
    return {task: json.loads(record) for task, record in found}


def job_for(task: str, storage: Path):
    document = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text()))
    data = document["spec"]["data"]
    for key in ("promptTemplate", "systemPrompt"):
        data.pop(key, None)  # the task type's own prompt, as a new user's job has
    data["taskType"] = task
    document["spec"]["storage"] = {"path": str(storage)}
    return parse_job(document, "data-formats")


def test_every_task_type_has_one_sample():
    assert sorted(samples()) == sorted(t.value for t in TaskType)


@pytest.mark.parametrize("task", sorted(t.value for t in TaskType))
def test_the_sample_passes_the_check_stage(task: str, tmp_path: Path):
    record = samples()[task]
    for model in ("models/teacher", "models/student"):
        (tmp_path / model).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "data" / f"{split}.jsonl").write_text(json.dumps(record) + "\n")
    job = job_for(task, tmp_path)
    checked = check_job(job, tmp_path)
    assert checked.ok, [f"{f.field}: {f.message}" for f in checked.findings]
    messages = build_messages(job.spec.data, record)
    assert messages[-1]["role"] == "user" and messages[-1]["content"].strip()
    assert reference_of(job.spec.data, record), f"{task}: the sample has no reference"


def test_a_record_missing_its_field_is_refused(tmp_path: Path):
    """The check can fail: an nli record without its hypothesis."""
    record = {k: v for k, v in samples()["nli"].items() if k != "context"}
    for model in ("models/teacher", "models/student"):
        (tmp_path / model).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "data" / f"{split}.jsonl").write_text(json.dumps(record) + "\n")
    checked = check_job(job_for("nli", tmp_path), tmp_path)
    assert not checked.ok and "context" in checked.findings[0].message
