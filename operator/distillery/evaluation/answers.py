"""Each compared model's answers to the validation prompts: served by a local vLLM, asked live, or read back.

Every model answers the same prompts (built by `generation.prompts`, as generation built them
for the teacher) with greedy decoding, through the same client at the same concurrency, so
latency and throughput are comparable (`evaluation.measure` runs the rounds). Reading the
teacher's answers back from generation's records is kept for a teacher the evaluation cannot
serve; the report then says its figures are not comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery import atomic
from distillery.api import DistillationJob
from distillery.contract.records import Record, read_records
from distillery.contract.report import TEACHER_FROM_RECORDS
from distillery.contract.summaries import FailureReason, StageFailed
from distillery.serving.client import TeacherConnection
from distillery.storage import ANSWERS, Layout
from distillery.tokenizer import FALLBACK_CHAT_TEMPLATE, has_chat_template

PROGRESS_INTERVAL_SECONDS = 10.0
MEMORY_SAMPLE_SECONDS = 0.25
# A model answer is retried like a teacher request, but evaluation wants every model to face
# the same conditions, so few retries and a generous timeout.
REQUEST_TIMEOUT_SECONDS = 300.0
MAX_RETRIES = 2


class EvaluationFailed(StageFailed):
    """Evaluation could not score a model (no validation data, a model answering nothing)."""

    reason = FailureReason.no_data


@dataclass
class Answer:
    text: str = ""
    latency_ms: float | None = None
    output_tokens: int = 0
    error: str | None = None


@dataclass
class ModelRun:
    """What one model did on the validation prompts."""

    name: str
    answers: list[Answer]
    wall_seconds: float | None
    peak_memory_bytes: int | None = None
    source: str = "served"
    notes: list[str] = field(default_factory=list)
    # Every timed answer of every round (None: `answers` are the only ones); `answers` is the first round.
    timed: list[Answer] | None = None
    rounds: int = 1
    cpu_seconds: float | None = None  # the server's CPU time over the timed rounds (None: not ours to see)
    # lm-eval scores while the model was served: task -> {samples, metrics} (`evaluation.benchmarks`)
    benchmarks: dict[str, Any] | None = None


# ------------------------------------------------------------------ prompts and the teacher's answers


def validation_prompts(job: DistillationJob, layout: Layout) -> list[Any]:
    """The validation prompts every model answers: generation's own reader, so they match what the teacher saw."""
    from distillery.datasource import resolve
    from distillery.tasks.prompts import iter_prompts

    data, evaluation = job.spec.data, job.spec.evaluation
    if data.validation is None:
        raise EvaluationFailed("data.validation is empty: there are no held-out prompts to evaluate on")
    limits = [n for n in (data.max_validation_samples, evaluation.max_samples) if n is not None]
    location = resolve(data.validation, layout.root)
    limit = min(limits) if limits else None
    store = job.spec.storage.object_store
    prompts = list(iter_prompts(data, location, 0, 1, limit, "data.validation", store=store))
    if not prompts:
        raise EvaluationFailed(f"data.validation ({data.validation}) has no records")
    return prompts


def teacher_records(layout: Layout, shards: int) -> dict[int, Record]:
    """The teacher's first answer to each validation input line, accepted or rejected by the filters.

    Rejected answers count too: scoring only the accepted ones would hide the teacher's
    mistakes (the verify filter rejects exactly those) and inflate its score.
    """
    by_line: dict[int, Record] = {}
    for record in read_records(layout.shard_files("validation", shards, ANSWERS)):
        if record.sample == 0 and record.line is not None:
            by_line.setdefault(record.line, record)
    return by_line


def run_from_records(prompts: list[Any], records: dict[int, Record]) -> ModelRun:
    answers = []
    for prompt in prompts:
        record = records.get(prompt.line)
        if record is None:
            answers.append(Answer(error="no answer in the generation records"))
        else:
            answers.append(Answer(record.response, record.latency_ms, record.completion_tokens))
    missing = sum(a.error is not None for a in answers)
    notes = [
        "the teacher was scored from the answers it gave during generation (it is not served during "
        "evaluation); its latencies were measured under generation's load and sampling settings, and "
        "its throughput and memory are not measured"
    ]
    if missing:
        notes.append(f"{missing} validation prompts have no teacher answer in the generation records")
    return ModelRun("teacher", answers, None, None, TEACHER_FROM_RECORDS, notes)


