"""A shard's files and their recovery: counts per split, torn tails cut, partly written prompts redone;
and the shard's summary from those counts.

Per split, `<shard>.jsonl.partial` and `<shard>.rejected.jsonl.partial` grow while the shard
runs (one write per input record once it is answered); they are renamed when the split is
complete and its `<shard>.summary.json` is written last. A restarted shard cuts a torn last
line, drops any record whose samples were only partly written, and skips every input line
already in either file: nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob
from distillery.contract.records import Record, RejectedRecord, problem
from distillery.contract.summaries import FailureReason, GenerateSummary, SplitCounts, StageFailed
from distillery.generation.filters import dedup_key
from distillery.storage import FINGERPRINT, SPLITS, Layout, shard_of

PARTIAL = ".partial"
ERROR_SAMPLES = 3  # distinct error messages kept for the summary


class CorruptShardFile(StageFailed):
    """A shard's own file cannot be resumed from; the message says which file to delete."""

    reason = FailureReason.invalid_input


@dataclass
class SplitStats:
    prompts: int = 0  # this shard's prompts in the split
    done: int = 0  # prompts answered (accepted or rejected), earlier runs included
    resumed: int = 0  # of those, done by an earlier run
    accepted_prompts: int = 0  # prompts with at least one accepted sample
    records: int = 0  # accepted records written
    rejected: Counter = field(default_factory=Counter)
    decontaminated: int = 0  # prompts dropped before generation for overlapping validation prompts
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
            "decontaminated": self.decontaminated,
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
                    "decontaminated",
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


# ------------------------------------------------------------------ stale files


def _stamp(directory: Path, stem: str) -> str | None:
    try:
        return (directory / f"{stem}{FINGERPRINT}").read_text().strip() or None
    except OSError:
        return None


def supersede_stale(layout: Layout, split: str, index: int, count: int, fingerprint: str) -> list[str]:
    """Move aside what this shard may not resume from, then stamp its fingerprint; returns the names moved.

    Stale are this shard's own files made for another fingerprint (or with no stamp), and every
    file of another shard set (`generation.shards` changed). They go to
    `superseded/<their fingerprint>/generated/<split>/`: kept, never read. Shards of one set run
    at once; each moves only its own files, and a file another shard moved first is skipped.
    """
    directory = layout.generated(split)
    own = layout.shard_fingerprint(split, index, count)
    own_stem = own.name.removesuffix(FINGERPRINT)
    moved: list[str] = []
    if directory.is_dir():
        own_stale = _stamp(directory, own_stem) != fingerprint
        paths = sorted(directory.iterdir())
        # Read every stamp before moving any: a stamp moves with its shard's files.
        stamps = {shard[0]: _stamp(directory, shard[0]) for p in paths if (shard := shard_of(p.name))}
        for path in paths:
            shard = shard_of(path.name)
            if shard is None or (shard[1] == count and (shard[0] != own_stem or not own_stale)):
                continue
            target = layout.superseded / (stamps.get(shard[0]) or "unstamped") / "generated" / split
            target.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, target / path.name)
            except FileNotFoundError:
                continue
            moved.append(path.name)
    if _stamp(directory, own_stem) != fingerprint:
        own.parent.mkdir(parents=True, exist_ok=True)
        temporary = own.with_name(own.name + ".tmp")
        temporary.write_text(fingerprint + "\n")
        os.replace(temporary, own)
    return moved


# ------------------------------------------------------------------ resume


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


def _read_records(path: Path, model: type[Record] = Record) -> Iterator[Record]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield model.from_line(line)
            except ValueError as error:
                raise CorruptShardFile(
                    f"{path}: line {number} is corrupt ({problem(error)}); delete the file to regenerate "
                    "this shard's split"
                ) from None


def _drop_lines(path: Path, drop: set[int]) -> None:
    """Rewrite a partial file without the records of the given input lines (atomically)."""
    if not path.exists():
        return
    temporary = path.with_name(path.name + ".tmp")
    with open(path, encoding="utf-8") as source, open(temporary, "w", encoding="utf-8") as target:
        for line in source:
            if Record.from_line(line).line not in drop:
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
            line = record.line
            if line is None or not 0 < line <= input_lines:
                raise CorruptShardFile(
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
    for path, model in ((records, Record), (rejected, RejectedRecord)):
        for record in _read_records(path, model):
            stats.output_tokens += record.completion_tokens
            if record.sample == 0:
                stats.prompt_tokens += record.prompt_tokens
            if isinstance(record, RejectedRecord):
                stats.rejected[record.reject_reason] += 1
            else:
                stats.records += 1
                accepted_lines.add(record.line)
                if seen is not None:
                    seen.add(dedup_key(record.messages, record.response))
    stats.accepted_prompts = len(accepted_lines)
    stats.done = stats.resumed = sum(1 for count in counts if count)
    return counts


# ------------------------------------------------------------------ summaries


def summarize(
    index: int, count: int, teacher_model: str | None, splits: dict[str, SplitStats], **extra: Any
) -> GenerateSummary:
    """A shard's summary from its splits' counts (this run's, or what a finished shard left on storage)."""
    rejected: Counter = Counter()
    for stats in splits.values():
        rejected.update(stats.rejected)
    return GenerateSummary(
        shard=index,
        shards=count,
        teacher_model=teacher_model,
        prompts=sum(s.prompts for s in splits.values()),
        records=sum(s.records for s in splits.values()),
        rejected=dict(sorted(rejected.items())),
        decontaminated=sum(s.decontaminated for s in splits.values()),
        errors=sum(s.errors for s in splits.values()),
        error_samples=[s for stats in splits.values() for s in stats.error_samples][:ERROR_SAMPLES],
        prompt_tokens=sum(s.prompt_tokens for s in splits.values()),
        output_tokens=sum(s.output_tokens for s in splits.values()),
        resumed=sum(s.resumed for s in splits.values()),
        splits={
            name: SplitCounts(prompts=s.prompts, records=s.records, errors=s.errors)
            for name, s in splits.items()
        },
        **extra,
    )


def stored_summary(
    job: DistillationJob, layout: Layout, index: int, fingerprint: str | None = None
) -> GenerateSummary | None:
    """The summary of shard `index` from the split summaries it wrote; None until every split is done
    (or, given a `fingerprint`, when a split was made for another one)."""
    count = job.spec.generation.shards
    splits = {}
    for split in SPLITS:
        if split != "train" and getattr(job.spec.data, split) is None:
            continue
        path = layout.shard_summary(split, index, count)
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        if fingerprint is not None and stored.get("fingerprint") != fingerprint:
            return None
        splits[split] = SplitStats.from_dict(stored)
    summary = summarize(index, count, None, splits)
    return summary.model_copy(update={"fingerprint": fingerprint}) if fingerprint else summary
