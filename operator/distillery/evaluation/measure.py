"""How every compared model is measured: one path for the teacher, the baseline and the student.

Each model is served by the evaluation with the same vLLM settings (`evaluation.extraArgs`,
`evaluation.gpus`), warmed up with one untimed round, then asked every validation prompt through the
same client at `evaluation.concurrency`, greedy, `timed_rounds` times in a row. One server runs at
a time: started together, their starts fight for the same cores (three tiny servers on 2 cores took
as long as three in turn) and on a GPU each takes most of its memory. Latency and throughput of
every model come from `serving_figures` of its run; the scores from its first round (greedy
decoding gives the same answers each round).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob
from distillery.contract.summaries import FailureReason
from distillery.evaluation import scoring
from distillery.evaluation.answers import (
    Answer,
    EvaluationFailed,
    MemoryWatcher,
    ModelRun,
    Server,
    ask_all,
    cpu_seconds,
    max_tokens,
)
from distillery.serving.client import TeacherConnection
from distillery.storage import Layout

# At least three rounds: enough that one burst of load on a shared machine does not decide the comparison.
MEASURE_ROUNDS = 3
# A small validation set answers a round in a fraction of a second, where scheduling noise on a shared
# CPU moved one model's tokens/s by a third between runs: rounds are added until this many requests are
# timed (the tiny example's 40 prompts: 10 rounds, about a second per model), at most MAX_ROUNDS.
MIN_TIMED_REQUESTS = 400
MAX_ROUNDS = 10


def timed_rounds(prompts: int) -> int:
    """How many timed rounds every model answers, the same for each: MEASURE_ROUNDS, or more for a
    small validation set (pure)."""
    needed = -(-MIN_TIMED_REQUESTS // max(prompts, 1))
    return max(MEASURE_ROUNDS, min(MAX_ROUNDS, needed))


def serving_figures(run: ModelRun) -> dict[str, float | None]:
    """Latency percentiles and throughput of one model, from every timed answer of its run: the one
    function the report takes every model's serving figures from."""
    timed = run.timed if run.timed is not None else run.answers
    latencies = [a.latency_ms for a in timed if a.latency_ms is not None]
    tokens = sum(a.output_tokens for a in timed)
    figures = scoring.serving_metrics(latencies, tokens, run.wall_seconds)
    # The server's CPU time per output token: what a model costs to serve, whatever else shares the cores.
    figures["cpuMsPerOutputToken"] = run.cpu_seconds * 1000 / tokens if run.cpu_seconds and tokens else None
    return figures


def measurement(job: DistillationJob, runs: dict[str, ModelRun], prompts: int) -> dict[str, Any]:
    """What the report says about how the models were measured (pure); `comparable` is False when one
    model's figures come from elsewhere (a teacher scored from generation records, or an endpoint)."""
    sources = {name: run.source for name, run in runs.items()}
    comparable = len({run.rounds for run in runs.values()}) <= 1 and all(
        s == "served" for s in sources.values()
    )
    rounds = max((run.rounds for run in runs.values()), default=0)
    evaluation = job.spec.evaluation
    how = f"served one at a time by vLLM with the same settings ({' '.join(evaluation.extra_args) or 'defaults'})"
    text = (
        f"every model answered the same {prompts} prompts {rounds} time(s) after one untimed warm-up round, "
        f"{evaluation.concurrency} requests in flight, greedy, at most {max_tokens(job)} tokens; {how}"
    )
    if not comparable:
        other = ", ".join(f"{name} ({source})" for name, source in sources.items() if source != "served")
        text += f"; NOT comparable: {other} measured another way"
    return {
        "rounds": rounds,
        "concurrency": evaluation.concurrency,
        "maxTokens": max_tokens(job),
        "serverArgs": list(evaluation.extra_args),
        "sources": sources,
        "comparable": comparable,
        "text": text,
    }


# ------------------------------------------------------------------ serving and asking


