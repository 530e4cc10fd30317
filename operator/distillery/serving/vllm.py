"""A local vLLM server: started as a subprocess, waited for, stopped; the teacher for `distillery run`.

The command line is the contract's (`contract.commands.vllm_server_args`), the same one the
operator's teacher Deployment runs, so a model that serves here serves in the pod. Evaluation
serves the baseline and the student the same way. Whoever asks a served model for answers
sees only a `TeacherConnection` (`serving.client`): a base URL, a model name and a key.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distillery.api import DistillationJob, TeacherSpec
from distillery.contract.commands import VLLM_MODULE, vllm_server_args
from distillery.contract.summaries import FailureReason, StageFailed
from distillery.serving.client import TeacherConnection, teacher_connection
from distillery.serving.startup import HINTS, StartupCause, startup_cause
from distillery.storage import Layout, resolve_model

# vLLM shuts down its engine processes on SIGTERM; a loaded GPU server can take a while.
STOP_GRACE_SECONDS = 30.0
LOG_TAIL_CHARS = 4000
CAUSE_CHARS = 256 * 1024  # vLLM's root cause can sit a few tracebacks above its last line


@dataclass(frozen=True)
class VllmServer:
    """A running local vLLM server."""

    base_url: str
    model: str
    process: subprocess.Popen
    log_path: Path

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def connection(self) -> TeacherConnection:
        return TeacherConnection(self.base_url, self.model, server_pid=self.process.pid)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(log_tail(self.log_path).splitlines()[-lines:])


class ServerStartError(StageFailed):
    """vLLM exited or did not become ready in time: one line with the cause from its log, and the log's path.

    `named(fields)` says which spec field to change, from the cause's kind (`serving.startup`):
    e.g. {"model": "spec.teacher.model", "arguments": "spec.teacher.extraArgs"}."""

    reason = FailureReason.server_failed

    def __init__(self, what: str, cause: StartupCause, log_path: Path | None, field: str | None = None):
        self.what, self.cause, self.log_path, self.field = what, cause, log_path, field
        hint = f"; {HINTS['memory']}" if cause.kind == "memory" else ""
        log = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{field + ': ' if field else ''}{what}: {cause.message}{hint}{log}")

    def named(self, fields: Mapping[str, str]) -> ServerStartError:
        """The same error naming the spec field its cause points at (when it points at one)."""
        field = fields.get(self.cause.kind or "")
        return ServerStartError(self.what, self.cause, self.log_path, field) if field else self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - chars))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"


def _get_json(url: str, timeout: float = 5.0) -> object | None:
    """GET url; the parsed JSON body on 200, None on any failure (the caller retries until its deadline)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            return json.loads(body) if body.strip() else {}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until_ready(
    base_url: str,
    model: str,
    deadline: float,
    process: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait for GET /health to answer and /v1/models to list `model`; fail early when `process` dies."""
    root = base_url.removesuffix("/v1")
    last = "no answer on /health yet"
    while True:
        if process is not None and process.poll() is not None:
            tail = log_tail(log_path, CAUSE_CHARS) if log_path else ""
            raise ServerStartError(
                f"vLLM exited with code {process.returncode} while starting",
                startup_cause(tail, process.returncode),
                log_path,
            )
        if _get_json(f"{root}/health") is not None:
            models = _get_json(f"{base_url}/models")
            served = [m.get("id") for m in (models or {}).get("data", [])] if isinstance(models, dict) else []
            if model in served:
                return
            last = f"/v1/models lists {served}, not {model!r}"
        if time.monotonic() >= deadline:
            tail = log_tail(log_path, CAUSE_CHARS) if log_path else ""
            raise ServerStartError(
                f"vLLM at {base_url} was not ready in time ({last})", startup_cause(tail), log_path
            )
        time.sleep(0.5)  # poll interval of the readiness loop (bounded by the deadline above)


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but not ours to signal
        return True
    return True


def stop_process(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process group (vLLM runs its engine in child processes), SIGKILL after `grace` seconds.

    Returns when no process of the group is left (or 10 s after the SIGKILL): vLLM's engine can outlive
    its API server by a moment, and the next server started on these cores should not meet it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if process.poll() is not None and not group_alive(process.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not group_alive(process.pid):
                return
            time.sleep(0.1)  # poll interval while the group exits (bounded by the deadline above)


@contextlib.contextmanager
def local_vllm_server(
    model: str,
    served_model_name: str,
    *,
    port: int | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 600,
    log_path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    tensor_parallel_size: int = 1,
    host: str = "127.0.0.1",
    fields: Mapping[str, str] | None = None,
) -> Iterator[VllmServer]:
    """Start `python -m VLLM_MODULE` on `host` (a loopback address), wait until it serves `served_model_name`,
    stop it on exit. Replicas of one teacher listen on the same port at different addresses, as pods do.

    `env` is added to this process's environment (e.g. VLLM_CPU_KVCACHE_SPACE). The server's
    output goes to `log_path` (a temporary file when empty); a failed start raises
    ServerStartError with the cause read from that log, naming the spec field `fields` maps its kind to
    (`ServerStartError.named`).
    """
    port = port or free_port()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        VLLM_MODULE,
        *vllm_server_args(
            model,
            served_model_name,
            host=host,
            port=port,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            extra_args=extra_args,
        ),
    ]
    base_url = f"http://{host}:{port}/v1"
    print(f"vllm: starting {served_model_name!r} on {base_url} (log: {log_path})", file=sys.stderr)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so stop_process reaches the engine workers
        )
    try:
        try:
            wait_until_ready(base_url, served_model_name, started + startup_timeout, process, log_path)
        except ServerStartError as error:
            raise error.named(fields or {}) from None
        print(f"vllm: {served_model_name!r} ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
        yield VllmServer(base_url=base_url, model=served_model_name, process=process, log_path=log_path)
    finally:
        stop_process(process)


TEACHER_FIELDS = {"model": "spec.teacher.model", "arguments": "spec.teacher.extraArgs"}


@contextlib.contextmanager
def serve_teacher(
    spec: DistillationJob | TeacherSpec,
    storage_root: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[TeacherConnection]:
    """The teacher for the local runner: its external endpoint as is, or its model served by a local vLLM."""

    teacher = spec.spec.teacher if isinstance(spec, DistillationJob) else spec
    if teacher.endpoint is not None:
        yield teacher_connection(teacher)
        return
    if log_path is None and isinstance(spec, DistillationJob):
        log_path = Layout(Path(storage_root), spec.metadata.name or "job").work / "logs" / "teacher.log"
    with local_vllm_server(
        resolve_model(Path(storage_root), teacher.model or ""),
        teacher.served_model_name,
        port=port,
        dtype=teacher.dtype,
        max_model_len=teacher.max_model_len,
        extra_args=teacher.extra_args,
        startup_timeout=teacher.startup_timeout_seconds,
        log_path=log_path,
        env=env,
        tensor_parallel_size=teacher.tensor_parallel_size,
        fields=TEACHER_FIELDS,
    ) as server:
        yield server.connection()


# Arguments that ask vLLM for more than one worker, which its single-process mode cannot run.
PARALLEL_FLAGS = (
    "--tensor-parallel-size",
    "-tp",
    "--pipeline-parallel-size",
    "-pp",
    "--data-parallel-size",
    "-dp",
    "--distributed-executor-backend",
)


def cpu_server_env(
    extra_args: Sequence[str] = (), tensor_parallel_size: int = 1, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a local vLLM on CPU (added to `environ`, default this process's).

    - VLLM_CPU_KVCACHE_SPACE: the CPU build reserves that many GiB for its KV cache; a job this
      machine can run needs little, so 1 GiB unless the environment says otherwise.
    - VLLM_ENABLE_V1_MULTIPROCESSING=0 for a one-worker server: vLLM's CPU build then runs its
      model in the engine process instead of spawning a third process that imports torch and vLLM
      again; the tiny server is ready in about half the time on 2 cores (docs/benchmarks.md 4a).
      With it vLLM skips its OpenMP set-up, which gives the model all cores but one (the other is
      left to the API server), so OMP_NUM_THREADS says the same: unset, the model's threads spin
      on the API server's core and a request costs several times the CPU. A server asked for more
      than one worker (`PARALLEL_FLAGS`), or an environment that sets either variable, is left alone.
    """
    environ = os.environ if environ is None else environ
    env = {"VLLM_CPU_KVCACHE_SPACE": environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    parallel = tensor_parallel_size > 1 or any(arg.split("=")[0] in PARALLEL_FLAGS for arg in extra_args)
    if parallel or "VLLM_ENABLE_V1_MULTIPROCESSING" in environ:
        return env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = environ.get("OMP_NUM_THREADS") or str(max(1, cores - 1))
    return {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": threads}
