"""Quality benchmark v3's data: training prompts from public sets other than the held-out benchmarks.

Pure parts of hack/bench_quality_v3.py (tested in tests/unit/test_quality_public.py): the source sets are
MosaicML's Eval Gauntlet copies (github.com/mosaicml/llm-foundry, scripts/eval/local_data/), one JSON object
a line, `{"query", "choices", "gold"}`, the same format as the held-out ARC / PIQA copies
(hack/public_benchmarks.py). Each source question becomes a `qa` record whose prompt lists the choices and
whose reference is the gold choice's text: the teacher answers these prompts (the training data), and a
held-out part of them is the task's own validation (scored by the evaluation stage as qa: the reference
named in the answer's first line). Before the teacher sees them, training prompts are run through the
project's own decontamination (`distillery.generation.decontamination`) against every held-out benchmark
document, and the removed count is reported.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Source name -> its file under the data directory (the same layout as public_benchmarks.TASKS).
SOURCES = {
    "commonsense_qa": "commonsense_qa/commonsense_qa.jsonl",
    "openbook_qa": "openbook_qa/openbook_qa.jsonl",
}
# The user message the teacher and every model get (data.promptTemplate); {prompt} is the record's prompt.
PROMPT_TEMPLATE = "{prompt}\nAnswer with one of the choices."

# CommonsenseQA's Gauntlet copy writes its choices into the query as lettered lines ("A. bank") and keeps
# only the letters in "choices"; OpenBookQA's keeps the texts in "choices" and the stem in "query".
_LETTERED = re.compile(r"^([A-Z])\.\s*(.+)$")


@dataclass(frozen=True)
class Question:
    question: str
    choices: list[str]
    gold: int

    @property
    def answer(self) -> str:
        return self.choices[self.gold]

    def prompt(self) -> str:
        """The record's prompt: the question and its choices, one a line."""
        return self.question + "\nChoices:\n" + "\n".join(f"- {c}" for c in self.choices)


def parse_doc(doc: dict, where: str = "document") -> Question:
    """One Gauntlet multiple-choice document as a question with choice texts; lettered queries are unpacked."""
    for key in ("query", "choices", "gold"):
        if key not in doc:
            raise ValueError(
                f"{where}: no {key!r} field; expected a Gauntlet document with query, choices, gold"
            )
    query, choices, gold = str(doc["query"]), [str(c) for c in doc["choices"]], doc["gold"]
    if not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise ValueError(f"{where}: gold is {gold!r}; expected an index into its {len(choices)} choices")
    text = query.strip()
    if text.endswith("Answer:"):
        text = text[: -len("Answer:")].rstrip()
    if "\nChoices:\n" in text:
        text, listed = text.split("\nChoices:\n", 1)
        by_letter = {}
        for line in listed.splitlines():
            found = _LETTERED.match(line.strip())
            if found:
                by_letter[found.group(1)] = found.group(2).strip()
        missing = [c for c in choices if c not in by_letter]
        if missing:
            raise ValueError(f"{where}: choices {missing} are not listed in its query")
        choices = [by_letter[c] for c in choices]
    if text.startswith("Question:"):
        text = text[len("Question:") :].strip()
    if not text:
        raise ValueError(f"{where}: empty question")
    return Question(text, choices, gold)


def records(source: str, lines: Iterable[str]) -> list[dict]:
    """A source file's documents as qa records: `id`, `prompt`, `answer` (the gold choice's text), `source`."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        question = parse_doc(json.loads(line), f"{source} line {number}")
        out.append(
            {
                "id": f"{source}-{number:05d}",
                "prompt": question.prompt(),
                "answer": question.answer,
                "source": source,
            }
        )
    return out


def split(pool: Sequence[dict], validation: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training prompts, validation prompts): a seeded shuffle of the pool, the first `validation` held out.
    No prompt text is in both (a repeated question stays on the validation side)."""
    if not 0 < validation < len(pool):
        raise ValueError(
            f"validation must be between 1 and {len(pool) - 1} (the pool's size - 1), got {validation}"
        )
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    held = shuffled[:validation]
    seen = {r["prompt"] for r in held}
    return [r for r in shuffled[validation:] if r["prompt"] not in seen], held


def benchmark_references(lines: Iterable[str]) -> list[dict]:
    """Held-out benchmark documents as records whose `prompt` is everything a model reads of them: the query
    and every choice (so a training prompt that quotes a choice is caught as well as one that quotes the
    question)."""
    out = []
    for line in lines:
        if line.strip():
            doc = json.loads(line)
            out.append({"prompt": "\n".join([str(doc["query"]), *map(str, doc["choices"])])})
    return out


def decontaminate(
    train: Sequence[dict], references: dict[str, Sequence[dict]], ngram_size: int, max_overlap: float = 0.0
) -> tuple[list[dict], dict[str, int]]:
    """The training records the project's decontamination keeps against every reference set, and how many
    each set removed (a record overlapping two sets counts for both; `total` counts it once)."""
    from distillery.api import DataSpec
    from distillery.generation.decontamination import Decontaminator

    data = DataSpec.model_validate(
        {
            "taskType": "qa",
            "train": "train.jsonl",
            "decontamination": {"ngramSize": ngram_size, "maxOverlap": max_overlap},
        }
    )
    checks = {name: Decontaminator(data, refs) for name, refs in references.items()}
    removed = dict.fromkeys(checks, 0)
    kept = []
    for record in train:
        hits = [name for name, check in checks.items() if not check.keep(record)]
        for name in hits:
            removed[name] += 1
        if not hits:
            kept.append(record)
    return kept, {**removed, "total": len(train) - len(kept)}


def prompts_for(records_offline: int, available: int, margin: float = 1.15, extra: int = 32) -> int:
    """Prompts to send the teacher for `records_offline` kept answers (a margin for the answers the filters
    drop: empty, duplicate); refuses a pool too small for the budget."""
    wanted = int(records_offline * margin) + extra
    if available < records_offline:
        raise ValueError(
            f"{available} training prompts after decontamination; the budget needs {records_offline} answers "
            "(lower --records-offline or add a source)"
        )
    return min(wanted, available)
