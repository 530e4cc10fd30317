"""Phase 1: shard K of N of the prompts -> the teacher -> JSONL records (`distillery generate`).

    distillery generate --job J --storage DIR --teacher-url URL [--teacher-model NAME]
                        [--shard-index K] [--metrics-port P]

The shard owns the input records whose position (0-based, blank lines not counted) is
K modulo N, in `data.train` and `data.validation` alike, so N shards cover every record
exactly once. Inputs are streamed: memory holds the requests in flight, one byte per input
line (what is done) and the dedup hashes, never the file.

Files, per split (paths from `storage.Layout`; record format in `storage.py`):
- `<shard>.jsonl.partial` / `<shard>.rejected.jsonl.partial` while running: each input
  record's lines are appended in one write once its request is answered.
- On completion they are renamed to `<shard>.jsonl` / `<shard>.rejected.jsonl`, then
  `<shard>.summary.json` is written: a split is done exactly when its summary exists.
- A restarted shard cuts a torn last line, drops any record whose samples were only partly
  written, and skips every input line already in either file: nothing lost or duplicated.
  Requests that failed are not written, so a restart retries them.

Before fanning out, the teacher's model list and a few prompts (`smokeTestPrompts`) are tried
so that an unreachable teacher, a wrong model name or a teacher whose every answer is
rejected fails the shard in seconds, with the reason. A split whose share of prompts with
an accepted answer ends below `minSuccessRatio` fails the shard.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.api import DataSpec, DistillationJob, FilterSpec, GenerationSpec, TaskType
from distillery.stages.teacher import TeacherConnection

REJECT_REASONS = ("truncated", "too_short", "too_long", "wrong_answer", "duplicate")
PROGRESS_INTERVAL_SECONDS = 10.0
ERROR_SAMPLES = 3  # distinct error messages kept for the summary
PARTIAL = ".partial"


class InputError(ValueError):
    """A malformed input file or record; the message names the file and the line."""


class GenerationFailed(RuntimeError):
    """The shard cannot succeed (teacher unreachable, wrong model, too few accepted answers)."""


# ------------------------------------------------------------------ input


@dataclass(frozen=True)
class Prompt:
    line: int  # 1-based line number in the input file
    id: str
    messages: list[dict]
    reference: str | None


def owned(position: int, shard_index: int, shard_count: int) -> bool:
    """Whether the record at `position` (0-based, blank lines not counted) belongs to shard K of N."""
    return position % shard_count == shard_index


def iter_prompts(
    data: DataSpec,
    path: Path,
    shard_index: int,
    shard_count: int,
    limit: int | None = None,
    field_name: str = "",
) -> Iterator[Prompt]:
    """This shard's prompts from a JSONL file, streamed; raises InputError naming the line."""
    from distillery.tasks import RecordError, build_messages, record_id, reference_of

    where = f"{field_name} ({path})" if field_name else str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; a generator cannot use `with` and report OSError
    except OSError as error:
        raise InputError(f"{where}: cannot read the input: {error.strerror}") from None
    with handle:
        position = 0
        for line_number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            if limit is not None and position >= limit:
                return
            position += 1
            if not owned(position - 1, shard_index, shard_count):
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                detail = (
                    f"{error.msg} at column {error.colno}"
                    if isinstance(error, json.JSONDecodeError)
                    else error
                )
                raise InputError(f"{where}: line {line_number}: not valid JSON: {detail}") from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{where}: line {line_number}: expected a JSON object, got {type(record).__name__}"
                )
            try:
                messages = build_messages(data, record)
            except RecordError as error:
                raise InputError(f"{where}: line {line_number}: {error}") from None
            yield Prompt(
                line_number, record_id(data, record, line_number), messages, reference_of(data, record)
            )


# ------------------------------------------------------------------ filters