# ------------------------------------------------------------------ asking a served model


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) a process and its live children have used so far; None without a pid.

    The server's own work per token: unlike wall time it does not grow when other processes share the cores.
    """
    import psutil

    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class MemoryWatcher:
    """Samples the resident memory of a process and its children in a thread; `peak` is the largest sum."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int | None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None:
                self.peak = max(self.peak or 0, value)
            self._stop.wait(MEMORY_SAMPLE_SECONDS)

    def __enter__(self) -> MemoryWatcher:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


async def ask_all(
    connection: TeacherConnection,
    prompts: list[Any],
    params: dict,
    concurrency: int,
    say: Callable[[str], None],
) -> tuple[list[Answer], float]:
    from distillery.serving.client import ChatClient, RequestFailed

    answers = [Answer() for _ in prompts]
    done = 0

    async def ask(index: int) -> None:
        nonlocal done
        try:
            result = await client.complete(prompts[index].messages, **params)
            choice = result.choices[0]
            answers[index] = Answer(choice.text, result.latency_s * 1000, int(result.completion_tokens))
        except RequestFailed as error:
            answers[index] = Answer(error=str(error))
        done += 1

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            say(f"{done}/{len(prompts)} answered")

    async with ChatClient(
        connection, concurrency=concurrency, timeout=REQUEST_TIMEOUT_SECONDS, max_retries=MAX_RETRIES
    ) as client:
        reporter = asyncio.create_task(progress())
        started = time.monotonic()
        try:
            await asyncio.gather(*(ask(i) for i in range(len(prompts))))
        finally:
            reporter.cancel()
        return answers, time.monotonic() - started


def ask_model(
    name: str,
    connection: TeacherConnection,
    prompts: list[Any],
    job: DistillationJob,
    pid: int | None = None,
    say: Callable[[str], None] = print,
) -> ModelRun:
    """Send every prompt to one served model (greedy, same client and concurrency for all models)."""
    params = {"temperature": 0.0, "max_tokens": max_tokens(job)}
    with MemoryWatcher(pid) as memory:
        answers, wall = asyncio.run(
            ask_all(
                connection, prompts, params, job.spec.evaluation.concurrency, lambda m: say(f"{name}: {m}")
            )
        )
    errors = [a.error for a in answers if a.error]
    if len(errors) == len(answers):
        raise EvaluationFailed(f"{name}: every request failed, e.g. {errors[0]}", FailureReason.server_failed)
    run = ModelRun(name, answers, wall, memory.peak, "live" if pid is None else "served")
    if errors:
        run.notes.append(
            f"{name}: {len(errors)} of {len(answers)} requests failed (scored as wrong), e.g. {errors[0]}"
        )
    return run


def max_tokens(job: DistillationJob) -> int:
    return job.spec.evaluation.max_tokens or job.spec.generation.max_tokens


# ------------------------------------------------------------------ serving the student and the baseline


def serving_args(job: DistillationJob, layout: Layout, model: str) -> list[str]:
    """vLLM arguments for a compared model: `evaluation.extraArgs`, plus the ChatML template
    training falls back to when the base model's tokenizer has none (so the baseline is prompted
    exactly as the student was trained)."""
    args = list(job.spec.evaluation.extra_args)
    model_dir = Path(model)
    if model_dir.is_dir() and not has_chat_template(model_dir) and "--chat-template" not in args:
        template = layout.work / "logs" / "fallback-chat-template.jinja"
        atomic.write_text(template, FALLBACK_CHAT_TEMPLATE)
        args += ["--chat-template", str(template)]
    return args


@contextlib.contextmanager
def serve_local(
    job: DistillationJob, layout: Layout, name: str, model: str
) -> Iterator[tuple[TeacherConnection, int]]:
    """A compared model served by a local vLLM; yields its connection and the server's pid."""
    from distillery.serving.vllm import cpu_server_env, local_vllm_server

    args = serving_args(job, layout, model)
    with local_vllm_server(
        model,
        name,
        extra_args=args,
        log_path=layout.work / "logs" / f"evaluate-{name}.log",
        env=cpu_server_env(args) if job.spec.evaluation.gpus == 0 else None,
        # the baseline is student.model as given; the student is what training wrote
        fields={
            "arguments": "spec.evaluation.extraArgs",
            **({"model": "spec.student.model"} if name == "baseline" else {}),
        },
    ) as server:
        yield server.connection(), server.process.pid


Server = Callable[[DistillationJob, Layout, str, str], contextlib.AbstractContextManager]
