"""`distillery run FILE`: the whole DistillationJob on this machine, no cluster (the embedded default).

    distillery run examples/tiny.yaml [--storage DIR]

The same stage code the operator's pods run, chained here:

1. generate  the teacher is served by a local vLLM (or `teacher.endpoint` is used), the shards
             run as parallel local workers (`distillery generate` subprocesses, at most
             `generation.parallelism` at once), then the teacher is stopped (kept, on CPU, when the
             evaluation would start the same server: `local.teacher.keep_teacher`);
2. train     `distillery train` in a subprocess (so its memory is returned before serving);
3. evaluate  `distillery evaluate`: student vs baseline vs teacher, the report, the gate.

Each stage process is started with the command line the operator's pods run
(`contract.commands`, with this machine's storage path), and reports the same typed summary
(`contract.summaries`), written to a file here instead of the termination message.

Storage is `storage.path` relative to the spec file's directory (default `.distillery/<name>`
beside it). A completed stage leaves `Layout.stage_done(stage)` and is skipped on the next
run; an interrupted one resumes (generation skips the records it wrote, training restarts
from its last checkpoint). The spec is checked before anything starts. Each stage's stderr is kept
in `Layout.work/logs/<stage>.log` (`stage_log`), the teacher's server log in `logs/teacher.log`; a
failure prints one line naming the field or the cause, and that log. The exit status is an
`ExitCode` (contract.exit_codes, docs/errors.md): OK when the gate passes, GATE_FAILED when it
fails (every artifact kept), INVALID_SPEC, STAGE_FAILED, STORAGE_UNWRITABLE or INTERRUPTED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distillery import atomic, fingerprints
from distillery.api import DistillationJob
from distillery.contract import stages
from distillery.contract.commands import (
    EvaluateCommand,
    GenerateCommand,
    TrainCommand,
)
from distillery.contract.exit_codes import ExitCode, for_failure
from distillery.contract.report import EvaluationReport
from distillery.contract.stages import Stage
from distillery.contract.summaries import (
    EvaluateSummary,
    FailureReason,
    GenerateSummary,
    StageFailed,
    StageSummary,
    generation_totals,
)
from distillery.errors import InvalidJob
from distillery.local.cost import Spent, price_table, spent_before_evaluation
from distillery.local.preflight import check_tokenizers, preflight, storage_problem, storage_root
from distillery.local.process import failure_text, run_stage_process, stop_children
from distillery.local.teacher import keep_teacher, teacher
from distillery.storage import Layout


def local_stages() -> tuple[Stage, ...]:
    """The stages `distillery run` runs, in order (the stage table's `local` ones; the check is `preflight`)."""
    return tuple(entry.stage for entry in stages.STAGES if entry.local)


class RunFailed(RuntimeError):
    """A stage ended without its result; the message says which and why, `reason` is its summary's (for the
    exit status), `log` where its output is."""

    def __init__(self, message: str, reason: FailureReason | None = None, log: Path | None = None):
        super().__init__(f"{message} (log: {log})" if log else message)
        self.reason, self.log = reason, log


def stage_log(layout: Layout, stage: str, shard: int | None = None) -> Path:
    """Where `distillery run` keeps a stage process's stderr (a pod's log, on a cluster)."""
    return layout.work / "logs" / (f"{stage}-shard-{shard}.log" if shard is not None else f"{stage}.log")


def failure_reason(summary: StageSummary | None) -> FailureReason | None:
    return summary.failure.reason if summary is not None and summary.failure is not None else None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_done(layout: Layout, stage: str, summary: Any, key: str) -> None:
    """The stage's marker: its summary, and the key (`run_keys`) it was done for."""
    document = summary.model_dump(mode="json", by_alias=True, exclude_none=True)
    atomic.write_json(layout.stage_done(stage), {**document, "runKey": key})


def run_keys(job: DistillationJob, root: Path) -> dict[str, str]:
    """What each stage's result must have been made for to be kept (`distillery.fingerprints`): generation's
    and training's fingerprints, and for evaluation its fingerprint with the gate and `output` (the verdict)."""
    prints = fingerprints.for_job(job, root)
    keys = {stage: prints.of(stage) for stage in local_stages()}
    return {**keys, Stage.evaluate: fingerprints.verdict(job, prints.evaluate)}


def stage_state(layout: Layout, stage: str, key: str) -> str:
    """`done` (marker for this key), `changed` (marker for another: run again), or `todo`."""
    try:
        marker = json.loads(layout.stage_done(stage).read_text())
    except (OSError, ValueError):
        return "todo"
    return "done" if marker.get("runKey") == key else "changed"


# ------------------------------------------------------------------ stages


def shard_summaries(
    job: DistillationJob, layout: Layout, fingerprint: str | None = None
) -> list[GenerateSummary | None]:
    """Each shard's summary from what it left on storage; None for a shard not finished yet (or, given a
    fingerprint, finished for another)."""
    from distillery.contract.shards import stored_summary

    return [stored_summary(job, layout, k, fingerprint) for k in range(job.spec.generation.shards)]


def generation_complete(job: DistillationJob, layout: Layout, fingerprint: str | None = None) -> bool:
    """Every shard wrote its summary for every split it has (generation renames its files before that)."""
    return all(shard_summaries(job, layout, fingerprint))


def run_generate(
    job: DistillationJob, root: Path, layout: Layout, progress: Callable[[str], None], connection: Any = None
) -> Any:
    """The shards, against the teacher `run_job` serves (onPolicy keeps it on for training)."""
    spec = job.spec
    shards = spec.generation.shards
    parallel = spec.generation.parallelism or shards
    progress(
        f"{shards} shard(s), {parallel} at a time, {spec.generation.concurrency} requests in flight each"
    )

    def shard(index: int) -> tuple[int, int, StageSummary | None]:
        command = GenerateCommand(
            job=job,
            storage=str(root),
            teacher_url=connection.base_url,
            teacher_model=connection.model,
            shard_index=index,
        )
        log = stage_log(layout, Stage.generate, index)
        return (index, *run_stage_process(command, layout.stage_summary(Stage.generate, index), log))

    failures: list[tuple[int, str, FailureReason | None]] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        try:
            for index, code, summary in pool.map(shard, range(shards)):
                if code != 0 or not isinstance(summary, GenerateSummary):
                    text = failure_text(Stage.generate, code, summary)
                    failures.append((index, text, failure_reason(summary)))
                    continue
                progress(
                    f"shard {index + 1}/{shards} done: {summary.records} records, "
                    f"{sum(summary.rejected.values())} rejected, {summary.errors} errors"
                )
        except KeyboardInterrupt:
            stop_children()  # before the pool waits for its threads, which wait for the shards
            raise
    if failures:
        first = failures[0][0]
        by_text: dict[str, list[str]] = {}  # shards that failed alike are said once
        for index, text, _ in failures:
            by_text.setdefault(text, []).append(str(index))
        text = "; ".join(f"shard{'s' * (len(ks) > 1)} {', '.join(ks)}: {t}" for t, ks in by_text.items())
        raise RunFailed(f"generate failed: {text}", failures[0][2], stage_log(layout, Stage.generate, first))
    totals = generation_totals(s for s in shard_summaries(job, layout) if s)
    if totals.decontaminated:
        progress(f"{totals.decontaminated} training prompts dropped for overlapping validation prompts")
    return totals


def run_train(
    job: DistillationJob,
    root: Path,
    layout: Layout,
    progress: Callable[[str], None],
    kept_teacher: Any = None,
) -> Any:
    """Training; `kept_teacher` (onPolicy only) grades the student's samples."""
    if layout.checkpoints.is_dir() and any(layout.checkpoints.iterdir()):
        progress(f"resuming from the checkpoints in {layout.checkpoints}")
    url, model = (kept_teacher.base_url, kept_teacher.model) if kept_teacher else (None, None)
    command = TrainCommand(job=job, storage=str(root), teacher_url=url, teacher_model=model)
    log = stage_log(layout, Stage.train)
    code, summary = run_stage_process(command, layout.stage_summary(Stage.train), log, show_stdout=True)
    if code != 0 or summary is None or not summary.succeeded:
        raise RunFailed(
            f"train failed: {failure_text(Stage.train, code, summary)}", failure_reason(summary), log
        )
    return summary


def run_evaluate(
    job: DistillationJob, root: Path, layout: Layout, progress: Callable[[str], None], spent: Spent
) -> Any:
    """Evaluation, told what the stages before it cost (and the prices) for the report's cost, and the
    generation teacher's server when it was kept to be measured (`local.teacher`)."""
    # A failed gate is a verdict (read from the summary), so the stage exits 0 either way.
    kept = spent.teacher
    command = EvaluateCommand(
        job=job,
        storage=str(root),
        teacher_url=kept.base_url if kept else None,
        teacher_model=kept.model if kept else None,
        teacher_pid=kept.server_pid if kept else None,
        gate_exit_code=0,
        spent=spent.cost,
        gpu_hour_prices=spent.prices,
        currency=spent.currency,
    )
    log = stage_log(layout, Stage.evaluate)
    code, summary = run_stage_process(command, layout.stage_summary(Stage.evaluate), log)
    if code != 0 or not isinstance(summary, EvaluateSummary) or not summary.succeeded:
        text = failure_text(Stage.evaluate, code, summary)
        raise RunFailed(f"evaluate failed: {text}", failure_reason(summary), log)
    return summary


# Each local stage's function (what it is given: the teacher's connection, or for evaluation the cost so far).
STAGE_FUNCTIONS = {Stage.generate: run_generate, Stage.train: run_train, Stage.evaluate: run_evaluate}
CHANGED = {
    Stage.generate: "the teacher, data, generation settings or inputs changed since it ran",
    Stage.train: "the student, the training settings or the teacher's records changed since it ran",
    Stage.evaluate: "the evaluation settings, the gate, spec.output or the student changed since it ran "
    "(a changed gate alone re-judges the stored scores)",
}


@contextlib.contextmanager
def timed(stage: str, number: int) -> Iterator[Callable[[str], None]]:
    prefix = f"[{number}/{len(local_stages())}] {stage}"
    started = time.monotonic()
    say(f"{prefix}: starting")
    yield lambda message: say(f"{prefix}: {message}")
    say(f"{prefix}: done in {time.monotonic() - started:.0f}s")


def run_job(
    job: DistillationJob, root: Path, prices: str | None = None, currency: str | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage; returns the evaluation report. Raises RunFailed.

    The teacher is served for generation, and for onPolicy kept on through training, then stopped.
    `prices` (TYPE=PRICE,...) and `currency` price the report's cost."""
    layout = Layout.of(job, root)
    keys = run_keys(job, root)
    # One start fewer: the generation teacher's server stands for the evaluation's when it would be the same.
    keep = stage_state(layout, Stage.evaluate, keys[Stage.evaluate]) != "done" and keep_teacher(
        job, root, layout
    )
    with contextlib.ExitStack() as kept:
        connection = record = None
        order = local_stages()
        for number, stage in enumerate(order, 1):
            marker, key = layout.stage_done(stage), keys[stage]
            if (
                stage == Stage.generate
                and stage_state(layout, stage, key) != "done"
                and generation_complete(job, layout, key)
            ):
                _write_done(
                    layout, stage, generation_totals(s for s in shard_summaries(job, layout, key) if s), key
                )
            state = stage_state(layout, stage, key)
            if state == "done":
                say(f"[{number}/{len(order)}] {stage}: already done ({marker.relative_to(root)}), skipped")
                continue
            if state == "changed":
                say(f"[{number}/{len(order)}] {stage}: {CHANGED[stage]}; running it again")
            needs_teacher = stages.facts(stage).needs_teacher(job.spec)
            if not needs_teacher and keep and record is not None:
                record()  # its cost: what it served for the stages that need it; the rest is the evaluation's
            elif not needs_teacher:
                kept.close()  # the teacher goes as soon as nothing needs it
                connection = None
            with timed(stage, number) as progress:
                if needs_teacher and connection is None:  # onPolicy: one teacher for generation and training
                    kept_on = keep or stages.facts(Stage.train).needs_teacher(job.spec)
                    what = "evaluation" if keep else "training"
                    tell = (lambda m, what=what: say(f"[kept for {what}] {m}")) if kept_on else progress
                    served = teacher(job, root, layout, tell, keys[Stage.generate])
                    connection, record = kept.enter_context(served)
                given = connection if needs_teacher else None
                if stage == Stage.evaluate:
                    spent = spent_before_evaluation(job, layout, keys)
                    given = Spent(spent, prices, currency, connection if keep else None)
                summary = STAGE_FUNCTIONS[stage](job, root, layout, progress, given)
                _write_done(layout, stage, summary, key)
    report_path = layout.evaluation_report
    if not report_path.exists():
        raise RunFailed(
            f"evaluate is marked done but {report_path} is missing; delete {layout.stage_done(Stage.evaluate)}"
        )
    return json.loads(report_path.read_text())


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the DistillationJob (YAML)")
    parser.add_argument(
        "--storage", metavar="DIR", help="storage root (default: storage.path, relative to FILE)"
    )
    parser.add_argument(
        "--gpu-hour-prices",
        metavar="TABLE",
        type=price_table,
        help="price per GPU-hour by GPU type for the report's cost, e.g. default=2.5,NVIDIA-H100-80GB-HBM3=4.1",
    )
    parser.add_argument("--currency", metavar="CODE", help="currency of --gpu-hour-prices (default USD)")


def main(args: argparse.Namespace) -> int:
    """The whole job; every expected failure is one line and an `ExitCode` (docs/errors.md)."""
    from distillery.errors import load_job_file
    from distillery.evaluation.report import summary_lines

    spec_file = Path(args.file)
    job = load_job_file(str(spec_file))  # InvalidJob: one line per problem, INVALID_SPEC, nothing started
    root = storage_root(job, spec_file, args.storage)
    problem = storage_problem(root, job, "--storage" if args.storage else "spec.storage.path")
    if problem:
        say(f"distillery run: {problem}")
        return ExitCode.STORAGE_UNWRITABLE
    problems = preflight(job, root)
    if problems:
        raise InvalidJob(problems, str(spec_file))
    check_tokenizers(job, root)
    say(f"distillery run: job {job.metadata.name!r}, storage {root}")
    started = time.monotonic()
    try:
        report = run_job(job, root, args.gpu_hour_prices, args.currency)
    except (RunFailed, StageFailed) as error:  # StageFailed: the teacher's server, started in this process
        say(f"distillery run: {error}")
        say("distillery run: fix the cause and run the same command again; finished stages are kept")
        return for_failure(error.reason)
    except KeyboardInterrupt:
        logs = Layout.of(job, root).work / "logs"
        say(f"distillery run: interrupted; run the same command again to resume (logs: {logs})")
        return ExitCode.INTERRUPTED
    print()
    for line in summary_lines(report):
        print(line)
    layout = Layout.of(job, root)
    print(f"  report: {layout.evaluation_report.with_suffix('.md')} (+ .json, .png)")
    print(f"  student: {layout.student}")
    say(f"distillery run: finished in {time.monotonic() - started:.0f}s")
    return ExitCode.OK if EvaluationReport.of(report).gate.passed else ExitCode.GATE_FAILED