def dedup_key(messages: list[dict], response: str) -> int:
    """8-byte hash of a (prompt, response) pair: what dedup remembers per accepted record."""
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True) + "\x00" + response
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def rejection(
    filters: FilterSpec,
    task: TaskType,
    labels: list[str],
    response: str,
    finish_reason: str | None,
    reference: str | None,
) -> tuple[str, str] | None:
    """(reason, detail) when a response is rejected by the filters (dedup aside), else None."""
    from distillery.tasks import VERIFIABLE, answers_match, extract_answer

    if filters.require_finished and finish_reason == "length":
        return "truncated", "cut off by generation.maxTokens"
    if len(response.strip()) < filters.min_response_chars:
        return "too_short", f"{len(response.strip())} chars < minResponseChars {filters.min_response_chars}"
    if filters.max_response_chars is not None and len(response) > filters.max_response_chars:
        return "too_long", f"{len(response)} chars > maxResponseChars {filters.max_response_chars}"
    if (
        filters.verify
        and reference is not None
        and task in VERIFIABLE
        and not answers_match(task, response, reference, labels)
    ):
        return "wrong_answer", f"expected {reference!r}, answer {extract_answer(task, response, labels)!r}"
    return None


def request_params(generation: GenerationSpec) -> dict[str, Any]:
    """The sampling parameters of every teacher request, from the spec."""
    params: dict[str, Any] = {
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "max_tokens": generation.max_tokens,
        "n": generation.samples_per_prompt,
    }
    if generation.seed is not None:
        params["seed"] = generation.seed
    if generation.top_logprobs > 0 or generation.samples_per_prompt > 1:
        # With n > 1 the usage is per request; per-token logprobs give each sample's exact length.
        params["logprobs"] = True
        params["top_logprobs"] = generation.top_logprobs
        params["return_tokens_as_token_ids"] = True  # vLLM: tokens as `token_id:N`, the student's ids
    return params


# ------------------------------------------------------------------ files and resume


