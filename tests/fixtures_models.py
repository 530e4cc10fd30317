"""Session-scoped fixtures: tiny models and one shared vLLM CPU server.

Register from tests/conftest.py with ``pytest_plugins = ["tests.fixtures_models"]``.

* ``tiny_models``  -> dict name -> Path ("teacher", "student", "other-tokenizer-student"), made once per
                      session by hack/make_tiny_models.py (the teacher is pretrained on the tiny task so its
                      answers are meaningful; ~25 s on 2 cores, set DISTILLERY_TINY_PRETRAIN_STEPS=0 for
                      random weights in ~5 s).
* ``vllm_teacher`` -> VllmServer(base_url=".../v1", model="teacher", process, log_path), ONE server per session.

The launcher here (``vllm_command`` / ``start_vllm`` / ``stop_vllm``) is deliberately small and
self-contained; ``distillery.serving.vllm`` is meant to replace it once that module exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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


# ---------------------------------------------------------------- vLLM launcher (minimal)


@dataclass
class VllmServer:
    base_url: str  # "http://127.0.0.1:PORT/v1"
    model: str  # the served model name
    process: subprocess.Popen
    log_path: Path

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_command(model_dir: Path, served_name: str, port: int, max_model_len: int = 512) -> list[str]:
    # -O0: no torch.compile; startup ~30 s instead of ~70 s on 2 cores, same answers.
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", "float32",
        "-O0",
    ]  # fmt: skip


def vllm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; must be an integer
    env.setdefault("OMP_NUM_THREADS", "2")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _healthy(root_url: str) -> bool:
    try:
        with urllib.request.urlopen(root_url + "/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_vllm(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the server's process group (API server + engine + worker), SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def start_vllm(
    model_dir: Path, served_name: str, log_path: Path, deadline_s: float = STARTUP_DEADLINE_S
) -> VllmServer:
    """Start a vLLM OpenAI server and wait on /health until ``deadline_s``; raise with the log tail."""
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    proc = subprocess.Popen(
        vllm_command(model_dir, served_name, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=vllm_env(),
        start_new_session=True,  # its own process group, so stop_vllm reaches the engine workers
    )
    log.close()
    server = VllmServer(f"http://127.0.0.1:{port}/v1", served_name, proc, Path(log_path))
    deadline = time.monotonic() + deadline_s
    while not _healthy(server.root_url):
        if proc.poll() is not None:
            raise RuntimeError(
                f"vLLM exited with {proc.returncode} before it was healthy:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            stop_vllm(proc)
            raise TimeoutError(f"vLLM not healthy after {deadline_s:.0f}s:\n{server.log_tail()}")
        time.sleep(0.5)
    return server


@pytest.fixture(scope="session")
def vllm_teacher(tiny_models, tmp_path_factory):
    # The project's own launcher (the one the local runner and evaluation use), same flags as vllm_command.
    from distillery.serving.vllm import local_vllm_server

    log_path = tmp_path_factory.mktemp("vllm") / "teacher.log"
    t0 = time.monotonic()
    with local_vllm_server(
        str(tiny_models["teacher"]),
        "teacher",
        dtype="float32",
        max_model_len=512,
        extra_args=["-O0"],
        startup_timeout=STARTUP_DEADLINE_S,
        log_path=log_path,
        env=vllm_env(),
    ) as server:
        print(f"\nvLLM teacher healthy after {time.monotonic() - t0:.1f}s at {server.base_url}", file=sys.stderr)
        yield server
