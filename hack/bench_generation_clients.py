#!/usr/bin/env python3
"""Generation clients side by side: the generation stage, a plain AsyncOpenAI client and vLLM's own
benchmark client (`vllm.benchmarks.serve`), against one vLLM server, at several concurrencies, in one run.

    python hack/bench_generation_clients.py [--model-dir DIR] [--prompts 256] [--concurrency 8,32,64]
                                            [--max-tokens 64] [--rounds 2]

hack/bench_generate.py compares the stage with the plain client at one concurrency; this adds the
reference client vLLM itself ships and sweeps the concurrency. After one warm-up round of every
client, per concurrency and round, the stage and the plain client send the same prompts
(hack/bench_generate.py's review prompts) as chat requests with greedy decoding and --max-tokens;
vLLM's client sends as many random-token prompts of their mean length (chat template included; its
`custom` dataset would need pandas). The best round of each is kept. Output tokens/s = output
tokens the server reported / wall time of the client's whole run (the stage's includes its input
pass, smoke test, filters and JSONL writes).

The model is SmolLM2-135M-Instruct as hack/bench_quality.py leaves it
(build/bench-quality/models/teacher; or `python hack/convert_smollm2.py DIR` and --model-dir DIR),
the model of DESIGN.md's reference figures. Its answers may stop before --max-tokens while vLLM's
client runs with --ignore-eos (its random prompts would otherwise end anywhere), so compare
tokens/s, not requests/s; each line shows the tokens each client got. (The tiny random teacher of
hack/make_tiny_models.py is no use here: its answers decode to empty text, which the stage rightly
rejects.) Prints one line per run, a table, and a JSON summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK.parent / "operator"))
sys.path.insert(0, str(HACK))

from bench_generate import plain_client, prompts, stage_run, write_jsonl  # noqa: E402

DEFAULT_MODEL = HACK.parent / "build" / "bench-quality" / "models" / "teacher"
CLIENTS = ("vllm-bench", "plain", "stage")


def vllm_bench(
    base_url: str, model: str, tokenizer: str, input_len: int, count: int, concurrency: int, max_tokens: int
) -> tuple[int, float]:
    """vLLM's benchmark client on the same server: (output tokens, seconds)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    root = base_url.removesuffix("/v1")
    args = parser.parse_args(
        [
            "--backend",
            "openai-chat",
            "--base-url",
            root,
            "--endpoint",
            "/v1/chat/completions",
            "--model",
            model,
            "--tokenizer",
            tokenizer,
            "--dataset-name",
            "random",
            "--random-input-len",
            str(input_len),
            "--random-output-len",
            str(max_tokens),
            "--random-range-ratio",
            "0",
            "--num-prompts",
            str(count),
            "--max-concurrency",
            str(concurrency),
            "--request-rate",
            "inf",
            "--temperature",
            "0",
            "--ignore-eos",
            "--disable-tqdm",
            "--num-warmups",
            "0",
        ]
    )
    with contextlib.redirect_stdout(io.StringIO()):  # its own long report; the figures come back in `result`
        result = main(args)
    if result["completed"] != count:
        raise SystemExit(f"vllm bench: {result['completed']} of {count} requests completed")
    return int(result["total_output_tokens"]), float(result["duration"])


def prompt_tokens(tokenizer_dir: str, records: list[dict]) -> int:
    """Mean prompt length in tokens, chat template included, as the server sees the others' requests."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        for r in records
    ]
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    return round(sum(lengths) / len(lengths))


def sweep(base_url: str, model: str, tokenizer: str, args: argparse.Namespace, work: Path) -> dict:
    records = prompts(args.prompts)
    write_jsonl(work / "prompts.jsonl", records)
    input_len = prompt_tokens(tokenizer, records)
    print(
        f"prompts: {len(records)}, {input_len} tokens each on average (vLLM's client: random prompts of that length)"
    )
    best: dict[int, dict[str, float]] = {}
    for concurrency in args.concurrency:
        rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
        first = concurrency == args.concurrency[0]
        for round_ in range(0 if first else 1, args.rounds + 1):  # round 0 (once) warms up server and clients
            for name in CLIENTS:
                if name == "vllm-bench":
                    tokens, seconds = vllm_bench(
                        base_url, model, tokenizer, input_len, len(records), concurrency, args.max_tokens
                    )
                elif name == "plain":
                    tokens, seconds = asyncio.run(
                        plain_client(base_url, model, records, concurrency, args.max_tokens)
                    )
                else:
                    tokens, seconds = stage_run(base_url, model, work, concurrency, args.max_tokens)
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(
                    f"c={concurrency:<3} {label:8} {name:10}: {tokens} output tokens in {seconds:6.2f}s = "
                    f"{tokens / seconds:5.0f} tok/s",
                    flush=True,
                )
                if round_:
                    rates[name].append(tokens / seconds)
        best[concurrency] = {name: max(values) for name, values in rates.items()}
    print()
    print(f"{'concurrency':>11} " + " ".join(f"{n:>10}" for n in CLIENTS) + "  stage/vllm  plain/vllm")
    for concurrency, row in best.items():
        print(
            f"{concurrency:>11} "
            + " ".join(f"{row[n]:10.0f}" for n in CLIENTS)
            + f"  {row['stage'] / row['vllm-bench']:10.3f}  {row['plain'] / row['vllm-bench']:10.3f}"
        )
    return {str(c): {k: round(v, 1) for k, v in row.items()} for c, row in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=DEFAULT_MODEL, help=f"model to serve (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--concurrency", default="8,32,64", help="comma-separated (default 8,32,64)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]

    from distillery.serving.vllm import local_vllm_server

    print(
        f"bench-generation-clients: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if not (model_dir / "config.json").exists():
            raise SystemExit(f"no model in {model_dir}: python hack/convert_smollm2.py {model_dir}")
        env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        with local_vllm_server(
            str(model_dir),
            "teacher",
            dtype="float32",
            max_model_len=512,
            extra_args=["-O0"],
            env=env,
            log_path=work / "vllm.log",
        ) as server:
            best = sweep(server.base_url, server.model, str(model_dir), args, work)
    report = {
        "model": str(args.model_dir),
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "best_tok_s": best,
        "loadavg_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started),
    }
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
