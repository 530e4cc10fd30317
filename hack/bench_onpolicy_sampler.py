#!/usr/bin/env python3
"""Who should sample the student's completions in on-policy distillation: the training process, or vLLM?

    python hack/bench_onpolicy_sampler.py [--model build/bench-quality/models/student-4] [--batch 16]
                                          [--new-tokens 8,16] [--repeats 4]

Side by side, on one batch of real prompts (the benchmark's review prompts, chat-templated):
* the training process: `training.onpolicy.sample` (what `method: onPolicy` uses), and transformers'
  `generate` for reference;
* vLLM serving the same student (`VLLM_SERVER_DEV_MODE=1`): `/v1/completions` with token-id prompts, and
  the cost of giving it fresh weights: the trained weights saved as safetensors, then
  `POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}` (vLLM 0.32);
  after the reload its greedy answer is checked against the training process's;
* one training update of the same batch (forward + backward + AdamW), for scale.
Prints ms per batch and per update for each sampler with fresh weights every 1, 4 and 16 updates, the vLLM
server's resident memory, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
sys.path.insert(0, str(HACK.parent / "operator"))
sys.path.insert(0, str(HACK))


def timed(function, repeats: int) -> float:
    """Mean seconds of `function()` over `repeats` calls, after one warm-up call."""
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (vLLM runs its engine in a child)."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def main(argv: list[str] | None = None) -> int:
    import httpx
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench_quality_report import load_average
    from distillery.serving.vllm import cpu_server_env, local_vllm_server
    from distillery.training.data import collate, encode
    from distillery.training.loss import CausalLMLoss, move
    from distillery.training.onpolicy import sample
    from quality_tasks import SENTIMENT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=HACK.parent / "build" / "bench-quality" / "models" / "student-4"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", default="8,16")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    records = [
        {
            "messages": [{"role": "user", "content": SENTIMENT.template.format(prompt=r["prompt"])}],
            "response": r["answer"],
        }
        for r in SENTIMENT.records(7, args.batch)
    ]
    examples = [encode(r, tokenizer, 128) for r in records]
    prompts = [e.input_ids[: e.prompt_length] for e in examples]
    out: dict = {"model": str(args.model), "batch": args.batch, "load_start": load_average()}

    loss = CausalLMLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def update() -> None:
        batch = collate(examples, tokenizer.pad_token_id)
        ce, _ = loss(**move(batch, torch.device("cpu")))
        (ce / batch["loss_tokens"]).backward()
        optimizer.step()
        optimizer.zero_grad()

    out["update_ms"] = timed(update, args.repeats) * 1000
    for new in [int(n) for n in args.new_tokens.split(",")]:
        generator = torch.Generator().manual_seed(0)

        def ours(new: int = new, generator: torch.Generator = generator) -> None:
            sample(
                model,
                prompts,
                max_new_tokens=new,
                temperature=1.0,
                stop_ids=set(),
                pad_id=0,
                generator=generator,
            )

        def theirs(new: int = new) -> None:
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            with torch.no_grad():
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=True,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=tokenizer.pad_token_id,
                )

        out[f"training_process_{new}_ms"] = timed(ours, args.repeats) * 1000
        out[f"hf_generate_{new}_ms"] = timed(theirs, args.repeats) * 1000

    env = {**cpu_server_env(), "VLLM_SERVER_DEV_MODE": "1"}
    with (
        tempfile.TemporaryDirectory() as weights,
        local_vllm_server(
            str(args.model),
            "student",
            dtype="float32",
            max_model_len=512,
            extra_args=["-O0"],
            env=env,
            log_path=Path(weights) / "vllm.log",
        ) as server,
        httpx.Client(base_url=server.root_url, timeout=300) as client,
    ):
        out["vllm_rss_bytes"] = tree_rss(server.process.pid)
        for new in [int(n) for n in args.new_tokens.split(",")]:

            def vllm(new: int = new) -> None:
                body = {
                    "model": "student",
                    "prompt": prompts,
                    "max_tokens": new,
                    "min_tokens": new,
                    "temperature": 1.0,
                    "ignore_eos": True,
                }
                client.post("/v1/completions", json=body).raise_for_status()

            out[f"vllm_{new}_ms"] = timed(vllm, args.repeats) * 1000

        def sync() -> None:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(1e-4)  # weights a training step would have changed
            state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
            save_file(state, os.path.join(weights, "model.safetensors"))
            reloaded = client.post(
                "/collective_rpc", json={"method": "reload_weights", "kwargs": {"weights_path": weights}}
            )
            reloaded.raise_for_status()

        out["vllm_sync_ms"] = timed(sync, args.repeats) * 1000
        body = {"model": "student", "prompt": [prompts[0]], "max_tokens": 8, "temperature": 0.0}
        served = client.post("/v1/completions", json={**body, "return_token_ids": True}).json()["choices"][0]
        greedy = sample(
            model,
            prompts[:1],
            max_new_tokens=8,
            temperature=1e-5,
            stop_ids=set(),
            pad_id=0,
            generator=torch.Generator().manual_seed(0),
        )[0]
        out["vllm_fresh_weights_match"] = served.get("token_ids") == greedy
    out["load_end"] = load_average()

    print(
        f"student {args.model.name}, batch {args.batch}; one training update {out['update_ms']:.0f} ms; "
        f"vLLM weight sync {out['vllm_sync_ms']:.0f} ms (fresh weights match: {out['vllm_fresh_weights_match']}); "
        f"vLLM RSS {out['vllm_rss_bytes'] / 2**20:.0f} MiB; {out['load_start']} -> {out['load_end']}"
    )
    print(
        f"{'new tokens':>10} {'ours ms':>8} {'HF gen ms':>9} {'vLLM ms':>8} {'vLLM+sync/1':>11} {'/4':>6} {'/16':>6}"
    )
    for new in [int(n) for n in args.new_tokens.split(",")]:
        v, s = out[f"vllm_{new}_ms"], out["vllm_sync_ms"]
        print(
            f"{new:>10} {out[f'training_process_{new}_ms']:>8.0f} {out[f'hf_generate_{new}_ms']:>9.0f} {v:>8.0f} "
            f"{v + s:>11.0f} {v + s / 4:>6.0f} {v + s / 16:>6.0f}"
        )
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
