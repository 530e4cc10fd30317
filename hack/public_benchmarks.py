"""Pure parts of hack/bench_public_scores.py: the published figures it is compared with, the fixed
subset of each task, the offline lm-eval task YAML, and the result table. No I/O beyond what a caller
passes in, so they are unit-tested (tests/unit/test_public_benchmarks.py).

The task data is MosaicML's Eval Gauntlet copy of each set (github.com/mosaicml/llm-foundry,
scripts/eval/local_data/): one JSON object a line, {"query": "Question: ...", "choices": [...], "gold": i},
in the order of the original split. It is not committed here (data fetched from GitHub stays out of the
repository); /work/shared/data/<task>/SOURCE.txt names the repo, path, commit and licence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Where the published figures come from (docs/benchmarks-public.md quotes them).
LMEVAL_SOURCE = (
    "lm-eval 0-shot, 'Baseline' column = HuggingFaceTB/SmolLM2-135M-Instruct, in the model card of "
    "huggingface.co/lldois/SmolLM2-135M-Reasoning-SLERP-Champion (a third-party run; HF's own card uses lighteval)"
)
CARD_SOURCE = (
    "huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct model card, 'Instruction model' table "
    "(lighteval, zero-shot unless stated); the SmolLM2 paper is arXiv:2502.02737"
)


@dataclass(frozen=True)
class PublicTask:
    """One lm-eval multiple-choice task read from a local Gauntlet-format JSONL file.

    Args:
        name: our lm-eval task name (the upstream name + "_local", so it never shadows the hub task).
        upstream: the lm-eval task whose prompt it reproduces.
        data_file: the JSONL path relative to the data directory.
        split: the upstream split the file holds.
        prompt: lm-eval's doc_to_text over the Gauntlet fields ("query" already holds "Question: ...").
        metric: the metric the published figure uses (acc or acc_norm).
        published: that figure, in percent.
    """

    name: str
    upstream: str
    data_file: str
    split: str
    prompt: str
    metric: str
    published: float


# PIQA's Gauntlet query already ends with a newline ("Question: ...\n"); ARC's does not.
TASKS: dict[str, PublicTask] = {
    t.upstream: t
    for t in (
        PublicTask(
            "arc_easy_local",
            "arc_easy",
            "arc_easy/arc_easy.jsonl",
            "test",
            "{{query}}\nAnswer:",
            "acc",
            54.12,
        ),
        PublicTask(
            "arc_challenge_local",
            "arc_challenge",
            "arc_challenge/arc_challenge.jsonl",
            "test",
            "{{query}}\nAnswer:",
            "acc_norm",
            27.73,
        ),
        PublicTask(
            "piqa_local", "piqa", "piqa/piqa.jsonl", "validation", "{{query}}Answer:", "acc_norm", 66.92
        ),
    )
}

# Figures with no local data here (HellaSwag's 11 MB validation set and IFEval need data or NLTK's
# punkt that could not be brought): quoted in the doc, not run.
NOT_RUN = {"hellaswag": ("acc_norm", 42.99), "ifeval": ("prompt/inst average, lighteval", 29.9)}


def subset_indices(total: int, n: int, seed: int) -> list[int]:
    """The documents a run scores: all of them when n <= 0 or n >= total, else a seeded sample of n,
    in file order (so the same n and seed always pick the same documents)."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if n <= 0 or n >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), n))


def pick(lines: Sequence[str], n: int, seed: int) -> list[str]:
    """The non-empty lines of a JSONL file that subset_indices selects."""
    docs = [line for line in lines if line.strip()]
    return [docs[i] for i in subset_indices(len(docs), n, seed)]


def task_config(task: PublicTask, data_path: str) -> dict:
    """An lm-eval task YAML (as a dict) that reads `data_path` offline with the upstream prompt.

    Given a bare file name, the directory holding the YAML and that file is what `evaluation.benchmarkTasks`
    takes (the evaluation stage loads tasks from inside it), and lm-eval reads it when run from there."""
    return {
        "task": task.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_path}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": task.prompt,
        "doc_to_target": "gold",
        "doc_to_choice": "{{choices}}",
        "metric_list": [
            {"metric": metric, "aggregation": "mean", "higher_is_better": True}
            for metric in ("acc", "acc_norm")
        ],
        "metadata": {"version": 1.0, "upstream": task.upstream, "split": task.split},
    }


def binomial_stderr(p: float, n: int) -> float:
    """sqrt(p(1-p)/n): the sampling error of an accuracy p measured on n documents."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a fraction in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / n)


@dataclass(frozen=True)
class Row:
    backend: str
    task: str
    metric: str
    n: int
    ours: float  # a fraction in [0, 1], as lm-eval reports it

    @property
    def published(self) -> float:
        return TASKS[self.task].published

    @property
    def gap(self) -> float:
        """Ours minus published, in points."""
        return 100.0 * self.ours - self.published


def rows_from_results(backend: str, results: dict, counts: dict[str, int]) -> list[Row]:
    """One row per task from lm-eval's `results` section ({task name: {"acc,none": x, ...}}), with the
    metric each task is published with. `counts` maps upstream task -> documents scored."""
    rows = []
    for upstream, n in counts.items():
        task = TASKS[upstream]
        key = f"{task.metric},none"
        scores = results.get(task.name)
        if scores is None or key not in scores:
            raise KeyError(f"lm-eval results have no {key!r} for task {task.name!r}: {sorted(results)}")
        rows.append(Row(backend, upstream, task.metric, n, float(scores[key])))
    return rows


def table(rows: Iterable[Row]) -> str:
    """A Markdown table: backend, task, metric, N, ours, stderr, published, gap (points)."""
    lines = [
        "| backend | task | metric | N | ours | stderr | published | gap |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        se = 100.0 * binomial_stderr(r.ours, r.n)
        lines.append(
            f"| {r.backend} | {r.task} | {r.metric} | {r.n} | {100.0 * r.ours:.2f} | {se:.2f} "
            f"| {r.published:.2f} | {r.gap:+.2f} |"
        )
    return "\n".join(lines)
