"""lm-eval task definitions: where they come from and whether they load (the check and evaluation stages share it).

`evaluation.benchmarks` names lm-eval tasks: built into lm-eval, or defined by the YAMLs under
`evaluation.benchmarkTasks`, a directory of task YAMLs and their data files on the job's storage or
under an `s3://` prefix (copied to local disk first), passed to lm-eval as its include path. lm-eval
loads tasks from inside that directory, so a YAML names its data files by relative paths
(`data_files: {test: sums.jsonl}`) and the directory can move. `load_problems` loads every listed
task as the evaluation will (its data read and parsed): the check stage runs it before any GPU is held.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.api import BenchmarkSpec, DistillationJob, is_uri
from distillery.contract.summaries import FailureReason, StageFailed


class BenchmarkFailed(StageFailed):
    """A benchmark could not be loaded or run; the message names the task and what is missing."""

    reason = FailureReason.input_not_found


@dataclass(frozen=True)
class TaskProblem:
    """One task that cannot load: its name and what is missing."""

    task: str
    message: str


# ------------------------------------------------------------------ where task definitions come from


def task_directory(job: DistillationJob, root: Path, local: Path) -> Path | None:
    """The local directory of `evaluation.benchmarkTasks`: a path on the storage as is, an `s3://`
    prefix copied under `local` (every file, so YAMLs and data files travel together); None when unset."""
    from distillery.datasource import filesystem, resolve

    value = job.spec.evaluation.benchmark_tasks
    if value is None:
        return None
    location = resolve(value, root)
    if not is_uri(location):
        path = Path(location)
        if not path.is_dir():
            raise BenchmarkFailed(
                f"evaluation.benchmarkTasks: {value} is not a directory under the storage {root}"
            )
        return path.resolve()  # absolute: lm-eval runs inside it
    fs, remote = filesystem(location, job.spec.storage.object_store)
    if not fs.exists(remote):
        raise BenchmarkFailed(f"evaluation.benchmarkTasks: nothing under {value}")
    local.mkdir(parents=True, exist_ok=True)
    fs.get(remote.rstrip("/") + "/", str(local) + "/", recursive=True)
    return local.resolve()


def task_manager(directory: Path | None) -> Any:
    """lm-eval's task registry: its built-in tasks plus the YAMLs under `directory`."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(directory) if directory else None)


@contextlib.contextmanager
def inside(directory: Path | None) -> Iterator[None]:
    """Run with `directory` as the working directory: the harness resolves a YAML's relative data
    paths against it (the stage is its own process and loads tasks one model at a time)."""
    if directory is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def load_problems(benchmarks: list[BenchmarkSpec], directory: Path | None) -> list[TaskProblem]:
    """Load every listed task as the stage will (its data read and parsed); what cannot load, and why."""
    if not benchmarks:
        return []
    manager = task_manager(directory)
    known = set(manager.all_tasks)
    problems = []
    for benchmark in benchmarks:
        if benchmark.task not in known:
            where = f" and no YAML under {directory} defines it" if directory else ""
            problems.append(
                TaskProblem(
                    benchmark.task,
                    f"unknown lm-eval task{where} (or its YAML does not parse); "
                    "set evaluation.benchmarkTasks to a directory of task YAMLs",
                )
            )
            continue
        try:
            with inside(directory):
                manager.load([benchmark.task])
        except Exception as error:  # any failure to load is reported, naming the task
            problems.append(TaskProblem(benchmark.task, _load_error(error)))
    return problems


def _load_error(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError):
        return f"its data file is missing: {text}"
    if isinstance(error, ConnectionError) or "offline" in text.lower() or "hub" in text.lower():
        return (
            f"its data comes from the Hugging Face hub, which cannot be reached ({text}); put the task's "
            "YAML and data files under evaluation.benchmarkTasks"
        )
    return f"cannot load: {type(error).__name__}: {text}"
