"""Session-scoped fixtures: tiny models and one shared vLLM CPU server.

Register from tests/conftest.py with ``pytest_plugins = ["tests.fixtures_models"]``.

* ``tiny_models``  -> dict name -> Path ("teacher", "student", "other-tokenizer-student"), made once per
                      session by hack/make_tiny_models.py (the teacher is pretrained on the tiny task so its
                      answers are meaningful; ~75 s on one core, set DISTILLERY_TINY_PRETRAIN_STEPS=0 for
                      random weights in ~5 s).
* ``vllm_teacher`` -> VllmServer(base_url=".../v1", model="teacher", process, log_path), ONE server per session,
                      started by the project's own launcher (``distillery.serving.vllm.local_vllm_server``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STARTUP_DEADLINE_S = float(os.environ.get("DISTILLERY_VLLM_STARTUP_DEADLINE", "300"))
PRETRAIN_STEPS = int(os.environ.get("DISTILLERY_TINY_PRETRAIN_STEPS", "600"))


def _load_make_tiny_models():
    spec = importlib.util.spec_from_file_location("make_tiny_models", REPO / "hack" / "make_tiny_models.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tiny-models")
    return _load_make_tiny_models()(out, seed=0, pretrain_steps=PRETRAIN_STEPS)


# ---------------------------------------------------------------- vLLM


def vllm_env() -> dict[str, str]:
    """The environment `distillery run` gives a CPU server (`cpu_server_env`: a 1 GiB KV cache, vLLM's
    single-process mode), offline and without usage reports."""
    from distillery.serving.vllm import cpu_server_env

    env = cpu_server_env(vllm_options_args())
    env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def vllm_options_args() -> list[str]:
    """-O0: no torch.compile; startup ~30 s instead of ~70 s on 2 cores, same answers."""
    return ["-O0"]


def vllm_options() -> dict:
    """Settings of every test vLLM server, for `distillery.serving.vllm.local_vllm_server`."""
    return {
        "dtype": "float32",
        "max_model_len": 512,
        "extra_args": vllm_options_args(),
        "startup_timeout": STARTUP_DEADLINE_S,
        "env": vllm_env(),
    }


@pytest.fixture(scope="session")
def vllm_teacher(tiny_models, tmp_path_factory):
    # The project's own launcher (the one the local runner and evaluation use), same flags as vllm_command.
    from distillery.serving.vllm import local_vllm_server

    log_path = tmp_path_factory.mktemp("vllm") / "teacher.log"
    t0 = time.monotonic()
    with local_vllm_server(
        str(tiny_models["teacher"]), "teacher", log_path=log_path, **vllm_options()
    ) as server:
        print(
            f"\nvLLM teacher healthy after {time.monotonic() - t0:.1f}s at {server.base_url}", file=sys.stderr
        )
        yield server
