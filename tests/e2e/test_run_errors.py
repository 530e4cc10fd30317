"""`distillery run` fails as a person can act on: each expected failure through the real CLI in a subprocess
prints one line naming the field or the cause (and the log, where there is one), no traceback, and exits
with its documented code (docs/errors.md).

Most cases stop before any server starts, in a second or two. Three start the real vLLM teacher and see it
fail (a bad `extraArgs`, a hub id that is not there) or interrupt it; vLLM gives up in ~10 s on both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.contract.exit_codes import ExitCode
from tests.support.failures import CLI_ENV, Outcome, assert_acted_on, distillery, read_only
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def storage(tmp_path) -> Path:
    """The tiny example's layout: model directories (empty: nothing here gets as far as loading one) and data."""
    from prepare_tiny import write_data  # hack/

    root = tmp_path / "storage"
    for name in ("teacher", "student"):
        (root / "models" / name).mkdir(parents=True)
    write_data(root, train=16, validation=8)
    return root


def spec_file(storage: Path, **sections: dict) -> Path:
    """examples/tiny.yaml on `storage`, with `sections` merged into its spec."""
    document = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    document["spec"]["storage"]["path"] = storage.name
    for section, values in sections.items():
        document["spec"].setdefault(section, {}).update(values)
    path = storage.parent / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(spec: Path, *options: str) -> Outcome:
    return distillery("run", str(spec), *options, cwd=spec.parent)


def test_a_misspelt_field_is_named(storage):
    outcome = run(spec_file(storage, teacher={"modle": "x"}))
    assert_acted_on(outcome, ExitCode.INVALID_SPEC, "spec.teacher.modle", "is not a known field", log=False)


def test_a_model_that_is_neither_a_path_nor_a_hub_id_is_refused_before_any_server_starts(storage):
    outcome = run(spec_file(storage, teacher={"model": "my teacher"}))
    assert_acted_on(
        outcome,
        ExitCode.INVALID_SPEC,
        "spec.teacher.model",
        "neither a path nor a Hugging Face id",
        log=False,
    )
    assert "vllm: starting" not in outcome.stderr


def test_a_model_path_whose_directory_is_missing_is_not_taken_for_a_hub_id(storage):
    outcome = run(spec_file(storage, student={"model": "./models/nope"}))
    line = assert_acted_on(outcome, ExitCode.INVALID_SPEC, "spec.student.model", "./models/nope", log=False)
    assert "is not a model directory" in line and "not a Hugging Face id" in line


def test_a_dataset_that_is_not_jsonl_is_named_with_its_line(storage):
    """Not in the issue's list: an input that does not parse."""
    (storage / "data" / "train.jsonl").write_text('{"prompt": "fine"}\nthis is not JSON\n')
    outcome = run(spec_file(storage))
    line = assert_acted_on(outcome, ExitCode.INVALID_SPEC, "spec.data.train", "line 2", log=False)
    assert "not valid JSON" in line


def test_a_storage_that_cannot_be_written_stops_the_run_before_it_starts(storage):
    spec = spec_file(storage)
    with read_only(storage):
        outcome = run(spec)
    line = assert_acted_on(outcome, ExitCode.STORAGE_UNWRITABLE, "spec.storage.path", str(storage), log=False)
    assert "cannot write" in line
    assert not (storage / "jobs").exists()


def test_a_stage_that_fails_is_one_line_with_its_stage_log(storage):
    """Not in the issue's list: a teacher endpoint nothing answers (the shards fail, not the runner)."""
    from distillery.serving.vllm import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    endpoint = {"endpoint": {"url": url, "model": "teacher"}}
    spec = spec_file(storage, generation={"maxRetries": 0})
    document = yaml.safe_load(spec.read_text())
    document["spec"]["teacher"] = {**endpoint, "gpus": 0}
    spec.write_text(yaml.safe_dump(document))
    outcome = run(spec)
    line = assert_acted_on(outcome, ExitCode.STAGE_FAILED, "generate failed", "TeacherUnreachable", url)
    assert "shards 0, 1:" in line and line.endswith("generate-shard-0.log)")
    assert outcome.stderr.count("distillery run:") == 3  # the job, the failure, what to do next


def test_a_vllm_argument_it_refuses_names_extra_args_and_the_teachers_log(storage):
    outcome = run(spec_file(storage, teacher={"extraArgs": ["-O0", "--no-such-vllm-flag"]}))
    line = assert_acted_on(outcome, ExitCode.STAGE_FAILED, "spec.teacher.extraArgs", "--no-such-vllm-flag")
    assert "vLLM refused its arguments" in line and line.endswith("logs/teacher.log)")
    assert "(a local path: " in outcome.stderr  # the "serving X" line says which X is


def test_a_hub_id_the_server_cannot_find_names_the_model_field(storage):
    outcome = run(spec_file(storage, teacher={"model": "nobody-here/no-such-model"}))
    assert "serving nobody-here/no-such-model (a Hugging Face hub id)" in outcome.stderr
    line = assert_acted_on(outcome, ExitCode.STAGE_FAILED, "spec.teacher.model", "vLLM exited")
    assert "LocalEntryNotFoundError" in line  # the hub is offline here: vLLM's own words, on one line


def test_ctrl_c_while_the_teacher_starts_exits_130_and_says_how_to_resume(storage, tmp_path):
    spec = spec_file(storage)
    log = tmp_path / "run.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "distillery", "run", str(spec)],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            cwd=spec.parent,
            env={**os.environ, **CLI_ENV},
        )
    try:
        wait_for(lambda: "vllm: starting" in log.read_text(), "the teacher starting", 120, process=process)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    outcome = Outcome(code, "", log.read_text())
    logs = storage / "jobs" / "tiny" / "logs"
    line = assert_acted_on(
        outcome, ExitCode.INTERRUPTED, "interrupted", "run the same command again", log=False
    )
    assert line.endswith(f"(logs: {logs})") and (logs / "teacher.log").is_file()
