"""When `distillery run` keeps its generation teacher for the evaluation (`local.teacher.keep_teacher`):
only when the evaluation would start the same server, as vLLM's own parser reads the two command lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillery.api import DistillationJob
from distillery.local.teacher import keep_teacher, same_settings, server_settings
from distillery.storage import Layout

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny.yaml"


def example(tmp_path: Path, template: bool = True, **changes) -> tuple[DistillationJob, Path, Layout]:
    """examples/tiny.yaml with `changes` ({"section.field": value}) on a storage whose teacher has (or lacks)
    a chat template."""
    document = yaml.safe_load(EXAMPLE.read_text())
    for path, value in changes.items():
        section, field = path.split(".")
        document["spec"][section][field] = value
    teacher = tmp_path / "models" / "teacher"
    teacher.mkdir(parents=True)
    if template:
        (teacher / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    job = DistillationJob.model_validate(document)
    return job, tmp_path, Layout.of(job, tmp_path)


def test_the_tiny_example_keeps_its_teacher(tmp_path):
    assert keep_teacher(*example(tmp_path))


@pytest.mark.parametrize(
    "changes",
    [
        {"evaluation.extraArgs": ["-O0", "--dtype", "float32", "--max-model-len", "256"]},
        {"evaluation.extraArgs": ["-O0", "--dtype", "float32", "--max-model-len", "512", "--enforce-eager"]},
        {"teacher.extraArgs": []},
        {"evaluation.gpus": 1},
        {"evaluation.gate": {}, "evaluation.compare": ["baseline", "student"]},
    ],
)
def test_other_settings_keep_nothing(tmp_path, changes):
    assert not keep_teacher(*example(tmp_path, **changes))


def test_a_teacher_the_evaluation_would_give_a_chat_template_is_not_kept(tmp_path):
    # The evaluation serves a model without a chat template with its fallback one; generation's server has none.
    assert not keep_teacher(*example(tmp_path, template=False))


def test_server_settings_read_flags_as_vllm_does():
    assert server_settings(["--dtype", "auto", "-O0", "--dtype=float32", "--max_model_len", "512"]) == {
        "--dtype": ("float32",),
        "-O0": (),
        "--max-model-len": ("512",),
    }


# (first, second, the same as far as same_settings can tell)
PAIRS = [
    (
        ["--dtype", "float32", "--max-model-len", "512", "-O0"],
        ["-O0", "--dtype", "float32", "--max-model-len", "512"],
        True,
    ),
    (["--dtype", "auto", "-O0", "--dtype", "float32"], ["--dtype", "float32", "-O0"], True),
    (["--max_model_len=512"], ["--max-model-len", "512"], True),
    (["--served-model-name", "a", "--port", "1"], ["--served-model-name", "b", "--port", "2"], True),
    (["-O0"], [], False),
    (["--max-model-len", "512"], ["--max-model-len", "256"], False),
    (["--enforce-eager"], [], False),
    (["--dtype", "float32"], ["--dtype", "bfloat16"], False),
    (["-O", "0"], ["-O0"], False),  # the same to vLLM; told apart here, which only costs a start
]


@pytest.mark.parametrize(("first", "second", "same"), PAIRS)
def test_same_settings_never_calls_two_servers_the_same_that_vllm_reads_otherwise(first, second, same):
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    place = {"host", "port", "served_model_name"}

    def read(args):
        return {k: v for k, v in vars(parser.parse_args(["--model", "m", *args])).items() if k not in place}

    assert same_settings(["--model", "m", *first], ["--model", "m", *second]) is same
    if same:
        assert read(first) == read(second)
    elif first != ["-O", "0"]:
        assert read(first) != read(second)
