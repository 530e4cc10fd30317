"""Where every stage reads and writes on the job's storage: the one map of paths.

Stages never talk to each other or to the Kubernetes API; they meet here. The
root is the storage mount (`/data` in pods, `storage.path` locally). Inputs named
in the spec are relative to it; everything a job writes lives under
`jobs/<job name>/`, so several jobs can share one volume.

Generated record format (one JSON object per line, `generated/<split>/shard-K-of-N.jsonl`):

    id             input record id (+ "#<sample>" when samplesPerPrompt > 1)
    split          "train" or "validation"
    messages       the chat messages sent to the teacher (system + user, or a conversation)
    response       the teacher's answer (the assistant turn the student learns)
    finish_reason  "stop" / "length" as the server reported it
    usage          {"prompt_tokens": int, "completion_tokens": int}
    teacher_model  the model name that answered
    reference      the input's reference answer/label, or null
    latency_ms     wall time of the request that produced it
    logprobs       null, or one entry per response token:
                   {"token_id": int, "logprob": float, "top": [[token_id, logprob], ...]}
    line           1-based line of the input record in its JSONL file (what resume keys on)
    sample         0-based sample number of this response (< samplesPerPrompt)

Rejected records (`shard-K-of-N.rejected.jsonl`) have the same fields plus
`reject_reason` (truncated, too_short, too_long, wrong_answer, duplicate) and
`reject_detail` (for a person). A split of a shard is complete exactly when its
`shard-K-of-N.summary.json` exists; until then its files end in `.partial`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distillery.api import DistillationJob

SPLITS = ("train", "validation")


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


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
        return self.generated(split) / f"{shard_name(index, count)}.jsonl"

    def shard_rejected(self, split: str, index: int, count: int) -> Path:
        return self.generated(split) / f"{shard_name(index, count)}.rejected.jsonl"

    def shard_summary(self, split: str, index: int, count: int) -> Path:
        return self.generated(split) / f"{shard_name(index, count)}.summary.json"

    def shard_fingerprint(self, split: str, index: int, count: int) -> Path:
        """The generation fingerprint a shard's files were made for (written before its first record)."""
        return self.generated(split) / f"{shard_name(index, count)}.fingerprint"

    def shard_set(self, split: str, count: int) -> list[Path]:
        """The record files of the current shard set (`generation.shards` = count); any other set is stale."""
        directory = self.generated(split)
        if not directory.is_dir():
            return []
        return sorted(directory.glob(f"shard-?????-of-{count:05d}.jsonl"))

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
    for path in sorted(layout.generated(split).glob(f"shard-?????-of-{count:05d}.summary.json")):
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
    candidate = Path(value) if Path(value).is_absolute() else root / value
    return str(candidate) if candidate.exists() else value


def write_json_atomic(path: Path, value: Any, sort_keys: bool = True) -> None:
    """Write JSON so a reader sees the old file or the whole new one, never a torn one (tmp + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=sort_keys)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
