"""The environment of a local vLLM on CPU (`serving.vllm.cpu_server_env`): vLLM's single-process mode
for a one-worker server, and never for one that asks vLLM for more workers (read by vLLM's own parser)."""

from __future__ import annotations

import os

import pytest

from distillery.serving.vllm import PARALLEL_FLAGS, cpu_server_env

pytestmark = pytest.mark.unit

ONE_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"


def test_a_one_worker_server_runs_its_model_in_the_engine_process_on_all_cores_but_one():
    env = cpu_server_env(["-O0", "--dtype", "float32"], environ={})
    assert env[ONE_PROCESS] == "0"
    cores = len(os.sched_getaffinity(0))
    assert env["OMP_NUM_THREADS"] == str(max(1, cores - 1))
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_the_environment_wins_over_the_defaults():
    env = cpu_server_env(environ={"OMP_NUM_THREADS": "3", "VLLM_CPU_KVCACHE_SPACE": "4"})
    assert (env["OMP_NUM_THREADS"], env["VLLM_CPU_KVCACHE_SPACE"], env[ONE_PROCESS]) == ("3", "4", "0")
    # An explicit choice of the mode is left to vLLM as given (the caller's environment passes through).
    assert cpu_server_env(environ={ONE_PROCESS: "1"}) == {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.mark.parametrize(
    "args, tensor_parallel",
    [
        ([], 2),
        (["--tensor-parallel-size", "2"], 1),
        (["--tensor-parallel-size=2"], 1),
        (["-O0", "-pp", "2"], 1),
        (["--distributed-executor-backend", "mp"], 1),
    ],
)
def test_a_server_asked_for_more_workers_keeps_vllms_processes(args, tensor_parallel):
    env = cpu_server_env(args, tensor_parallel, environ={})
    assert ONE_PROCESS not in env and "OMP_NUM_THREADS" not in env


@pytest.mark.parametrize("flag", PARALLEL_FLAGS)
def test_every_parallel_flag_is_one_vllm_reads_as_more_workers_or_another_executor(flag):
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    default = parser.parse_args(["--model", "m"])
    value = "mp" if flag == "--distributed-executor-backend" else "2"
    parsed = parser.parse_args(["--model", "m", flag, value])
    changed = {
        name
        for name in (
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "data_parallel_size",
            "distributed_executor_backend",
        )
        if getattr(parsed, name) != getattr(default, name)
    }
    assert len(changed) == 1, (flag, changed)
