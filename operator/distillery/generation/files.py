"""A shard's files and their recovery: counts per split, torn tails cut, partly written prompts redone.

Per split, `<shard>.jsonl.partial` and `<shard>.rejected.jsonl.partial` grow while the shard
runs (one write per input record once it is answered); they are renamed when the split is
complete and its `<shard>.summary.json` is written last. A restarted shard cuts a torn last
line, drops any record whose samples were only partly written, and skips every input line
already in either file: nothing is lost or duplicated.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from distillery import atomic
from distillery.contract.records import Record, RejectedRecord, problem
from distillery.contract.shards import SplitStats
from distillery.contract.summaries import FailureReason, StageFailed
from distillery.generation.filters import dedup_key
from distillery.storage import FINGERPRINT, Layout, shard_of

PARTIAL = ".partial"


class CorruptShardFile(StageFailed):
    """A shard's own file cannot be resumed from; the message says which file to delete."""

    reason = FailureReason.invalid_input


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
        atomic.write_text(own, fingerprint + "\n")
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
    with open(path, encoding="utf-8") as source, atomic.replacing(path) as target:
        for line in source:
            if Record.from_line(line).line not in drop:
                target.write(line)


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
