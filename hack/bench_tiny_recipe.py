#!/usr/bin/env python3
"""How much the tiny example's retention depends on its teacher and on the training seed.

    python hack/bench_tiny_recipe.py [--teachers 0,1,2,3] [--seeds 42,7] [--set epochs=60 ...]

The tiny teacher is pretrained for about a minute from a seed (hack/make_tiny_models.py); another seed,
or the same seed on another CPU (other float rounding), is another teacher, with other answers for
the student to learn. For each teacher seed this makes the models and the example's prompts
(hack/prepare_tiny.py's writer) under build/bench-recipe/t<seed>, has the teacher answer every
prompt (Hugging Face greedy decoding, as generation's temperature 0), trains the student with
examples/tiny.yaml's training settings (the training stage's own function, `--set` overriding
fields of spec.training) once per training seed, and scores teacher and student on the
validation prompts with the evaluation's exact-match scorer. Greedy decoding with transformers
stands in for vLLM so that a row takes seconds instead of three server starts; on one teacher it
gave the same retention as `distillery run` for the three seeds compared (0.850, 0.875, 0.975).
Prints one line per teacher and the minimum over all rows last.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "hack"))

from distillery.api import DistillationJob, TaskType  # noqa: E402
from distillery.evaluation.scoring import accuracy  # noqa: E402
from distillery.training.student import train_student  # noqa: E402
from make_tiny_models import TEACHER_LAYERS, make_tiny_models  # noqa: E402
from prepare_tiny import PRETRAIN_STEPS, write_data  # noqa: E402

EXAMPLE = REPO / "examples" / "tiny.yaml"


def greedy_answers(model_dir: Path, prompts: list[str], max_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def prepare_teacher(root: Path, seed: int, max_tokens: int) -> None:
    """Models, prompts and the teacher's records (two shards, as the example's generation writes)."""
    # Kept from an earlier run only when made the same way (a deeper teacher is another teacher).
    stamp = root / "recipe-teacher.json"
    settings = {"seed": seed, "pretrain_steps": PRETRAIN_STEPS, "teacher_layers": TEACHER_LAYERS}
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        return
    shutil.rmtree(root / "jobs", ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        make_tiny_models(root / "models", seed=seed, pretrain_steps=PRETRAIN_STEPS)
    write_data(root)
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (root / "data" / f"{split}.jsonl").read_text().splitlines()]
        answers = greedy_answers(root / "models" / "teacher", [r["prompt"] for r in rows], max_tokens)
        out = root / "jobs" / "tiny" / "generated" / split
        out.mkdir(parents=True, exist_ok=True)
        for shard in range(2):
            lines = [
                json.dumps(
                    {
                        "id": row["id"],
                        "line": number,
                        "messages": [{"role": "user", "content": row["prompt"]}],
                        "response": answer,
                    }
                )
                + "\n"
                for number, (row, answer) in enumerate(zip(rows, answers, strict=True), 1)
                if number % 2 == shard
            ]
            (out / f"shard-{shard:05d}-of-00002.jsonl").write_text("".join(lines))
    stamp.write_text(json.dumps(settings) + "\n")


def parse_value(text: str) -> object:
    return yaml.safe_load(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default="0,1,2,3", help="teacher seeds (default 0,1,2,3)")
    parser.add_argument("--seeds", default="42,7", help="training seeds (default 42,7; 42 is the default)")
    parser.add_argument(
        "--set", action="append", default=[], help="spec.training field=value, e.g. epochs=60"
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-recipe")
    args = parser.parse_args()
    example = yaml.safe_load(EXAMPLE.read_text())
    overrides = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    example["spec"]["training"].update(overrides)
    max_tokens = example["spec"]["generation"]["maxTokens"]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"training: {json.dumps(example['spec']['training'])}")
    worst = None
    for teacher_seed in (int(s) for s in args.teachers.split(",")):
        root = args.out / f"t{teacher_seed}"
        prepare_teacher(root, teacher_seed, max_tokens)
        validation = [
            json.loads(line) for line in (root / "data" / "validation.jsonl").read_text().splitlines()
        ]
        prompts, references = [r["prompt"] for r in validation], [r["answer"] for r in validation]
        teacher = accuracy(
            TaskType.qa, greedy_answers(root / "models" / "teacher", prompts, max_tokens), references, []
        )
        retentions = []
        for seed in seeds:
            spec = copy.deepcopy(example)
            spec["spec"]["storage"] = {"path": str(root)}
            spec["spec"]["training"]["seed"] = seed
            with contextlib.redirect_stdout(io.StringIO()):
                train_student(DistillationJob.model_validate(spec), root)
            student = greedy_answers(root / "jobs" / "tiny" / "student", prompts, max_tokens)
            retentions.append(accuracy(TaskType.qa, student, references, []) / teacher)
        worst = min([*retentions, *([worst] if worst is not None else [])])
        shown = ", ".join(f"seed {s}: {r:.3f}" for s, r in zip(seeds, retentions, strict=True))
        print(f"teacher seed {teacher_seed}: teacher accuracy {teacher:.3f}; retention {shown}", flush=True)
    print(f"lowest retention: {worst:.3f} (gate: {example['spec']['evaluation']['gate']['minRetention']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
