"""A generation shard's split summaries (`shard-K-of-N.summary.json`): written by generation when a split
of a shard is complete, read back by generation's resume, by evaluation (what was kept out of the
teacher data) and by `distillery run` (which shards are done), and summed into the shard's summary.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distillery.contract.summaries import GenerateSummary, SplitCounts
from distillery.storage import SPLITS

if TYPE_CHECKING:
    from distillery.api import DistillationJob
    from distillery.storage import Layout

ERROR_SAMPLES = 3  # distinct error messages kept for the summary


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
