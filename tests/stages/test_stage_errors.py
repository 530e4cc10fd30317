"""The stage commands fail as a person can act on: run as a pod runs them (`python -m distillery STAGE --job ...`),
a model that cannot load, a storage that refuses writes and a vLLM server that cannot start each print one
line naming the field or the cause (and the server's log), no traceback, the documented exit code, and the
same reason in the summary the operator reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distillery.api import DistillationJob
from distillery.contract.exit_codes import ExitCode
from distillery.contract.summaries import FailureReason, parse_summary
from distillery.storage import Layout
from tests.support.failures import assert_acted_on, distillery, read_only
from tests.support.training import answer_records, toy_pairs, write_records

pytestmark = pytest.mark.stages

REPO = Path(__file__).resolve().parents[2]


def tiny_job(root: Path, student: Path, **sections: dict) -> DistillationJob:
    """examples/tiny.yaml with the models at absolute paths and a short training."""
    document = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    document["spec"]["teacher"]["model"] = str(root / "models" / "teacher")
    document["spec"]["student"]["model"] = str(student)
    document["spec"]["training"].update(epochs=1, checkpointEverySteps=1)
    document["spec"]["generation"]["shards"] = 1  # the records `write_records` leaves
    for section, values in sections.items():
        document["spec"][section].update(values)
    return DistillationJob.model_validate(document)


def run_stage(stage: str, job: DistillationJob, root: Path, tmp_path: Path):
    termination = tmp_path / f"{stage}-termination-log"
    outcome = distillery(
        stage,
        "--job",
        job.model_dump_json(by_alias=True, exclude_none=True),
        "--storage",
        str(root),
        cwd=tmp_path,
        env={"DISTILLERY_TERMINATION_LOG": str(termination)},
    )
    return outcome, parse_summary(termination.read_text() if termination.exists() else None)


@pytest.fixture
def trainable(tmp_path, tiny_models) -> tuple[Path, Path]:
    """A storage with the teacher's records for job `tiny`, and a copy of the tiny student to break."""
    root = tmp_path / "storage"
    write_records(root, "tiny", "train", answer_records(toy_pairs(16, 1), "train"))
    student = root / "models" / "student"
    shutil.copytree(tiny_models["student"], student)
    (root / "models" / "teacher").mkdir()
    return root, student


def test_a_student_that_cannot_load_names_its_field(trainable, tmp_path):
    root, student = trainable
    for weights in student.glob("*.safetensors"):
        weights.unlink()  # the tokenizer loads, the model does not
    outcome, summary = run_stage("train", tiny_job(root, student), root, tmp_path)
    line = assert_acted_on(outcome, ExitCode.STAGE_FAILED, "spec.student.model", "cannot load", log=False)
    assert str(student) in line
    assert summary is not None and summary.failure.reason is FailureReason.model_unloadable


def test_a_storage_that_refuses_writes_mid_stage_is_named_not_a_crash(trainable, tmp_path):
    root, student = trainable
    job_dir = Layout(root, "tiny").work
    with read_only(job_dir):  # the records can be read, nothing can be written beside them
        outcome, summary = run_stage("train", tiny_job(root, student), root, tmp_path)
    line = assert_acted_on(
        outcome, ExitCode.STORAGE_UNWRITABLE, "the storage refused", str(job_dir), log=False
    )
    assert "not permitted" in line or "denied" in line or "Read-only" in line
    assert summary is not None and summary.failure.reason is FailureReason.storage_unwritable


def test_evaluation_names_its_extra_args_when_its_server_refuses_them(tmp_path, tiny_models):
    from prepare_tiny import write_data  # hack/

    root = tmp_path / "storage"
    write_data(root, train=8, validation=4)
    (root / "models" / "teacher").mkdir(parents=True)
    job = tiny_job(
        root,
        tiny_models["student"],
        evaluation={"compare": ["student"], "gate": {}, "extraArgs": ["-O0", "--no-such-vllm-flag"]},
    )
    shutil.copytree(tiny_models["student"], Layout(root, "tiny").student)  # as training leaves it
    outcome, summary = run_stage("evaluate", job, root, tmp_path)
    line = assert_acted_on(outcome, ExitCode.STAGE_FAILED, "spec.evaluation.extraArgs", "--no-such-vllm-flag")
    assert line.endswith("evaluate-student.log)")
    assert summary is not None and summary.failure.reason is FailureReason.server_failed
    assert json.loads(outcome.stdout.strip().splitlines()[-1])["failure"]["reason"] == "ServerFailed"
