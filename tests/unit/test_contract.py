"""The contract module: stage command lines round-trip through their parsers, summaries through their wire form,
and the import graph runs one way."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

from distillery import fingerprints
from distillery.api import DistillationJob
from distillery.contract.commands import (
    STAGE_COMMANDS,
    CheckCommand,
    EvaluateCommand,
    GenerateCommand,
    TrainCommand,
    job_argument,
    parse_job_argument,
)
from distillery.contract.summaries import (
    TERMINATION_LIMIT,
    EvaluateSummary,
    Failure,
    FailureReason,
    GenerateSummary,
    TrainSummary,
    parse_summary,
    termination_message,
)
from distillery.errors import InvalidJob

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "distillery"


def job(**spec) -> DistillationJob:
    base = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl"},
    }
    return DistillationJob.model_validate(
        {"metadata": {"name": "demo", "namespace": "ml"}, "spec": {**base, **spec}}
    )


COMMANDS = [
    GenerateCommand(
        job=job(),
        storage="/data",
        teacher_url="http://demo-teacher:8000/v1",
        teacher_model="teacher",
        metrics_port=9090,
    ),
    GenerateCommand(job=job(generation={"shards": 4}), storage="/tmp/s", shard_index=3),
    TrainCommand(job=job(), storage="/data", metrics_port=9090),
    TrainCommand(job=job(training={"gpus": 4}), storage="/data"),
    EvaluateCommand(job=job(), storage="/data", gate_exit_code=0, metrics_port=9090),
    EvaluateCommand(job=job(), storage=".", teacher_url="http://t/v1", teacher_model="big"),
    CheckCommand(job=job(), storage="/data"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c.argv()[:2]))
def test_every_command_line_parses_back_into_the_same_command(command):
    argv = command.argv()
    subcommand = argv.index(command.subcommand)
    parser = argparse.ArgumentParser()
    type(command).add_arguments(parser)
    assert type(command).from_args(parser.parse_args(argv[subcommand + 1 :])) == command
    assert STAGE_COMMANDS[command.subcommand] is type(command)


def test_the_job_argument_is_canonical_and_keeps_the_defaults():
    text = job_argument(job())
    assert text == job_argument(parse_job_argument(text))  # stable: what a pod gets is what it parses
    document = json.loads(text)
    assert document["metadata"] == {"name": "demo", "namespace": "ml"}
    assert document["spec"]["training"]["learningRate"] == 2e-5  # defaults filled in
    assert " " not in text.split('"', 1)[0]  # compact


def test_the_job_argument_carries_the_uid_the_fingerprints_use():
    with_uid = DistillationJob.model_validate(
        {
            "metadata": {"name": "demo", "namespace": "ml", "uid": "0b7c4a52-8c1e-4a11-9a5e-3f1d2b6c7a90"},
            "spec": job().spec.model_dump(by_alias=True),
        }
    )
    parsed = parse_job_argument(job_argument(with_uid))
    assert parsed.metadata.model_extra["uid"] == "0b7c4a52-8c1e-4a11-9a5e-3f1d2b6c7a90"
    assert fingerprints.uid(parsed) == fingerprints.uid(with_uid) and fingerprints.uid(job()) is None


def test_a_bad_job_argument_names_the_problem(tmp_path):
    with pytest.raises(InvalidJob, match="--job: is not valid JSON"):
        parse_job_argument("{not json")
    with pytest.raises(InvalidJob) as error:
        parse_job_argument(json.dumps({"metadata": {"name": "x"}, "spec": {"teacher": {"model": "t"}}}))
    assert {p.path for p in error.value.problems} >= {"spec.student", "spec.data"}


def test_a_generate_command_takes_its_shard_from_the_indexed_job():
    command = GenerateCommand(job=job(), storage="/data")
    assert command.shard({"JOB_COMPLETION_INDEX": "5"}) == 5
    assert command.shard({}) == 0
    assert (
        GenerateCommand(job=job(), storage="/data", shard_index=2).shard({"JOB_COMPLETION_INDEX": "5"}) == 2
    )


def test_torchrun_wraps_the_same_command_for_several_gpus():
    command = TrainCommand(job=job(training={"gpus": 8}), storage="/data")
    argv = command.argv()
    assert argv[:5] == ["torchrun", "--standalone", "--nproc_per_node=8", "--module", "distillery"]
    assert argv[5:] == [
        "train",
        "--job",
        job_argument(command.job),
        "--storage",
        "/data",
        "--metrics-port",
        "0",
    ]


SUMMARIES = [
    GenerateSummary(shard=2, shards=4, records=10, rejected={"duplicate": 1}, output_tokens=400),
    GenerateSummary(
        shard=1,
        failure=Failure.of(FailureReason.invalid_input, "data.train (x.jsonl): line 12: not valid JSON"),
    ),
    TrainSummary(method="sft", step=30, train_loss=0.5, validation_loss=0.7, tokens=1000),
    EvaluateSummary.model_validate(
        {
            "evaluation": {"metric": "accuracy", "student": {"score": 0.9}, "gatePassed": True},
            "report": "jobs/j/reports/evaluation.json",
        }
    ),
]


@pytest.mark.parametrize("summary", SUMMARIES, ids=lambda s: f"{s.stage}-{'ok' if s.succeeded else 'failed'}")
def test_summaries_survive_their_wire_form(summary):
    text = termination_message(summary)
    assert parse_summary(text) == summary
    assert (
        '"outputTokens"' in text or summary.stage != "generate" or not summary.succeeded
    )  # camelCase on the wire


def test_a_termination_message_fits_the_kubelet_limit_keeping_the_cause():
    long = GenerateSummary(
        error_samples=["x" * 1400, "y" * 1400, "z" * 1400],
        failure=Failure.of(
            FailureReason.too_few_accepted, "only 3 of 900 prompts got an accepted answer " * 40
        ),
    )
    text = termination_message(long)
    assert len(text.encode()) <= TERMINATION_LIMIT
    parsed = parse_summary(text)
    assert parsed.failure.reason is FailureReason.too_few_accepted
    assert parsed.failure.message.endswith("accepted answer")  # the end of the message is kept


@pytest.mark.parametrize(
    "text", [None, "", "Traceback (most recent call last):\n...", '{"stage": "nope"}', "{"]
)
def test_anything_else_in_a_termination_message_is_not_a_summary(text):
    assert parse_summary(text) is None


# ------------------------------------------------------------------ the import graph


def imports(path: Path) -> set[str]:
    """The distillery modules a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distillery"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("distillery"))
    return found


