#!/usr/bin/env python3
"""Write what `distillery run examples/tiny.yaml` needs into its storage (build/tiny): offline, in seconds.

    python hack/prepare_tiny.py [--out build/tiny] [--train 480] [--validation 40] [--pretrain-steps 600]

Creates under OUT:

* ``models/teacher``, ``models/student``: tiny Llamas from hack/make_tiny_models.py. The teacher
  is pretrained on the tiny task (sentiment of a short review, single-digit sums), so its
  answers are mostly right; the student has one layer and random weights, so distillation
  has something to show.
* ``data/train.jsonl``, ``data/validation.jsonl``: prompts of that task as qa records
  (``id``, ``prompt``, ``answer``), drawn with fixed seeds, validation from a separate stream.

Models are kept when they exist with the same settings (``--force`` remakes them); the data
is rewritten every time (it is deterministic).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))

from make_tiny_models import TEACHER_LAYERS, make_tiny_models, task_examples  # noqa: E402

DEFAULT_OUT = REPO / "build" / "tiny"
TRAIN_SEED, VALIDATION_SEED = 1, 2
# 480 training prompts cover ~90 of the 100 single-digit sums (240 covered ~70): a 1-layer student
# cannot work out a sum it never saw, so fewer leave its retention at the mercy of the draw.
TRAIN_PROMPTS, VALIDATION_PROMPTS, PRETRAIN_STEPS = 480, 40, 600


def write_records(path: Path, pairs: list[tuple[str, str]], prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for number, (prompt, answer) in enumerate(pairs):
            handle.write(
                json.dumps({"id": f"{prefix}-{number:04d}", "prompt": prompt, "answer": answer}) + "\n"
            )
    tmp.replace(path)


def prepare(out: Path, train: int, validation: int, pretrain_steps: int, seed: int, force: bool) -> dict:
    out = Path(out)
    models = out / "models"
    # The models are remade when any of what decides their weights changes (a deeper teacher, too).
    settings = {"seed": seed, "pretrain_steps": pretrain_steps, "teacher_layers": TEACHER_LAYERS}
    stamp = models / "prepare-tiny.json"
    if force or not stamp.exists() or json.loads(stamp.read_text()) != settings:
        started = time.monotonic()
        print(f"prepare-tiny: making the tiny models in {models} (teacher pretrained {pretrain_steps} steps)")
        make_tiny_models(models, seed=seed, pretrain_steps=pretrain_steps)
        stamp.write_text(json.dumps(settings) + "\n")
        print(f"prepare-tiny: models ready in {time.monotonic() - started:.0f}s")
    else:
        print(f"prepare-tiny: models already in {models}")
    write_data(out, train, validation)
    print(f"prepare-tiny: {train} training and {validation} validation prompts in {out / 'data'}")
    return {"teacher": models / "teacher", "student": models / "student", "data": out / "data"}


def write_data(out: Path, train: int = TRAIN_PROMPTS, validation: int = VALIDATION_PROMPTS) -> None:
    """data/train.jsonl and data/validation.jsonl: the tiny task's prompts, from two fixed seeds."""
    out = Path(out)
    write_records(out / "data" / "train.jsonl", task_examples(random.Random(TRAIN_SEED), train), "train")
    write_records(
        out / "data" / "validation.jsonl", task_examples(random.Random(VALIDATION_SEED), validation), "val"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"storage directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--train", type=int, default=TRAIN_PROMPTS, help=f"training prompts (default: {TRAIN_PROMPTS})"
    )
    parser.add_argument(
        "--validation",
        type=int,
        default=VALIDATION_PROMPTS,
        help=f"validation prompts (default: {VALIDATION_PROMPTS})",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=PRETRAIN_STEPS,
        help=f"teacher pretraining steps (default: {PRETRAIN_STEPS})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="remake the models even when they exist")
    args = parser.parse_args(argv)
    prepare(args.out, args.train, args.validation, args.pretrain_steps, args.seed, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
