"""The training stage's test inputs: toy task pairs, records in the generation stage's format, a job
for the tiny models, and the `distillery` CLI run as a stage pod would run it (tests/stages)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from distillery.api import DistillationJob
from distillery.storage import Layout

REPO = Path(__file__).resolve().parents[2]


TOY_LR = 3e-3  # a random 1-layer student learns the toy task in a few dozen updates at this rate


def toy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    from make_tiny_models import task_examples  # hack/ is on sys.path (tests/conftest.py)

    return task_examples(random.Random(seed), n)


def write_records(root: Path, job: str, split: str, records: list[dict]) -> None:
    directory = Layout(root, job).generated(split)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "shard-00000-of-00001.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def answer_records(pairs: list[tuple[str, str]], split: str) -> list[dict]:
    return [
        {
            "id": str(i),
            "split": split,
            "messages": [{"role": "user", "content": prompt}],
            "response": answer,
            "finish_reason": "stop",
            "teacher_model": "teacher",
            "reference": answer,
            "logprobs": None,
        }
        for i, (prompt, answer) in enumerate(pairs)
    ]


def make_job(name: str, student: Path, teacher: Path, **training) -> DistillationJob:
    generation = {"topLogprobs": 5} if training.get("method") == "kd" else {}
    return DistillationJob.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "teacher": {"model": str(teacher)},
                "student": {"model": str(student)},
                "data": {"taskType": "qa", "train": "train.jsonl", "validation": "validation.jsonl"},
                # The toy pairs repeat by design (a small task space): train on every one of them.
                "generation": {**generation, "filters": {"dedup": False}},
                "training": {
                    "learningRate": TOY_LR,
                    "batchSize": 16,
                    "epochs": 3,
                    "warmupRatio": 0.1,
                    "maxSeqLength": 128,
                    **training,
                },
            },
        }
    )


def run_cli(arguments: list[str], termination: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "DISTILLERY_TERMINATION_LOG": str(termination)}
    return subprocess.run(
        [sys.executable, "-m", "distillery", *arguments], env=env, capture_output=True, text=True, timeout=600
    )
