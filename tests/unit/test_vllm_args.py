"""The teacher pod's vLLM arguments read by vLLM's own server parser.

The teacher Deployment runs `python3 -m VLLM_MODULE` with the arguments the manifests build. Here
those arguments (from the golden files and from the builder) are parsed by the parser that entry
point runs (vllm.entrypoints.launchers.api_server.entry.main: FlexibleArgumentParser +
cli_args.make_arg_parser, with validate_parsed_serve_args), so a flag vLLM does not know, or a
value it reads differently, fails here; the values vLLM reads are compared with the spec.
"""

from __future__ import annotations

import pytest
import yaml

from tests.support.manifest_cases import CASES, CONFIG, GOLDEN

pytestmark = pytest.mark.unit

SERVED = [case for case, make in CASES.items() if make().spec.teacher.endpoint is None]


@pytest.fixture(scope="module")
def vllm_reads():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())

    def read(args: list[str]):
        parsed = parser.parse_args(args)
        validate_parsed_serve_args(parsed)
        return parsed

    return read


def _container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("case", SERVED)
def test_vllm_reads_the_golden_teacher_args_as_the_spec_says(case, vllm_reads):
    from distillery.contract.commands import TEACHER_PORT, VLLM_MODULE

    job = CASES[case]()
    teacher = job.spec.teacher
    container = _container(yaml.safe_load((GOLDEN / case / "teacher.yaml").read_text()))
    assert container["command"] == ["python3", "-m", VLLM_MODULE]
    parsed = vllm_reads(container["args"])
    assert parsed.tensor_parallel_size == teacher.tensor_parallel_size
    assert parsed.max_model_len == teacher.max_model_len
    assert parsed.served_model_name == [teacher.served_model_name]
    assert parsed.dtype == teacher.dtype
    assert (parsed.host, parsed.port) == ("0.0.0.0", TEACHER_PORT)
    assert parsed.port == container["ports"][0]["containerPort"]
    if teacher.gpus == 0:
        # The CPU build sizes its KV cache from this (manifests.teacher.CPU_KV_CACHE_BYTES).
        assert parsed.kv_cache_memory_bytes == 2**30


def test_vllm_reads_the_builders_teacher_args(vllm_reads):
    from distillery.manifests import build

    for case in SERVED:
        job = CASES[case]()
        parsed = vllm_reads(_container(build("teacher", job, CONFIG))["args"])
        assert parsed.tensor_parallel_size == job.spec.teacher.tensor_parallel_size, case


def test_vllm_refuses_a_flag_it_does_not_know(vllm_reads):
    """The reader is strict: so the tests above can fail."""
    with pytest.raises(SystemExit):
        vllm_reads(["--model", "m", "--tensor-parallel-sise", "2"])
