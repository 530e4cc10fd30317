#!/usr/bin/env python3
"""Benchmark the generation stage against a plain async OpenAI client, and its memory vs input size.

    python hack/bench_generate.py [--base-url URL --model NAME | --model-dir DIR]
                                  [--prompts 512] [--concurrency 64] [--max-tokens 64] [--rounds 2]
                                  [--memory-sizes 1000,100000]

1. Throughput: the same prompts, the same vLLM server, the same concurrency, greedy decoding
   (so both clients get identical answers and token counts). Rounds alternate
   plain client / stage after one warm-up of each, and the best and median rounds are compared:
   output tokens/s of `generate_shard` (the whole stage: input pass, teacher check, smoke test,
   filters, JSONL writes) / output tokens/s of `openai.AsyncOpenAI` + a semaphore.
   Also the client's CPU time per request (this process only; vLLM runs in another), which
   a busy machine distorts far less than wall-clock throughput.
   Without --base-url it makes the tiny random teacher (hack/make_tiny_models.py; random
   weights never stop early, so every answer is --max-tokens long) and serves it with vLLM.
2. Memory: `distillery generate` runs as a child process over N prompts for each N in
   --memory-sizes against a stub OpenAI server that answers instantly (100k real generations
   would take far too long on a small CPU); its peak RSS comes from wait4().

Prints one line per measurement and a JSON summary last. Needs `openai` (the dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "teacher",
    "writes",
    "answers",
    "for",
    "student",
]


def prompts(count: int) -> list[dict]:
    """Distinct short review prompts (~32 tokens each), deterministic."""
    out = []
    for i in range(count):
        words = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12))
        out.append({"id": f"p{i}", "prompt": f"Review {i}: {words}. What is the sentiment of this review?"})
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def job_for(data_file: str, concurrency: int, max_tokens: int, dedup: bool = True):
    from distillery.api import DistillationJob

    return DistillationJob.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "teacher": {"model": "teacher"},
                "student": {"model": "student"},
                "data": {
                    "taskType": "summarization",
                    "train": data_file,
                    "promptTemplate": "{prompt}",
                    "systemPrompt": "",
                },
                "generation": {
                    "concurrency": concurrency,
                    "maxTokens": max_tokens,
                    "temperature": 0.0,
                    "minSuccessRatio": 0.0,
                    "filters": {"requireFinished": False, "minResponseChars": 0, "dedup": dedup},
                },
            },
        }
    )


# ------------------------------------------------------------------ throughput


async def plain_client(base_url: str, model: str, records: list[dict], concurrency: int, max_tokens: int):
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(record: dict) -> None:
        nonlocal tokens
        async with slots:
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": record["prompt"]}],
                max_tokens=max_tokens,
                temperature=0.0,
                top_p=1.0,
            )
            tokens += response.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in records))
    elapsed = time.perf_counter() - started
    await client.close()
    return tokens, elapsed


def stage_run(base_url: str, model: str, work: Path, concurrency: int, max_tokens: int):
    import shutil

    from distillery.generation.shard import generate_shard
    from distillery.serving.client import TeacherConnection

    shutil.rmtree(work / "jobs", ignore_errors=True)
    job = job_for("prompts.jsonl", concurrency, max_tokens)
    started = time.perf_counter()
    summary = generate_shard(job, work, 0, TeacherConnection(base_url, model))
    return summary.output_tokens, time.perf_counter() - started


def throughput(base_url: str, model: str, args, work: Path) -> dict:
    import statistics

    records = prompts(args.prompts)
    write_jsonl(work / "prompts.jsonl", records)
    rates: dict[str, list[float]] = {"plain": [], "stage": []}
    cpu: dict[str, list[float]] = {"plain": [], "stage": []}
    for round_ in range(args.rounds + 1):  # round 0 warms up the server (and its prefix cache)
        for name in ("plain", "stage"):
            cpu_started = time.process_time()  # this process only: the client's CPU, not vLLM's
            if name == "plain":
                tokens, seconds = asyncio.run(
                    plain_client(base_url, model, records, args.concurrency, args.max_tokens)
                )
            else:
                tokens, seconds = stage_run(base_url, model, work, args.concurrency, args.max_tokens)
            cpu_ms = (time.process_time() - cpu_started) * 1000 / len(records)
            rate = tokens / seconds
            label = "warm-up" if round_ == 0 else f"round {round_}"
            print(
                f"{label:8} {name:5}: {tokens} output tokens in {seconds:.2f}s = {rate:.0f} tok/s, "
                f"client CPU {cpu_ms:.2f} ms/request (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if round_:
                rates[name].append(rate)
                cpu[name].append(cpu_ms)
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        f"throughput (best round): stage {best['stage']:.0f} tok/s vs plain AsyncOpenAI {best['plain']:.0f} tok/s"
        f" = {best['stage'] / best['plain']:.3f}x; median rounds: {median['stage'] / median['plain']:.3f}x; "
        f"client CPU per request: stage {cpu_median['stage']:.2f} ms vs plain {cpu_median['plain']:.2f} ms"
    )
    return {
        "plain_tok_s": round(best["plain"], 1),
        "stage_tok_s": round(best["stage"], 1),
        "ratio_best": round(best["stage"] / best["plain"], 3),
        "ratio_median": round(median["stage"] / median["plain"], 3),
        "client_cpu_ms_per_request": {k: round(v, 3) for k, v in cpu_median.items()},
        "rounds": {k: [round(v, 1) for v in values] for k, values in rates.items()},
    }


# ------------------------------------------------------------------ memory


class StubServer:
    """An OpenAI chat server that answers every request at once (keep-alive HTTP/1.1), in a thread."""

    BODY = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "teacher",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "positive, and a fine one"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 32, "completion_tokens": 6, "total_tokens": 38},
        }
    ).encode()
    MODELS = json.dumps({"object": "list", "data": [{"id": "teacher", "object": "model"}]}).encode()

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                body = self.MODELS if head.startswith(b"GET") else self.BODY
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def watch_peak_rss(process: subprocess.Popen, peak_kib: list[int]) -> None:
    """Follow the child's VmHWM (its peak RSS since exec) until it exits.

    Not wait4()'s ru_maxrss: that counts the parent's memory the child had between fork
    and exec (this process holds torch after making the tiny models).
    """
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib[0] = max(peak_kib[0], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)  # VmHWM is a high-water mark: only growth in the last 50 ms could be missed


def memory(args, work: Path) -> dict:
    from distillery.contract.commands import GenerateCommand

    stub = StubServer()
    out = {}
    for size in args.memory_sizes:
        directory = work / f"mem-{size}"
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl(directory / "prompts.jsonl", prompts(size))
        job = job_for("prompts.jsonl", args.concurrency, args.max_tokens)
        command = GenerateCommand(
            job=job, storage=str(directory), teacher_url=f"http://127.0.0.1:{stub.port}/v1"
        ).argv(entry=(sys.executable, "-m", "distillery"))
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "DISTILLERY_TERMINATION_LOG": "/nonexistent/x",
        }
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        peak_kib = [0]
        watcher = threading.Thread(target=watch_peak_rss, args=(process, peak_kib), daemon=True)
        watcher.start()
        stdout = process.stdout.read()
        process.wait()
        watcher.join()
        seconds = time.perf_counter() - started
        summary = json.loads(stdout)
        if process.returncode or summary.get("records") != size:
            raise SystemExit(f"memory run over {size} prompts failed: {summary}")
        peak_mib = peak_kib[0] / 1024
        print(
            f"memory: {size} prompts -> {summary['records']} records in {seconds:.1f}s, "
            f"peak RSS {peak_mib:.1f} MiB",
            flush=True,
        )
        out[str(size)] = {"peak_rss_mib": round(peak_mib, 1), "seconds": round(seconds, 1)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server already running (…/v1)")
    parser.add_argument("--model", default="teacher", help="served model name (default: teacher)")
    parser.add_argument(
        "--model-dir", type=Path, help="model to serve with vLLM (default: make the tiny teacher)"
    )
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--memory-sizes", default="1000,100000", help="comma-separated prompt counts ('' skips)"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    args.memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s]

    from distillery.serving.vllm import local_vllm_server

    report: dict = {"prompts": args.prompts, "concurrency": args.concurrency, "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            if args.base_url:
                report["throughput"] = throughput(args.base_url, args.model, args, work)
            else:
                model_dir = args.model_dir
                if model_dir is None:
                    from make_tiny_models import make_tiny_models  # hack/ is on sys.path: this file's dir

                    model_dir = make_tiny_models(work / "models", seed=0, pretrain_steps=0)["teacher"]
                env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
                with local_vllm_server(
                    str(model_dir),
                    args.model,
                    dtype="float32",
                    max_model_len=512,
                    extra_args=["-O0"],
                    env=env,
                    log_path=work / "vllm.log",
                ) as server:
                    report["throughput"] = throughput(server.base_url, server.model, args, work)
        if args.memory_sizes:
            report["memory"] = memory(args, work)
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
