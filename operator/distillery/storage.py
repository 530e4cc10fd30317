"""Where every stage reads and writes on the job's storage: the one map of paths.

Stages never talk to each other or to the Kubernetes API; they meet here. The
root is the storage mount (`/data` in pods, `storage.path` locally). Inputs named
in the spec are relative to it; everything a job writes lives under
`jobs/<job name>/`, so several jobs can share one volume.

The teacher's records (`generated/<split>/shard-K-of-N.jsonl`, and `.rejected.jsonl`) are
`contract.records.Record`; every shard file is named by `shard_name` and found by `shard_files`.
A split of a shard is complete exactly when its `shard-K-of-N.summary.json` exists; until then
its files end in `.partial`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillery.api import DistillationJob

SPLITS = ("train", "validation")


# The files of one shard of a split, by their suffix after `shard-K-of-N`.
RECORDS = ".jsonl"  # accepted records
REJECTED = ".rejected.jsonl"  # records the filters rejected
ANSWERS = "*.jsonl"  # both: every answer the teacher gave
SUMMARY = ".summary.json"  # written last, when the split of the shard is complete
FINGERPRINT = ".fingerprint"  # the generation fingerprint its files were made for

_SHARD_FILE = re.compile(r"^(shard-\d{5}-of-(\d{5}))\.")


def shard_name(index: int | None, count: int | None, suffix: str = "") -> str:
    """A shard's file name (`shard-K-of-N` + suffix); with None for K or N, the glob of every one."""
    shard = "?????" if index is None else f"{index:05d}"
    shards = "?????" if count is None else f"{count:05d}"
    return f"shard-{shard}-of-{shards}{suffix}"


def shard_files(directory: Path, count: int | None, suffix: str = RECORDS) -> list[Path]:
    """The files with `suffix` of a shard set (`generation.shards` = count; None: of any set), sorted.
    Files of another shard set are stale: generation moves them aside, readers skip them."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(shard_name(None, count, suffix)))


def shard_of(file_name: str) -> tuple[str, int] | None:
    """(`shard-K-of-N`, N) of a shard file's name; None for any other file."""
    match = _SHARD_FILE.match(file_name)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Layout:
    root: Path
    job_name: str

    @classmethod
    def of(cls, job: DistillationJob, root: Path | str) -> Layout:
        """The layout of a job's storage mounted (or kept locally) at `root`."""
        return cls(Path(root), job.metadata.name or "job")

    def input(self, relative: str) -> Path:
        """A path on the storage (an object-store URI is resolved by `datasource.resolve` instead)."""
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    @property
    def work(self) -> Path:
        return self.root / "jobs" / self.job_name

    def generated(self, split: str) -> Path:
        return self.work / "generated" / split

    def shard_records(self, split: str, index: int, count: int) -> Path:
        return self.generated(split) / shard_name(index, count, RECORDS)

    def shard_rejected(self, split: str, index: int, count: int) -> Path:
        return self.generated(split) / shard_name(index, count, REJECTED)

    def shard_summary(self, split: str, index: int, count: int) -> Path:
        return self.generated(split) / shard_name(index, count, SUMMARY)

    def shard_fingerprint(self, split: str, index: int, count: int) -> Path:
        """The generation fingerprint a shard's files were made for (written before its first record)."""
        return self.generated(split) / shard_name(index, count, FINGERPRINT)

    def shard_files(self, split: str, count: int, suffix: str = RECORDS) -> list[Path]:
        """A split's files with `suffix` of the current shard set (`generation.shards` = count)."""
        return shard_files(self.generated(split), count, suffix)

    @property
    def superseded(self) -> Path:
        """Results made for another fingerprint, moved aside (kept, never read) when a stage starts over."""
        return self.work / "superseded"

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints"

    @property
    def student(self) -> Path:
        return self.work / "student"

    @property
    def reports(self) -> Path:
        return self.work / "reports"

    @property
    def training_report(self) -> Path:
        return self.reports / "training.json"

    @property
    def evaluation_report(self) -> Path:
        return self.reports / "evaluation.json"

    @property
    def state(self) -> Path:
        """`distillery run`'s own bookkeeping (the cluster keeps it in the job's status instead)."""
        return self.work / "state"

    def stage_done(self, stage: str) -> Path:
        """Marker a completed stage leaves (its summary); the local runner skips stages that have one."""
        return self.state / f"{stage}.done.json"

    def stage_summary(self, stage: str, shard: int | None = None) -> Path:
        """Where a stage process started by `distillery run` writes its summary (its termination message)."""
        return self.state / (
            f"{stage}-{shard}.summary.json" if shard is not None else f"{stage}.summary.json"
        )


def record_key(messages: list[dict], response: str) -> int:
    """8-byte hash of a record's (prompt, response) pair: what exact dedup compares, within a shard
    (generation) and across shards (training)."""
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True) + "\x00" + response
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def generated_fingerprint(layout: Layout, split: str, count: int) -> str | None:
    """The generation fingerprint the current shard set of a split was made for; None when its summaries
    name none (records written by hand or by an older version). Raises ValueError when they disagree."""
    found = set()
    for path in layout.shard_files(split, count, SUMMARY):
        found.add(json.loads(path.read_text()).get("fingerprint"))
    found.discard(None)
    if len(found) > 1:
        raise ValueError(
            f"the shards under {layout.generated(split)} were made for different specs or inputs "
            f"(fingerprints {sorted(found)}); run generation again"
        )
    return found.pop() if found else None


def resolve_model(root: Path, value: str) -> str:
    """A model reference: a directory on the job's storage when one exists there, else a hub id as given.

    Pods run with the storage mount as their working directory, so the same
    relative value means the same directory to vLLM, the trainer and the evaluator.
    """
    path = Path(value).expanduser()  # `~/models/x` on a laptop; no `~` in a pod's paths
    candidate = path if path.is_absolute() else root / value
    return str(candidate) if candidate.exists() else value
