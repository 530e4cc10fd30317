"""The pure parts of errors a person can act on: model references, vLLM's startup causes, the traceback
filter of `distillery run`, the exit codes and their table in docs/errors.md, and `--debug`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml

from distillery import cli
from distillery.api import DistillationJob
from distillery.api.models_ref import classify, syntax_problems
from distillery.check.inputs import model_findings, model_ref
from distillery.contract.exit_codes import (
    BY_REASON,
    DEBUG_ENV,
    ExitCode,
    debug_enabled,
    for_failure,
    storage_refusal,
)
from distillery.contract.summaries import FailureReason
from distillery.local.process import TracebackFilter, failure_text
from distillery.serving.startup import startup_cause
from tests.support.failures import read_only

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ model references


@pytest.mark.parametrize(
    "value, kind",
    [
        ("./x", "path"),
        ("../models/x", "path"),
        ("/x/y", "path"),
        ("x/y/z", "path"),
        ("~/x", "path"),
        ("models/", "path"),
        ("org//name", "path"),
        ("org/name", "hub"),
        ("name", "hub"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"),
        ("meta-llama/Llama-3.1-405B-Instruct-FP8", "hub"),
        ("my model", None),
        ("org/na me", None),
        ("s3://bucket/model", None),
        ("org/-name", None),
        ("org/name.", None),
        ("a--b", None),
        ("a..b", None),
        ("org/name.git", None),
        ("x" * 97, None),
        ("org/café", None),
    ],
)
def test_a_model_reference_is_a_path_a_hub_id_or_refused(value, kind):
    ref = classify(value)
    assert ref.kind == kind, ref
    assert (ref.problem is None) == (kind is not None)
    if ref.problem:
        assert repr(value) in ref.problem and "expected a path" in ref.problem


def test_a_hub_shaped_value_whose_first_directory_exists_is_a_path(tmp_path):
    assert model_ref(tmp_path, "models/teacher").kind == "hub"
    (tmp_path / "models").mkdir()
    assert model_ref(tmp_path, "models/teacher").kind == "path"
    assert model_ref(tmp_path, "models/teacher").describe() == "a local path"
    assert model_ref(tmp_path, "org/name").describe() == "a Hugging Face hub id"


def tiny_job(**changes) -> DistillationJob:
    document = yaml.safe_load((REPO / "examples" / "tiny.yaml").read_text())
    for section, values in changes.items():
        document["spec"][section].update(values)
    return DistillationJob.model_validate(document)


def test_every_model_field_of_the_spec_is_checked_and_named(tmp_path):
    (tmp_path / "models" / "student").mkdir(parents=True)
    job = tiny_job(teacher={"model": "bad teacher"}, student={"tokenizer": "x/y/z"})
    assert [(p.path, "bad teacher" in p.message) for p in syntax_problems(job.spec)] == [
        ("spec.teacher.model", True)
    ]
    findings = {f.field: f for f in model_findings(job, tmp_path)}
    assert set(findings) == {"spec.teacher.model", "spec.student.tokenizer"}
    assert findings["spec.teacher.model"].reason is FailureReason.invalid_spec
    assert "x/y/z is not a model directory" in findings["spec.student.tokenizer"].message
    assert findings["spec.student.tokenizer"].reason is FailureReason.input_not_found


# ------------------------------------------------------------------ vLLM's startup causes

# The last lines of logs vLLM 0.32 wrote here (a bad flag; an unknown model with the hub offline).
USAGE_LOG = """                     [--enable-log-requests | --no-enable-log-requests]
                     [model_tag]
