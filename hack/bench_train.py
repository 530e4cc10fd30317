#!/usr/bin/env python3
"""Tokens/s, MFU and peak memory of the training loop, technique by technique, against a plain HF `Trainer`.

    PYTHONPATH=operator python hack/bench_train.py                          # CPU: tiny Llama, chat data
    PYTHONPATH=operator python hack/bench_train.py --device cuda            # GPU: SmolLM2-360M's shape, bf16
    PYTHONPATH=operator python hack/bench_train.py --device cuda --shape 0.5b   # a Qwen2.5-0.5B-shaped student

One run, one process, the same freshly initialised model (same seed) and the same tokenized examples
(the stage's own encoding: loss on the answer only) for every row, one epoch each:

    hf_trainer       a plain Hugging Face Trainer as a user writes it: pads each random batch to its
                     longest sequence, labels -100 on the prompt and padding, its default optimizer
    padded_forloop   the stage's loop, padded length-grouped batches, per-parameter AdamW
    padded_fused     + AdamW's fused kernel (the loop as it was before packing: fused on GPUs only)
    packed           + padding-free packing with varlen attention (the default now)
    auto_batch       + batchSize auto: the largest batch that fits the GPU (CPU: efficiency.CPU_AUTO_BATCH)
    compiled         + torch.compile of every decoder layer
    checkpointed     + gradient checkpointing forced on (memory for compute; auto turns it on only when needed)

Rows run in that order, `--rounds` times alternating (the best round of a row counts). For each row:
  * wall tok/s: real (non-padding) tokens over the whole train call, set-up, batch finding and compiling
    included;
  * steady tok/s: tokens over the time of the updates after the first `--warmup-updates` (compilation,
    allocator and kernel warm-up excluded); the figure MFU is computed from;
  * MFU: steady tok/s x model FLOPs per token / the accelerator's dense bf16 peak. Model FLOPs per token
    = 6 N + 12 L d T (the PaLM convention; N parameters with a tied embedding counted once, L layers,
    d hidden size, T the token-weighted mean sequence length). The loop computes the LM head on answer
    tokens only, the HF Trainer on every token; both are charged the same model FLOPs per real token;
  * peak memory: torch.cuda.max_memory_allocated over the row (GPU only; the CPU allocator keeps no such count).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_tiny_models
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

# Dense bf16 peak TFLOP/s (SXM parts); --peak-tflops for anything else. Order matters: first match wins.
PEAK_BF16_TFLOPS = {"B200": 2250.0, "H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}
WORDS = tuple(
    [
        "the",
        "a",
        "movie",
        "book",
        "was",
        "great",
        "terrible",
        "good",
        "bad",
        "plot",
        "actor",
        "story",
        "long",
        "short",
        "fun",
        "boring",
        "music",
        "scene",
        "ending",
        "character",
        "we",
        "I",
        "it",
        "really",
        "very",
        "quite",
        "not",
        "at",
        "all",
        "and",
        "but",
        "so",
        "then",
    ]
)
SHAPES = {  # Llama shapes: the CPU toy, SmolLM2-360M's, and Qwen2.5-0.5B's (a ~0.5B student)
    "cpu": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=688,
    ),
    "360m": dict(
        hidden_size=960,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        intermediate_size=2560,
        vocab_size=49152,
    ),
    "0.5b": dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
    ),
}
ROWS = {  # TrainConfig settings of each row of the stage's loop
    "padded_forloop": dict(packing=False, optimizer="for-loop"),
    "padded_fused": dict(packing=False, optimizer="auto"),
    "packed": dict(packing=True),
    "auto_batch": dict(packing=True, batch_size="auto"),
    "compiled": dict(packing=True, batch_size="auto", compile=True),
    "checkpointed": dict(packing=True, batch_size="auto", compile=True, gradient_checkpointing=True),
}


def chat_examples(tokenizer, n: int, seed: int, max_length: int):
    """Short chats of varied length (10-120 word prompts, 3-60 word answers), as the stage encodes them."""
    from distillery.training.data import encode

    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        prompt = "Summarize this review: " + " ".join(rng.choices(WORDS, k=rng.randint(10, 120)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))
        record = {"messages": [{"role": "user", "content": prompt}], "response": answer}
        examples.append(encode(record, tokenizer, max_length))
    return examples


def token_examples(vocab: int, n: int, seed: int):
    """Random-token examples for the GPU run: prompt 64-512 tokens, answer 64-512 tokens."""
    from distillery.training.data import Example

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(64, 512), rng.randint(64, 512)
        out.append(Example([rng.randrange(3, vocab) for _ in range(prompt + answer)], prompt))
    return out


def llama(shape: str, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {"vocab_size": vocab, **SHAPES[shape]}
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=0, **settings)
    return LlamaForCausalLM(config)


def steady(points: list[tuple[int, float]], warmup: int) -> float | None:
    """Tokens/s over (tokens, seconds) per update, the first `warmup` updates left out."""
    kept = points[warmup:] or points[-1:]
    seconds = sum(s for _, s in kept)
    return sum(t for t, _ in kept) / seconds if seconds > 0 else None


def run_stage(model, examples, args, device, settings: dict) -> dict:
    from distillery.training.config import TrainConfig
    from distillery.training.loop import train

    config = TrainConfig(
        **{
            "learning_rate": args.lr,
            "batch_size": args.batch_size,
            "epochs": 1,
            "warmup_ratio": 0.0,
            "precision": args.precision,
            "log_every_seconds": 1e9,
            "checkpoint_every_steps": 10**9,
            **settings,
        }
    )
    model.to(device)
    began, cpu_began = time.perf_counter(), time.process_time()
    run = train(model, examples, [], config, pad_id=0, device=device, log=lambda _m: None)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    per_update, previous = [], 0
    for point in run["history"]:
        per_update.append((point["tokens"] - previous, point["seconds"]))
        previous = point["tokens"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": run["tokens"],
        "updates": run["updates"],
        "padding_fraction": run["padding_fraction"],
        "efficiency": run["efficiency"],
        "steady_tokens_per_second": steady(per_update, args.warmup_updates),
        "mean_loss": round(sum(p["loss"] for p in run["history"]) / len(run["history"]), 4),
    }


def run_hf_trainer(model, examples, args, device, settings: dict) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from distillery.training.data import IGNORE

    rows = [
        {"input_ids": e.input_ids, "labels": [IGNORE] * e.prompt_length + e.input_ids[e.prompt_length :]}
        for e in examples
    ]
    computed, real = [0], []

    def pad(batch):  # what a plain Trainer user writes: pad to the batch's longest
        width = max(len(r["input_ids"]) for r in batch)
        computed[0] += width * len(batch)
        real.append(sum(len(r["input_ids"]) for r in batch))
        out = {"input_ids": [], "labels": [], "attention_mask": []}
        for r in batch:
            gap = width - len(r["input_ids"])
            out["input_ids"].append(r["input_ids"] + [0] * gap)
            out["labels"].append(r["labels"] + [IGNORE] * gap)
            out["attention_mask"].append([1] * len(r["input_ids"]) + [0] * gap)
        return {k: torch.tensor(v) for k, v in out.items()}

    class Clock(TrainerCallback):  # the end of each step, as the loop times its updates (one sync each)
        times = [time.perf_counter()]

        def on_step_end(self, *_args, **_kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=1,
            learning_rate=args.lr,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            bf16=args.precision in ("auto", "bf16") and device.type == "cuda",
            dataloader_num_workers=0,
            seed=42,
        )
        clock = Clock()
        trainer = Trainer(
            model=model, args=training_args, train_dataset=rows, data_collator=pad, callbacks=[clock]
        )
        began, cpu_began = time.perf_counter(), time.process_time()
        clock.times[0] = began
        output = trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    tokens = sum(len(e.input_ids) for e in examples)
    steps = [(t, b - a) for t, a, b in zip(real, clock.times, clock.times[1:], strict=False)]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": tokens,
        "updates": len(clock.times) - 1,
        "padding_fraction": round(1 - tokens / computed[0], 4),
        "efficiency": {"optimizer": str(training_args.optim.value), "batch_size": args.batch_size},
        "steady_tokens_per_second": steady(steps, args.warmup_updates),
        "mean_loss": round(output.training_loss, 4),
    }


def model_flops_per_token(model, mean_length: float) -> float:
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())  # a tied embedding once
    return 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * mean_length


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="default: cpu on CPU, 360m on GPU")
    parser.add_argument("--examples", type=int, help="examples per row (default: 96 on CPU, 4096 on GPU)")
    parser.add_argument(
        "--batch-size", type=int, help="the fixed rows' and HF's batch (default: 8 CPU, 16 GPU)"
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--precision", default="auto", help="auto: fp32 on CPU, bf16 on GPU")
    parser.add_argument("--rows", default="hf_trainer," + ",".join(ROWS), help="which rows, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; a row's best round counts")
    parser.add_argument(
        "--warmup-updates", type=int, help="updates left out of steady tok/s (default: 2 CPU, 3 GPU)"
    )
    parser.add_argument("--peak-tflops", type=float, help="the accelerator's dense bf16 peak, for MFU")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    gpu = args.device == "cuda"
    args.shape = args.shape or ("360m" if gpu else "cpu")
    args.examples = args.examples or (4096 if gpu else 96)
    args.batch_size = args.batch_size or (16 if gpu else 8)
    args.warmup_updates = 3 if gpu and args.warmup_updates is None else (args.warmup_updates or 2)
    device = torch.device(args.device)
    if args.shape == "cpu":
        from make_tiny_models import build_tokenizer

        tokenizer = build_tokenizer(600)
        vocab = len(tokenizer)
        examples = chat_examples(tokenizer, args.examples, seed=1, max_length=1024)
    else:
        vocab = SHAPES[args.shape]["vocab_size"]
        examples = token_examples(vocab, args.examples, seed=1)
    reference = llama(args.shape, vocab)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    parameters = sum(p.numel() for p in reference.parameters())
    lengths = [len(e.input_ids) for e in examples]
    mean_length = sum(x * x for x in lengths) / sum(lengths)  # token-weighted
    flops = model_flops_per_token(reference, mean_length)
    name = torch.cuda.get_device_name() if gpu else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in name), None)
    print(
        f"{name}: {args.shape} Llama, {parameters / 1e6:.1f}M parameters, {len(examples)} examples, "
        f"{sum(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), batch {args.batch_size}, "
        f"{flops / 1e9:.2f} GFLOP/token, peak {peak or '?'} TFLOP/s, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    del reference

    rows = [r for r in args.rows.split(",") if r]
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for row in rows:
            model = llama(args.shape, vocab)
            model.load_state_dict(initial)
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            runner = run_hf_trainer if row == "hf_trainer" else run_stage
            result = runner(model, examples, args, device, ROWS.get(row, {}))
            result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None
            result["tokens_per_second"] = round(result["tokens"] / result["seconds"], 1)
            # Per CPU-second of this process too: on a shared CPU, wall time depends on the neighbours.
            result["tokens_per_cpu_second"] = round(result["tokens"] / result["cpu_seconds"], 1)
            rate = result["steady_tokens_per_second"]
            result["model_tflops"] = round(rate * flops / 1e12, 3) if rate else None
            result["mfu"] = round(rate * flops / 1e12 / peak, 4) if rate and peak else None
            e = result["efficiency"]
            print(
                f"round {round_ + 1} {row:15s} batch {e.get('batch_size')!s:>4} "
                f"{result['tokens_per_second']:>10,.0f} tok/s wall {rate or 0:>10,.0f} tok/s steady "
                f"{result['model_tflops'] or 0:>8.3f} TFLOP/s MFU {result['mfu'] if result['mfu'] is not None else '-'} "
                f"peak {result['peak_memory_gib'] if gpu else '-'} GiB padding {result['padding_fraction']:.1%} "
                f"{result['tokens_per_cpu_second']:,.0f} tok/cpu-s loss {result['mean_loss']} "
                f"({result['seconds']:.1f}s, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if row not in best or (rate or 0) > (best[row]["steady_tokens_per_second"] or 0):
                best[row] = result
            del model
    summary = {
        "device": name,
        "shape": args.shape,
        "parameters": parameters,
        "examples": len(examples),
        "tokens": sum(lengths),
        "batch_size": args.batch_size,
        "model_flops_per_token": flops,
        "peak_tflops": peak,
        "results": best,
    }
    print(
        "\n| row | batch | wall tok/s | steady tok/s | model TFLOP/s | MFU | peak GiB | steady vs hf_trainer "
        "| tok/CPU-s | mean loss |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = best.get("hf_trainer", {}).get("steady_tokens_per_second")
    for row, r in best.items():
        rate = r["steady_tokens_per_second"] or 0
        cells = [
            row,
            str(r["efficiency"].get("batch_size")),
            f"{r['tokens_per_second']:,.0f}",
            f"{rate:,.0f}",
            f"{r['model_tflops'] or 0:.3f}",
            "-" if r["mfu"] is None else f"{r['mfu']:.1%}",
            "-" if r["peak_memory_gib"] is None else str(r["peak_memory_gib"]),
            f"{rate / base:.2f}x" if base else "-",
            f"{r['tokens_per_cpu_second']:,.0f}",
            str(r["mean_loss"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