def _ask_round(
    name: str, connection: TeacherConnection, pid: int | None, prompts: list[Any], job: DistillationJob, say
) -> tuple[list[Answer], float, int | None, float | None]:
    """One round: the answers, its wall seconds, the server's peak memory and the CPU seconds it used."""
    params = {"temperature": 0.0, "max_tokens": max_tokens(job)}
    cpu_before = cpu_seconds(pid)
    with MemoryWatcher(pid) as memory:
        answers, wall = asyncio.run(
            ask_all(
                connection, prompts, params, job.spec.evaluation.concurrency, lambda m: say(f"{name}: {m}")
            )
        )
    cpu_after = cpu_seconds(pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return answers, wall, memory.peak, cpu


def _rounds(
    live: dict[str, tuple[TeacherConnection, int | None]],
    prompts: list[Any],
    job: DistillationJob,
    say: Callable[[str], None],
    rounds: int,
) -> dict[str, ModelRun]:
    """Warm each model up with one untimed round of every prompt, then `rounds` timed rounds in which each
    model answers every prompt. A whole round, not one request: a teacher kept from generation has
    answered hundreds of requests already, and a fresh server measured after one request ran slower
    than the same server warm (docs/benchmarks.md 4a)."""
    for name, (connection, pid) in live.items():
        _ask_round(name, connection, pid, prompts, job, lambda m: None)
    runs: dict[str, ModelRun] = {}
    for number in range(rounds):
        for name, (connection, pid) in live.items():
            answers, wall, peak, cpu = _ask_round(name, connection, pid, prompts, job, say)
            if number == 0:
                errors = [a.error for a in answers if a.error]
                if len(errors) == len(answers):
                    raise EvaluationFailed(
                        f"{name}: every request failed, e.g. {errors[0]}", FailureReason.server_failed
                    )
                source = "live" if pid is None else "served"
                runs[name] = ModelRun(name, answers, 0.0, None, source, timed=[], rounds=rounds)
                if errors:
                    runs[name].notes.append(
                        f"{name}: {len(errors)} of {len(answers)} requests failed (scored as wrong), e.g. {errors[0]}"
                    )
            run = runs[name]
            run.timed = [*(run.timed or []), *answers]
            run.wall_seconds = (run.wall_seconds or 0.0) + wall
            run.peak_memory_bytes = max(run.peak_memory_bytes or 0, peak or 0) or None
            run.cpu_seconds = None if cpu is None else (run.cpu_seconds or 0.0) + cpu
    return runs


# Runs the public benchmarks against one model while it is served: (name, connection, tokenizer) -> scores.
Benchmark = Callable[[str, TeacherConnection, str], dict[str, Any]]


def measure_models(
    job: DistillationJob,
    layout: Layout,
    serve: Server,
    models: dict[str, str],
    live: dict[str, tuple[TeacherConnection, int | None]],
    prompts: list[Any],
    say: Callable[[str], None],
    rounds: int | None = None,
    benchmark: Benchmark | None = None,
    tokenizers: dict[str, str] | None = None,
) -> dict[str, ModelRun]:
    """Ask the `live` connections (name -> connection and its server's pid: with a pid, a server this
    machine runs with the evaluation's settings, measured as served), then serve each of `models` (name
    -> model path or id) in turn with the evaluation's settings and ask it the same way; returns each
    model's run. With `benchmark`, each model also runs the public benchmarks after its rounds, on the
    same server (tokenizer: the model's path, or `tokenizers[name]` for a live one). `rounds` defaults to
    `timed_rounds` of the prompts."""
    rounds = rounds or timed_rounds(len(prompts))
    runs = _rounds(live, prompts, job, say, rounds)
    for name, (connection, _pid) in live.items():
        if benchmark is not None:
            runs[name].benchmarks = benchmark(
                name, connection, (tokenizers or {}).get(name) or connection.model
            )
    for name, model in models.items():
        kind = "a local path" if Path(model or "").exists() else "a Hugging Face hub id"
        say(f"{name}: serving {model} ({kind})")
        started = time.monotonic()
        with serve(job, layout, name, model) as connection_pid:
            runs.update(_rounds({name: connection_pid}, prompts, job, say, rounds))
            if benchmark is not None:
                runs[name].benchmarks = benchmark(name, connection_pid[0], model)
        say(f"{name}: done in {time.monotonic() - started:.0f}s (server start included)")
    return runs