api_server.py: error: unrecognized arguments: --bogus-flag
"""
HUB_LOG = """(APIServer pid=27969) INFO 12-07 17:23:50 [api_utils.py:286] non-default args: {'model': 'nobody/x'}
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
    raise LocalEntryNotFoundError(
huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for the
"""
CONFIG_LOG = """  File "/x/pydantic/_internal/_dataclasses.py", line 121, in __init__
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
  Value error, Unrecognized model in /m. Should have a `model_type` key in its config.json. [type=value_error, input_value=x]
    For further information visit https://errors.pydantic.dev/2.14/v/value_error
"""
OOM_LOG = """(EngineCore pid=12) ERROR 12-07 [core.py:700] EngineCore failed to start.
Traceback (most recent call last):
  File "x.py", line 1, in <module>
(EngineCore pid=12) torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB
"""


# vLLM's CPU build asked for a 100000 GiB KV cache (VLLM_CPU_KVCACHE_SPACE): the root cause is above its last words.
CPU_OOM_LOG = """(EngineCore pid=30700) ERROR 12-07 17:55:23 [core.py:1510]     raise RuntimeError(
(EngineCore pid=30700) ERROR 12-07 17:55:23 [core.py:1510] RuntimeError: Worker failed with error 'Available memory on node 0 (18.97/23.54 GiB) on kv cache allocation is less than requested memory for kv (100000.0 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.', please check the stack trace above for the root cause
(EngineCore pid=30700) INFO 12-07 17:55:45 [multiproc_executor.py:486] [shutdown] Executor: all workers exited gracefully
Process EngineCore:
Traceback (most recent call last):
  File "/x/vllm/v1/engine/core_client.py", line 1, in x
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}
/x/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker: There appear to be 1 leaked shared_memory objects to clean up at shutdown
"""


@pytest.mark.parametrize(
    "log, kind, words",
    [
        (USAGE_LOG, "arguments", "unrecognized arguments: --bogus-flag"),
        (HUB_LOG, "model", "LocalEntryNotFoundError: Cannot find an appropriate cached snapshot"),
        (OOM_LOG, "memory", "OutOfMemoryError: CUDA out of memory"),
        (CPU_OOM_LOG, "memory", "RuntimeError: Worker failed with error 'Available memory on node 0"),
        (
            CONFIG_LOG,
            "model",
            "ModelConfig: Value error, Unrecognized model in /m. Should have a `model_type`",
        ),
        ("", None, "its log is empty"),
    ],
)
def test_the_cause_of_a_failed_start_is_the_last_telling_error_line_of_its_log(log, kind, words):
    cause = startup_cause(log)
    assert cause.kind == kind and words in cause.message and "\n" not in cause.message


def test_a_server_killed_without_a_word_is_reported_as_likely_out_of_memory():
    assert startup_cause("INFO loading weights\n", returncode=-9).kind == "memory"


# ------------------------------------------------------------------ the terminal is spared tracebacks


def real_traceback() -> list[str]:
    """A chained traceback as Python prints it, between two progress lines."""
    try:
        try:
            {}["missing"]
        except KeyError as error:
            raise ValueError("from the KeyError") from error
    except ValueError as error:
        printed = "".join(traceback.format_exception(error))
    return ["train: step 1\n", *printed.splitlines(keepends=True), "distillery train: crashed: ValueError\n"]


def test_the_relay_drops_tracebacks_and_keeps_progress_and_the_failure_line():
    keep = TracebackFilter().keep
    shown = [line for line in real_traceback() if keep(line)]
    assert shown[0] == "train: step 1\n" and shown[-1] == "distillery train: crashed: ValueError\n"
    assert not any("Traceback" in line or "File " in line or "KeyError" in line for line in shown), shown


# ------------------------------------------------------------------ exit codes, their table, --debug


def test_exit_codes_are_distinct_and_stage_reasons_map_onto_them():
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    assert (ExitCode.OK, ExitCode.INTERRUPTED) == (0, 130)
    assert set(BY_REASON) <= {reason.value for reason in FailureReason}
    assert for_failure(FailureReason.storage_unwritable) is ExitCode.STORAGE_UNWRITABLE
    assert for_failure(FailureReason.server_failed) is ExitCode.STAGE_FAILED
    assert for_failure(None) is ExitCode.STAGE_FAILED


def test_docs_errors_md_lists_every_exit_code_with_its_number():
    rows = re.findall(r"^\| `?(\d+)`? \| `(\w+)` \|", (REPO / "docs" / "errors.md").read_text(), re.M)
    assert {name: int(number) for number, name in rows} == {code.name: int(code) for code in ExitCode}


def test_debug_shows_the_traceback_that_is_otherwise_left_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "0")  # restored after the test: main sets it for its subprocesses
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "apiVersion: distillery.dev/v1alpha1\nkind: DistillationJob\nmetadata: {name: x}\nspec: {}\n"
    )
    assert cli.main(["run", str(spec)]) == ExitCode.INVALID_SPEC
    plain = capsys.readouterr().err
    assert "spec.teacher: is required" in plain and "Traceback" not in plain
    assert cli.main(["run", str(spec), "--debug"]) == ExitCode.INVALID_SPEC
    debug = capsys.readouterr().err
    assert "spec.teacher: is required" in debug and "Traceback" in debug
    assert debug_enabled()


def test_an_os_error_is_the_storages_refusal_only_when_the_storage_caused_it(tmp_path):
    with read_only(tmp_path), pytest.raises(OSError) as refused:
        (tmp_path / "new.jsonl").write_text("{}")
    line = storage_refusal(refused.value)
    assert line is not None and f"the storage refused {tmp_path / 'new.jsonl'}: " in line
    with pytest.raises(OSError) as missing:
        (tmp_path / "absent.jsonl").read_text()
    assert storage_refusal(missing.value) is None  # not found is an input problem, not the storage's


def test_a_stage_killed_without_a_summary_is_said_so():
    killed = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert "out-of-memory killer" in failure_text("train", killed.returncode, None)
    stopped = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]
    )
    assert failure_text("train", stopped.returncode, None).startswith(f"killed by {signal.SIGTERM.name}")
