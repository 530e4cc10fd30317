"""The teacher of `distillery run`: served for the stages that need it, its served time recorded for the
cost, and kept for the evaluation when that saves a server start.

The evaluation measures teacher, baseline and student each on a vLLM it starts with
`evaluation.extraArgs` (`evaluation.measure`). On one machine the teacher's server from generation is
the same server when it was started with the same settings: then it is kept, through training, and the
evaluation measures it as it measures the others (the same untimed warm-up round and timed rounds, its CPU time and
memory read from its pid). Only on CPU: a GPU teacher kept through training would hold the memory
training needs. On a cluster the operator still scales the teacher away after generation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob
from distillery.contract.commands import vllm_server_args
from distillery.local.cost import record_teacher
from distillery.storage import Layout, resolve_model

# Where the server listens and the name it answers to change no measured figure.
PLACE = ("--host", "--port", "--served-model-name")


def server_settings(args: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """vLLM's command line as {flag: values}: `--a=b` and `--a b` alike, `_` read as `-` in a flag
    name, and a repeated flag's last value winning, as vLLM's parser reads them."""
    settings: dict[str, tuple[str, ...]] = {}
    flag: str | None = None
    for arg in args:
        if arg.startswith("-") and not _number(arg):
            name, equals, value = arg.partition("=")
            flag = name[:2] + name[2:].replace("_", "-") if name.startswith("--") else name
            settings[flag] = (value,) if equals else ()
            flag = None if equals else flag
        elif flag is not None:
            settings[flag] = (*settings[flag], arg)
    return settings


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def same_settings(first: Sequence[str], second: Sequence[str]) -> bool:
    """Whether two vLLM command lines start the same server, but for where it listens and its name."""
    a, b = server_settings(first), server_settings(second)
    return {k: v for k, v in a.items() if k not in PLACE} == {k: v for k, v in b.items() if k not in PLACE}


def keep_teacher(job: DistillationJob, root: Path, layout: Layout) -> bool:
    """Whether the generation teacher's local server can stand for the evaluation's teacher."""
    from distillery.evaluation.answers import serving_args

    spec = job.spec
    teacher = spec.teacher
    if teacher.endpoint is not None or not teacher.model or "teacher" not in spec.evaluation.compare:
        return False
    if teacher.gpus != 0 or spec.evaluation.gpus != 0 or teacher.replicas != 1:
        return False
    model = resolve_model(root, teacher.model)
    generation = vllm_server_args(
        model,
        teacher.served_model_name,
        host="127.0.0.1",
        port=0,
        dtype=teacher.dtype,
        tensor_parallel_size=teacher.tensor_parallel_size,
        max_model_len=teacher.max_model_len,
        extra_args=teacher.extra_args,
    )
    # What `evaluation.answers.serve_local` would start for the teacher (its vLLM defaults, then extraArgs).
    evaluation = vllm_server_args(
        model, "teacher", host="127.0.0.1", port=0, extra_args=serving_args(job, layout, model)
    )
    return same_settings(generation, evaluation)


@contextlib.contextmanager
def teacher(
    job: DistillationJob, root: Path, layout: Layout, progress: Callable[[str], None], key: str = ""
) -> Iterator[tuple[Any, Callable[[], None]]]:
    """The teacher's connection: its endpoint, or its model served by a local vLLM until the block ends.

    Its served time (ready to stopped, or to the call of the `record` it yields with the connection) is
    recorded for the cost, under `key` (generation's fingerprint)."""
    from distillery.check.inputs import model_ref
    from distillery.serving.vllm import cpu_server_env, serve_teacher

    spec = job.spec
    if spec.teacher.endpoint is not None:
        progress(f"teacher: the endpoint {spec.teacher.endpoint.url} ({spec.teacher.endpoint.model})")
    else:
        what = model_ref(root, spec.teacher.model or "")
        kind = (
            f"{what.describe()}: {resolve_model(root, what.value)}"
            if what.kind == "path"
            else what.describe()
        )
        progress(
            f"teacher: serving {spec.teacher.model} ({kind}) with vLLM (log: {layout.work / 'logs' / 'teacher.log'})"
        )
    env = (
        cpu_server_env(spec.teacher.extra_args, spec.teacher.tensor_parallel_size)
        if spec.teacher.gpus == 0
        else None
    )
    gpus = spec.teacher.gpus if spec.teacher.endpoint is None else 0  # an endpoint is not ours to count
    with serve_teacher(job, root, env=env) as connection:
        ready = time.monotonic()
        recorded = []

        def record() -> None:
            if not recorded:
                recorded.append(True)
                record_teacher(layout, key, gpus, time.monotonic() - ready)

        try:
            yield connection, record
        finally:
            record()
    if spec.teacher.endpoint is None:
        progress("teacher stopped")
