#!/usr/bin/env python3
"""Generation tokens/s with 1 and 2 teacher replicas: the generation stage's own client (`generate_shard`,
round robin per request over the replicas) against 1, then 2, vLLM CPU servers of the same model.

    python hack/bench_teacher_replicas.py [--model-dir DIR] [--prompts 256] [--concurrency 32]
                                          [--max-tokens 32] [--replicas 1,2]

The replicas listen on one port at 127.0.0.2, 127.0.0.3, ... and the client resolves a stand-in for the
job's headless Service to them (tests/support/replicas.py), as in a cluster. Without --model-dir it makes
the tiny random teacher (hack/make_tiny_models.py; random weights never stop early, so every answer is
--max-tokens long). Each run starts with a warm-up shard, then one measured shard; it prints output
tokens/s, each replica's share of the requests (from its own vllm:request_success_total) and the load.

On a machine with few cores the replicas share them: two CPU servers on 2 cores compute no faster than
one, so the 2-replica figure there shows what spreading costs or saves (batching per server, client
overhead), not the scaling; on GPUs each replica brings its own GPUs and the figure scales with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))


def job_for(prompts: int, concurrency: int, max_tokens: int, work: Path):
    from distillery.api import DistillationJob

    work.mkdir(parents=True, exist_ok=True)
    with open(work / "prompts.jsonl", "w") as handle:
        for i in range(prompts):
            handle.write(json.dumps({"id": f"p{i}", "prompt": f"Review {i}: what is the sentiment?"}) + "\n")
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "teacher": {"model": "teacher"},
                "student": {"model": "student"},
                "data": {"taskType": "summarization", "train": "prompts.jsonl", "systemPrompt": ""},
                "generation": {
                    "concurrency": concurrency,
                    "maxTokens": max_tokens,
                    "temperature": 0.0,
                    "minSuccessRatio": 0.0,
                    "filters": {"requireFinished": False, "minResponseChars": 0, "dedup": False},
                },
            },
        }
    )


def shard(job, work: Path, connection) -> tuple[int, float]:
    from distillery.generation.shard import generate_shard

    shutil.rmtree(work / "jobs", ignore_errors=True)
    started = time.perf_counter()
    summary = generate_shard(job, work, 0, connection)
    return summary.output_tokens, time.perf_counter() - started


def measure(model: Path, count: int, args, work: Path) -> dict:
    from tests.fixtures_models import vllm_env
    from tests.support import replicas

    options = {"dtype": "float32", "max_model_len": 512, "extra_args": ["-O0"], "env": vllm_env()}
    with replicas.serve_replicas(model, count, work / "logs", **options) as servers:
        connection = replicas.connection(servers)
        shard(
            job_for(min(args.prompts, 32), args.concurrency, args.max_tokens, work / "warm"),
            work / "warm",
            connection,
        )
        before = [replicas.requests_served(s) for s in servers]
        tokens, seconds = shard(
            job_for(args.prompts, args.concurrency, args.max_tokens, work), work, connection
        )
        served = [replicas.requests_served(s) - b for s, b in zip(servers, before, strict=True)]
    rate = tokens / seconds
    print(
        f"{count} replica{'s' if count > 1 else ''}: {tokens} output tokens in {seconds:.1f}s = {rate:.0f} tok/s; "
        f"requests per replica {served}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    return {
        "replicas": count,
        "output_tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(rate, 1),
        "requests": served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, help="a model vLLM serves (default: the tiny random teacher)"
    )
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--replicas", default="1,2", help="comma-separated replica counts to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        work = Path(tmp)
        model = args.model_dir
        if model is None:
            sys.path.insert(0, str(REPO / "hack"))
            from make_tiny_models import make_tiny_models

            model = make_tiny_models(work / "models", seed=0, pretrain_steps=0)["teacher"]
        results = [measure(model, int(n), args, work / f"r{n}") for n in args.replicas.split(",")]
    print(
        json.dumps(
            {
                "prompts": args.prompts,
                "concurrency": args.concurrency,
                "max_tokens": args.max_tokens,
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