def package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


# What each part of the package may import (besides the shared base: api, errors, storage, tasks, tokenizer,
# __init__). Sibling stage libraries never import one another: what they share is in contract/ or the base.
ALLOWED = {
    "contract": set(),
    "serving": {"contract"},
    "generation": {"contract", "serving"},
    "training": {"contract", "serving"},  # onPolicy asks the served teacher to grade
    "evaluation": {"contract", "serving"},
    "check": {"contract"},
    "stages": {"contract", "serving", "check", "generation", "training", "evaluation", "stages"},
    "manifests": {"contract"},
    "controller": {"contract", "manifests"},
    "local": {"contract", "serving", "check", "generation", "training", "evaluation", "local"},
    "client": {"contract", "manifests", "client"},  # the plugin reads the operator's labels and child names
    "cli": {
        "client",
        "local",
        "controller",
        "stages",
        "contract",
        "crd",
        "docs",
    },  # the stage table lists the stage CLIs
}
BASE = {
    "api",
    "datasource",
    "benchmark_tasks",
    "fingerprints",
    "errors",
    "storage",
    "atomic",
    "backoff",
    "tasks",
    "tokenizer",
    "crd",
    "docs",
    "__init__",
}


def test_imports_run_one_way():
    """controller -> manifests -> contract <- stage libraries; only the entry point imports cli.py."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = package_of(path)
        for module in imports(path):
            target = module.split(".")[1] if "." in module else ""
            if not target or target in BASE or target == part or target == "__version__":
                continue
            if (target == "cli" and part != "__main__") or (part in ALLOWED and target not in ALLOWED[part]):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)
