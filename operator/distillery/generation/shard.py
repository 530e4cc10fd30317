"""One generation shard: its prompts -> the teacher -> JSONL records, resumable.

The shard owns every N-th input record (`distillery.tasks.prompts`). Inputs are streamed: memory holds the requests in flight, one byte per input
line (what is done) and the dedup hashes, never the file.

Its files, and how a restart resumes without losing or duplicating a record, are in
`generation.files` (paths from `storage.Layout`; record format in `contract.records`).

Before fanning out, the teacher's model list and a few prompts (`smokeTestPrompts`) are tried
so that an unreachable teacher, a wrong model name or a teacher whose every answer is
rejected fails the shard in seconds, with the reason. A split whose share of prompts with
an accepted answer ends below `minSuccessRatio` fails the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery import atomic, fingerprints
from distillery.api import DistillationJob
from distillery.contract.records import Record, RejectedRecord, Usage
from distillery.contract.shards import SplitStats, summarize
from distillery.contract.summaries import FailureReason, GenerateSummary
from distillery.datasource import resolve
from distillery.generation import metrics
from distillery.generation.decontamination import Decontaminator, decontaminator_for
from distillery.generation.files import partial_path, recover, supersede_stale
from distillery.generation.filters import dedup_key, rejection, request_params
from distillery.generation.preflight import GenerationFailed, check_teacher, smoke_test_verdict
from distillery.serving.client import ChatClient, RequestFailed, TeacherConnection
from distillery.storage import SPLITS, Layout
from distillery.tasks.prompts import Prompt, iter_prompts

PROGRESS_INTERVAL_SECONDS = 10.0


@dataclass
class SplitWork:
    name: str  # "train" / "validation"
    field_name: str  # "data.train" / "data.validation"
    location: str  # a resolved path or an object-store URI
    limit: int | None
    records: Path
    rejected: Path
    summary: Path
    stats: SplitStats = field(default_factory=SplitStats)
    counts: bytearray = field(default_factory=bytearray)
    seen: set[int] | None = None
    complete: bool = False


class Shard:
    """One shard's run: prepared (inputs checked, partial files recovered), then generated."""

    def __init__(
        self, job: DistillationJob, storage_root: Path, shard_index: int, connection: TeacherConnection
    ):
        self.job = job
        self.spec = job.spec
        self.generation = job.spec.generation
        self.index = shard_index
        self.count = job.spec.generation.shards
        if not 0 <= shard_index < self.count:
            raise GenerationFailed(
                f"shard index {shard_index} is out of range; expected 0-{self.count - 1} "
                f"(generation.shards is {self.count})",
                FailureReason.invalid_spec,
            )
        self.connection = connection
        self.layout = Layout(Path(storage_root), job.metadata.name or "job")
        self.params = request_params(self.generation)
        data = job.spec.data
        sources = {
            "train": (data.train, data.max_train_samples),
            "validation": (data.validation, data.max_validation_samples),
        }
        self.splits = [
            SplitWork(
                name=split,
                field_name=f"data.{split}",
                location=resolve(sources[split][0], storage_root),
                limit=sources[split][1],
                records=self.layout.shard_records(split, shard_index, self.count),
                rejected=self.layout.shard_rejected(split, shard_index, self.count),
                summary=self.layout.shard_summary(split, shard_index, self.count),
            )
            for split in SPLITS
            if sources[split][0]
        ]
        self.decontaminator: Decontaminator | None = None
        self.fingerprint: str | None = None
        self.in_flight = 0
        self.client: Any = None
        self._current: SplitWork | None = None
        self._files: tuple[Any, Any] = (None, None)
        self.started = time.monotonic()
        self.new_output_tokens = 0
        self.new_done = 0

    # ---- preparation: everything that can fail without the teacher fails here, first

    def prepare(self) -> None:
        self.fingerprint = fingerprints.generation(self.job, fingerprints.inputs(self.job, self.layout.root))
        for work in self.splits:
            moved = supersede_stale(self.layout, work.name, self.index, self.count, self.fingerprint)
            if moved:
                print(
                    f"generate: {work.name}: moved {len(moved)} file(s) made for another spec, inputs or "
                    f"shard count to {self.layout.superseded}",
                    file=sys.stderr,
                )
        self.decontaminator = self._decontaminator()
        for work in self.splits:
            if work.summary.exists():
                previous = json.loads(work.summary.read_text())
                work.stats = SplitStats.from_dict(previous)
                work.stats.resumed = work.stats.done
                work.complete = True
                continue
            input_lines = 0
            for prompt in self._prompts(work, counting=True):
                work.stats.prompts += 1
                input_lines = prompt.line
            work.records.parent.mkdir(parents=True, exist_ok=True)
            for final in (work.records, work.rejected):
                # Killed between the renames of a finished split: take the file back and finish again.
                if final.exists() and not partial_path(final).exists():
                    os.replace(final, partial_path(final))
            work.seen = set() if self.generation.filters.dedup else None
            work.counts = recover(
                partial_path(work.records),
                partial_path(work.rejected),
                self.generation.samples_per_prompt,
                input_lines,
                work.stats,
                work.seen,
            )

    def _prompts(self, work: SplitWork, counting: bool = False) -> Iterator[Prompt]:
        keep = None
        if work.name == "train" and self.decontaminator is not None:
            decontaminator = self.decontaminator

            def keep(record: dict) -> bool:
                kept = decontaminator.keep(record)
                work.stats.decontaminated += counting and not kept
                return kept

        return iter_prompts(
            self.spec.data,
            work.location,
            self.index,
            self.count,
            work.limit,
            work.field_name,
            store=self.spec.storage.object_store,
            keep=keep,
        )

    def _decontaminator(self) -> Decontaminator | None:
        """The validation prompts' n-grams, while a training split is still to be generated."""
        todo = any(work.name == "train" and not work.summary.exists() for work in self.splits)
        return decontaminator_for(self.job, self.layout.root) if todo else None

    def pending(self, work: SplitWork) -> Iterator[Prompt]:
        counts = work.counts
        for prompt in self._prompts(work):
            if not counts[prompt.line]:
                yield prompt

    # ---- generation

    async def run(self) -> None:
        todo = [work for work in self.splits if not work.complete]
        if not todo:
            return
        async with ChatClient(
            self.connection,
            concurrency=self.generation.concurrency,
            timeout=self.generation.request_timeout_seconds,
            max_retries=self.generation.max_retries,
            observer=_observe_request,
        ) as client:
            self.client = client
            reporter = asyncio.create_task(self._report_progress())
            try:
                smoke_tested = False
                for work in todo:
                    with (
                        atomic.appending(partial_path(work.records)) as records,
                        atomic.appending(partial_path(work.rejected)) as rejected,
                    ):
                        self._files = (records, rejected)
                        pending = self.pending(work)
                        if not smoke_tested and work.stats.done < work.stats.prompts:
                            await check_teacher(self.client, self.connection)
                            await self._smoke_test(work, pending)
                            smoke_tested = True
                        self._current = work
                        await asyncio.gather(
                            *(self._worker(work, pending) for _ in range(self.generation.concurrency))
                        )
                    self._finish(work)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter

    async def _smoke_test(self, work: SplitWork, pending: Iterator[Prompt]) -> None:
        """The first few prompts, answered and written like any other; fail when none is accepted."""
        batch = list(itertools.islice(pending, self.generation.smoke_test_prompts))
        if not batch:
            return
        self._current = work
        outcomes = await asyncio.gather(*(self._answer(work, prompt) for prompt in batch))
        smoke_test_verdict(outcomes)
        print(f"generate: smoke test passed ({len(batch)} prompts)", file=sys.stderr)

    async def _worker(self, work: SplitWork, pending: Iterator[Prompt]) -> None:
        # Coroutines share one generator: next() never awaits, so each prompt goes to exactly one.
        for prompt in pending:
            await self._answer(work, prompt)

    async def _answer(self, work: SplitWork, prompt: Prompt) -> tuple[str, str]:
        """Ask the teacher, filter, write. Returns (accepted | rejected | error, detail)."""
        self.in_flight += 1
        metrics.GEN_IN_FLIGHT.set(self.in_flight)
        try:
            result = await self.client.complete(prompt.messages, **self.params)
        except RequestFailed as error:
            work.stats.count_error(error.kind, str(error))
            self._export()
            return "error", str(error)
        finally:
            self.in_flight -= 1
            metrics.GEN_IN_FLIGHT.set(self.in_flight)
        data, filters = self.spec.data, self.generation.filters
        multi = len(result.choices) > 1
        accepted: list[str] = []
        rejected: list[str] = []
        reasons: list[str] = []
        for sample, choice in enumerate(result.choices):
            record = Record(
                id=f"{prompt.id}#{sample}" if multi else prompt.id,
                split=work.name,
                line=prompt.line,
                sample=sample,
                messages=prompt.messages,
                response=choice.text,
                finish_reason=choice.finish_reason,
                usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=choice.completion_tokens),
                teacher_model=result.model or self.connection.model,
                reference=prompt.reference,
                latency_ms=round(result.latency_s * 1000, 1),
                logprobs=choice.logprobs if self.generation.top_logprobs else None,
            )
            verdict = rejection(
                filters, data.task_type, data.labels, choice.text, choice.finish_reason, prompt.reference
            )
            if verdict is None and work.seen is not None:
                key = dedup_key(prompt.messages, choice.text)
                if key in work.seen:
                    verdict = ("duplicate", "same prompt and response as an earlier record")
                else:
                    work.seen.add(key)
            if verdict is None:
                accepted.append(record.to_line())
            else:
                reason, detail = verdict
                rejected.append(
                    RejectedRecord(**dict(record), reject_reason=reason, reject_detail=detail).to_line()
                )
                reasons.append(f"{reason}: {detail}")
        # One write per file per prompt; rejected first, so a kill between the two leaves the
        # prompt partly written (redone on restart), never an accepted record without its siblings.
        records_file, rejected_file = self._files
        if rejected:
            rejected_file.write("".join(rejected))
            rejected_file.flush()
        if accepted:
            records_file.write("".join(accepted))
            records_file.flush()
        self._count(work, result, accepted, reasons)
        if accepted:
            return "accepted", ""
        return "rejected", f"{reasons[0]} (line {prompt.line})"

    def _count(self, work: SplitWork, result: Any, accepted: list[str], reasons: list[str]) -> None:
        stats = work.stats
        stats.done += 1
        stats.records += len(accepted)
        stats.accepted_prompts += 1 if accepted else 0
        stats.prompt_tokens += result.prompt_tokens
        stats.output_tokens += result.completion_tokens
        self.new_done += 1
        self.new_output_tokens += result.completion_tokens
        for reason in reasons:
            name = reason.split(":", 1)[0]
            stats.rejected[name] += 1
            metrics.GEN_REJECTED.labels(name).inc()
        metrics.GEN_RECORDS.inc(len(accepted))
        metrics.GEN_TOKENS.labels("prompt").inc(result.prompt_tokens)
        metrics.GEN_TOKENS.labels("completion").inc(result.completion_tokens)
        self._export()

    def _export(self) -> None:
        """The shard's position as gauges (both splits, an earlier run's work included): the operator sums
        them over the running shards for `kubectl get dj`. A prompt given up on (errors) counts as handled."""
        every = [work.stats for work in self.splits]
        metrics.GEN_PROMPTS.set(sum(s.prompts for s in every))
        metrics.GEN_PROMPTS_DONE.set(sum(s.done + s.errors for s in every))
        metrics.GEN_RECORDS_ACCEPTED.set(sum(s.records for s in every))
        elapsed = time.monotonic() - self.started
        if elapsed > 0:
            metrics.GEN_OUTPUT_TOKENS_PER_SECOND.set(round(self.new_output_tokens / elapsed, 1))

    def _finish(self, work: SplitWork) -> None:
        stats = work.stats
        self._log_progress(work, final=True)
        if stats.success_ratio < self.generation.min_success_ratio:
            raise GenerationFailed(
                f"{work.name}: only {stats.accepted_prompts} of {stats.prompts} prompts "
                f"({stats.success_ratio:.1%}) got an accepted answer, below generation.minSuccessRatio "
                f"{self.generation.min_success_ratio:g}; rejected {dict(stats.rejected)}, errors "
                f"{dict(stats.error_kinds)}{'; e.g. ' + stats.error_samples[0] if stats.error_samples else ''}",
                FailureReason.too_few_accepted,
            )
        # Rename the rejected file first: the records file appearing means the split's data is whole.
        os.replace(partial_path(work.rejected), work.rejected)
        os.replace(partial_path(work.records), work.records)
        atomic.fsync_directory(work.records.parent)
        atomic.write_json(work.summary, self._split_summary(work))
        work.complete = True

    def _split_summary(self, work: SplitWork) -> dict[str, Any]:
        return {
            "split": work.name,
            "shard": self.index,
            "shards": self.count,
            "teacher_model": self.connection.model,
            "fingerprint": self.fingerprint,
            **work.stats.as_dict(),
        }

    # ---- progress

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            if self._current is not None:
                self._log_progress(self._current)

    def _log_progress(self, work: SplitWork, final: bool = False) -> None:
        stats = work.stats
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.new_done / elapsed
        left = stats.prompts - stats.done
        eta = f"{left / rate:.0f}s" if rate > 0 and not final else "-"
        rejected = sum(stats.rejected.values())
        print(
            f"generate shard {self.index}/{self.count} {work.name}: {stats.done}/{stats.prompts} prompts "
            f"({stats.done / max(stats.prompts, 1):.0%}), {rate:.1f} prompts/s, "
            f"{self.new_output_tokens / elapsed:.0f} output tok/s, in flight {self.in_flight}, "
            f"rejected {rejected}, errors {stats.errors}, ETA {eta}",
            file=sys.stderr,
            flush=True,
        )

    def summary(self) -> GenerateSummary:
        duration = time.monotonic() - self.started
        return summarize(
            self.index,
            self.count,
            self.connection.model,
            {work.name: work.stats for work in self.splits},
            duration_seconds=round(duration, 2),
            fingerprint=self.fingerprint,
            output_tokens_per_second=round(self.new_output_tokens / duration, 1) if duration else 0.0,
        )


def _observe_request(outcome: str, seconds: float | None) -> None:
    metrics.GEN_REQUESTS.labels(outcome).inc()
    if seconds is not None:
        metrics.GEN_REQUEST_DURATION.observe(seconds)


def generate_shard(
    job: DistillationJob, storage_root: Path, shard_index: int, connection: TeacherConnection
) -> GenerateSummary:
    """Run shard `shard_index` of `generation.shards` for both splits; returns the summary.

    Raises InputError (bad input, with the line) or GenerationFailed (shard index out of range,
    teacher, success ratio); each carries its FailureReason.
    """
    shard = Shard(job, storage_root, shard_index, connection)
    shard.prepare()
    asyncio.run(shard.run())
    return shard.summary()