@dataclass
class SplitStats:
    prompts: int = 0  # this shard's prompts in the split
    done: int = 0  # prompts answered (accepted or rejected), earlier runs included
    resumed: int = 0  # of those, done by an earlier run
    accepted_prompts: int = 0  # prompts with at least one accepted sample
    records: int = 0  # accepted records written
    rejected: Counter = field(default_factory=Counter)
    errors: int = 0  # prompts whose request failed for good (retried on a restart)
    error_kinds: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0

    def count_error(self, kind: str, message: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1
        if len(self.error_samples) < ERROR_SAMPLES and message not in self.error_samples:
            self.error_samples.append(message)

    @property
    def success_ratio(self) -> float:
        return self.accepted_prompts / self.prompts if self.prompts else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "done": self.done,
            "resumed": self.resumed,
            "accepted_prompts": self.accepted_prompts,
            "records": self.records,
            "rejected": dict(sorted(self.rejected.items())),
            "errors": self.errors,
            "error_kinds": dict(sorted(self.error_kinds.items())),
            "error_samples": self.error_samples,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "success_ratio": round(self.success_ratio, 4),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> SplitStats:
        stats = cls(
            **{
                k: value[k]
                for k in (
                    "prompts",
                    "done",
                    "resumed",
                    "accepted_prompts",
                    "records",
                    "errors",
                    "prompt_tokens",
                    "output_tokens",
                )
                if k in value
            }
        )
        stats.rejected = Counter(value.get("rejected", {}))
        stats.error_kinds = Counter(value.get("error_kinds", {}))
        stats.error_samples = list(value.get("error_samples", []))
        return stats


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def cut_torn_tail(path: Path) -> int:
    """Truncate a file after its last newline (a write killed half-way); returns the bytes removed."""
    if not path.exists():
        return 0
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(65536, keep)
            handle.seek(keep - step)
            chunk = handle.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = keep - step + newline + 1
                break
            keep -= step
        if keep != size:
            handle.truncate(keep)
        return size - keep


def _read_records(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise GenerationFailed(
                    f"{path}: line {number} is corrupt; delete the file to regenerate this shard's split"
                ) from None


def _drop_lines(path: Path, drop: set[int]) -> None:
    """Rewrite a partial file without the records of the given input lines (atomically)."""
    if not path.exists():
        return
    temporary = path.with_name(path.name + ".tmp")
    with open(path, encoding="utf-8") as source, open(temporary, "w", encoding="utf-8") as target:
        for line in source:
            if json.loads(line)["line"] not in drop:
                target.write(line)
    os.replace(temporary, path)


def recover(
    records: Path, rejected: Path, samples: int, input_lines: int, stats: SplitStats, seen: set[int] | None
) -> bytearray:
    """Resume from the partial files: returns per-input-line sample counts (0 = to do).

    Cuts torn tails, drops records whose samples were only partly written, and adds what
    earlier runs did to `stats` (and accepted pairs to the dedup set `seen`).
    """
    for path in (records, rejected):
        if cut_torn_tail(path):
            print(f"generate: cut a torn last line from {path.name}", file=sys.stderr)
    counts = bytearray(input_lines + 1)
    for path in (records, rejected):
        for record in _read_records(path):
            line = record.get("line")
            if not isinstance(line, int) or not 0 < line <= input_lines:
                raise GenerationFailed(
                    f"{path}: a record names input line {line!r}, which the input does not have; the input "
                    "changed since this shard started: delete the shard's files to regenerate it"
                )
            counts[line] += 1
    partly = {line for line, count in enumerate(counts) if 0 < count < samples}
    if partly:
        print(f"generate: dropping {len(partly)} partly written prompt(s) to redo them", file=sys.stderr)
        for path in (records, rejected):
            _drop_lines(path, partly)
        for line in partly:
            counts[line] = 0
    accepted_lines: set[int] = set()
    for path, is_accepted in ((records, True), (rejected, False)):
        for record in _read_records(path):
            usage = record.get("usage") or {}
            stats.output_tokens += int(usage.get("completion_tokens") or 0)
            if record.get("sample", 0) == 0:
                stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            if is_accepted:
                stats.records += 1
                accepted_lines.add(record["line"])
                if seen is not None:
                    seen.add(dedup_key(record["messages"], record["response"]))
            else:
                stats.rejected[record.get("reject_reason", "unknown")] += 1
    stats.accepted_prompts = len(accepted_lines)
    stats.done = stats.resumed = sum(1 for count in counts if count)
    return counts


def write_json_atomic(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# ------------------------------------------------------------------ the shard


@dataclass
class SplitWork:
    name: str  # "train" / "validation"
    field_name: str  # "data.train" / "data.validation"
    path: Path
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
        from distillery.storage import SPLITS, Layout

        self.job = job
        self.spec = job.spec
        self.generation = job.spec.generation
        self.index = shard_index
        self.count = job.spec.generation.shards
        if not 0 <= shard_index < self.count:
            raise ValueError(
                f"shard index {shard_index} is out of range; expected 0-{self.count - 1} "
                f"(generation.shards is {self.count})"
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
                path=self.layout.input(sources[split][0]),
                limit=sources[split][1],
                records=self.layout.shard_records(split, shard_index, self.count),
                rejected=self.layout.shard_rejected(split, shard_index, self.count),
                summary=self.layout.shard_summary(split, shard_index, self.count),
            )
            for split in SPLITS
            if sources[split][0]
        ]
        self.in_flight = 0
        self.client: Any = None
        self._current: SplitWork | None = None
        self._files: tuple[Any, Any] = (None, None)
        self.started = time.monotonic()
        self.new_output_tokens = 0
        self.new_done = 0

    # ---- preparation: everything that can fail without the teacher fails here, first

    def prepare(self) -> None:
        for work in self.splits:
            if work.summary.exists():
                previous = json.loads(work.summary.read_text())
                work.stats = SplitStats.from_dict(previous)
                work.stats.resumed = work.stats.done
                work.complete = True
                continue
            input_lines = 0
            for prompt in iter_prompts(
                self.spec.data, work.path, self.index, self.count, work.limit, work.field_name
            ):
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

    def pending(self, work: SplitWork) -> Iterator[Prompt]:
        counts = work.counts
        for prompt in iter_prompts(
            self.spec.data, work.path, self.index, self.count, work.limit, work.field_name
        ):
            if not counts[prompt.line]:
                yield prompt

    # ---- generation

    async def run(self) -> None:
        from distillery.stages.chat import ChatClient

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
                        open(partial_path(work.records), "a", encoding="utf-8") as records,
                        open(partial_path(work.rejected), "a", encoding="utf-8") as rejected,
                    ):
                        self._files = (records, rejected)
                        pending = self.pending(work)
                        if not smoke_tested and work.stats.done < work.stats.prompts:
                            await self._check_teacher()
                            await self._smoke_test(work, pending)
                            smoke_tested = True
                        self._current = work
                        await asyncio.gather(
                            *(self._worker(work, pending) for _ in range(self.generation.concurrency))
                        )
                        for handle in (records, rejected):
                            handle.flush()
                            os.fsync(handle.fileno())
                    self._finish(work)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter

    async def _check_teacher(self) -> None:
        """Fail fast on an unreachable teacher or a wrong model name (GET /models, a few quick tries)."""
        from distillery.stages.chat import RequestFailed, backoff_delay

        url = self.connection.base_url
        for attempt in range(4):
            try:
                served = await self.client.list_models()
                break
            except RequestFailed as error:
                if error.kind == "http_404":
                    return  # an endpoint without /models: the smoke test checks the model name
                if error.kind in ("http_401", "http_403"):
                    raise GenerationFailed(f"the teacher at {url} refused the API key: {error}") from None
                if not error.retryable or attempt == 3:
                    raise GenerationFailed(
                        f"the teacher at {url} is unreachable: {error}; is it running, and is --teacher-url right?"
                    ) from None
                await asyncio.sleep(backoff_delay(attempt))
        if self.connection.model not in served:
            raise GenerationFailed(
                f"the teacher at {url} serves {served}, not {self.connection.model!r}; "
                "check teacher.servedModelName / teacher.endpoint.model (or --teacher-model)"
            )

    async def _smoke_test(self, work: SplitWork, pending: Iterator[Prompt]) -> None:
        """The first few prompts, answered and written like any other; fail when none is accepted."""
        batch = list(itertools.islice(pending, self.generation.smoke_test_prompts))
        if not batch:
            return
        self._current = work
        outcomes = await asyncio.gather(*(self._answer(work, prompt) for prompt in batch))
        if any(outcome == "accepted" for outcome, _ in outcomes):
            print(f"generate: smoke test passed ({len(batch)} prompts)", file=sys.stderr)
            return
        errors = [detail for outcome, detail in outcomes if outcome == "error"]
        if len(errors) == len(batch):
            raise GenerationFailed(
                f"smoke test: all {len(batch)} teacher requests failed; first: {errors[0]}"
            )
        reasons = Counter(detail.split(":", 1)[0] for outcome, detail in outcomes if outcome == "rejected")
        example = next(detail for outcome, detail in outcomes if outcome == "rejected")
        raise GenerationFailed(
            f"smoke test: every answer of the teacher was rejected ({dict(reasons)}), e.g. {example}; "
            "check data.taskType, the prompt template and generation.filters"
        )

    async def _worker(self, work: SplitWork, pending: Iterator[Prompt]) -> None:
        # Coroutines share one generator: next() never awaits, so each prompt goes to exactly one.
        for prompt in pending:
            await self._answer(work, prompt)

    async def _answer(self, work: SplitWork, prompt: Prompt) -> tuple[str, str]:
        """Ask the teacher, filter, write. Returns (accepted | rejected | error, detail)."""
        from distillery import metrics
        from distillery.stages.chat import RequestFailed

        self.in_flight += 1
        metrics.GEN_IN_FLIGHT.set(self.in_flight)
        try:
            result = await self.client.complete(prompt.messages, **self.params)
        except RequestFailed as error:
            work.stats.count_error(error.kind, str(error))
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
            record = {
                "id": f"{prompt.id}#{sample}" if multi else prompt.id,
                "split": work.name,
                "line": prompt.line,
                "sample": sample,
                "messages": prompt.messages,
                "response": choice.text,
                "finish_reason": choice.finish_reason,
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": choice.completion_tokens,
                },
                "teacher_model": result.model or self.connection.model,
                "reference": prompt.reference,
                "latency_ms": round(result.latency_s * 1000, 1),
                "logprobs": choice.logprobs if self.generation.top_logprobs else None,
            }
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
                accepted.append(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                record["reject_reason"], record["reject_detail"] = verdict
                rejected.append(json.dumps(record, ensure_ascii=False) + "\n")
                reasons.append(f"{verdict[0]}: {verdict[1]}")
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
        from distillery import metrics

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

    def _finish(self, work: SplitWork) -> None:
        stats = work.stats
        self._log_progress(work, final=True)
        if stats.success_ratio < self.generation.min_success_ratio:
            raise GenerationFailed(
                f"{work.name}: only {stats.accepted_prompts} of {stats.prompts} prompts "
                f"({stats.success_ratio:.1%}) got an accepted answer, below generation.minSuccessRatio "
                f"{self.generation.min_success_ratio:g}; rejected {dict(stats.rejected)}, errors "
                f"{dict(stats.error_kinds)}{'; e.g. ' + stats.error_samples[0] if stats.error_samples else ''}"
            )
        # Rename the rejected file first: the records file appearing means the split's data is whole.
        os.replace(partial_path(work.rejected), work.rejected)
        os.replace(partial_path(work.records), work.records)
        write_json_atomic(work.summary, self._split_summary(work))
        work.complete = True

    def _split_summary(self, work: SplitWork) -> dict[str, Any]:
        return {
            "split": work.name,
            "shard": self.index,
            "shards": self.count,
            "teacher_model": self.connection.model,
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

    def summary(self) -> dict[str, Any]:
        splits = {work.name: work.stats for work in self.splits}
        rejected: Counter = Counter()
        for stats in splits.values():
            rejected.update(stats.rejected)
        duration = time.monotonic() - self.started
        samples = [s for stats in splits.values() for s in stats.error_samples][:ERROR_SAMPLES]
        return {
            "stage": "generate",
            "shard": self.index,
            "shards": self.count,
            "teacher_model": self.connection.model,
            "prompts": sum(s.prompts for s in splits.values()),
            "records": sum(s.records for s in splits.values()),
            "rejected": dict(sorted(rejected.items())),
            "errors": sum(s.errors for s in splits.values()),
            "error_samples": samples,
            "prompt_tokens": sum(s.prompt_tokens for s in splits.values()),
            "output_tokens": sum(s.output_tokens for s in splits.values()),
            "resumed": sum(s.resumed for s in splits.values()),
            "duration_seconds": round(duration, 2),
            "output_tokens_per_second": round(self.new_output_tokens / duration, 1) if duration else 0.0,
            "splits": {
                name: {"prompts": s.prompts, "records": s.records, "errors": s.errors}
                for name, s in splits.items()
            },
        }


def _observe_request(outcome: str, seconds: float | None) -> None:
    from distillery import metrics

    metrics.GEN_REQUESTS.labels(outcome).inc()
    if seconds is not None:
        metrics.GEN_REQUEST_DURATION.observe(seconds)


def generate_shard(
    job: DistillationJob, storage_root: Path, shard_index: int, connection: TeacherConnection
) -> dict[str, Any]:
    """Run shard `shard_index` of `generation.shards` for both splits; returns the summary.

    Raises InputError (bad input, with the line), GenerationFailed (teacher or success ratio)
    or ValueError (shard index out of range).
    """
    shard = Shard(job, storage_root, shard_index, connection)
    shard.prepare()
    asyncio.run(shard.run())
    return shard.summary()


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from distillery.cli import add_job_argument

    add_job_argument(parser)
    parser.add_argument("--storage", default=".", metavar="DIR", help="the job's storage root (default: .)")
    parser.add_argument(
        "--teacher-url",
        metavar="URL",
        help="base URL of the teacher's OpenAI API (…/v1); default: teacher.endpoint.url",
    )
    parser.add_argument(
        "--teacher-model", metavar="NAME", help="model name to request (default: from the spec)"
    )
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        metavar="K",
        help="which shard to run (default: $JOB_COMPLETION_INDEX, else 0)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="P", help="serve /metrics on P (0: off)"
    )


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distillery.cli import job_from_argument
    from distillery.stages.common import start_metrics_server, write_termination_message
    from distillery.stages.teacher import teacher_connection

    job = job_from_argument(args.job)
    index = args.shard_index
    if index is None:
        index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    base = {"stage": "generate", "shard": index, "shards": job.spec.generation.shards}
    try:
        connection = teacher_connection(job.spec.teacher, args.teacher_url)
        if args.teacher_model:
            connection = replace(connection, model=args.teacher_model)
        start_metrics_server(args.metrics_port)
        summary = generate_shard(job, Path(args.storage), index, connection)
    except (InputError, GenerationFailed, ValueError) as error:
        summary = {**base, "failed": True, "reason": str(error)}
        print(f"distillery generate: {error}", file=sys.stderr)
        print(json.dumps(summary, sort_keys=True))
        write_termination_message(summary)
        return 1
    print(json.dumps(summary, sort_keys=True))
    write_termination_message(summary)
    return 0
