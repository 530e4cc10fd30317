#!/usr/bin/env python3
"""Make tiny, deterministic Llama models for tests: offline, in seconds, on a CPU.

    python hack/make_tiny_models.py OUT_DIR [--seed 0] [--pretrain-steps N]

Creates under OUT_DIR:

* ``teacher/``                 LlamaForCausalLM, hidden 128, 2 heads (head_dim 64, which vLLM's CPU
                               attention accepts), 8 layers (1.39M parameters), byte-level BPE
                               tokenizer with a ChatML chat template.
* ``student/``                 the same shape with 1 layer (240k parameters) and the SAME tokenizer
                               (vLLM serves it too).
* ``other-tokenizer-student/`` a 1-layer student whose tokenizer has a different vocabulary, for
                               the "mismatched tokenizers are refused" checks.

Weights are random unless ``--pretrain-steps N`` is given: then the teacher is trained for N
steps on a tiny templated task (sentiment of a short review -> ``positive``/``negative``, and
single-digit additions -> the sum), so its greedy answers are meaningful. The student stays
random (it is what distillation has to improve).

Importable: ``make_tiny_models(out_dir, seed=0, pretrain_steps=0) -> dict[str, Path]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

# The teacher is 8 layers deep against the student's 1 so that distillation visibly buys speed: at this
# size vLLM's per-step overhead dominates, and a 2-layer teacher served as fast as the 1-layer student
# within run-to-run noise on 2 CPU cores; 8 layers serve ~1.5x slower (docs/benchmarks.md 4a).
TEACHER_LAYERS, STUDENT_LAYERS = 8, 1

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# ChatML, as SmolLM2 / Qwen use it. No default system prompt: tests should see exactly
# the messages they sent.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

POSITIVE_WORDS = ["great", "good", "wonderful", "excellent", "lovely", "amazing", "fun", "brilliant"]
NEGATIVE_WORDS = ["bad", "awful", "terrible", "boring", "poor", "dull", "horrible", "weak"]
THINGS = ["movie", "film", "book", "meal", "show", "song", "game", "story"]

_BASE_CORPUS = """\
The quick brown fox jumps over the lazy dog. A teacher writes answers and a student learns from them.
What is the sentiment of this review? The answer is positive. The answer is negative.
Classify the sentiment as positive or negative. Answer with one word.
Question: What is 2+3? Answer: 5. What is 7+8? 15. Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20.
You are a helpful assistant. Please answer the question. Thank you, that was very good.
I loved this movie, it was great. I hated this film, it was terrible and boring.
Summarize the text. Translate the sentence. Is the premise entailed, neutral or a contradiction?
Hello, how are you today? I am fine. Yes. No. Maybe. The user asks and the assistant replies.
system user assistant
"""


def _corpus() -> list[str]:
    """A small built-in English corpus: common words, digits, labels, the task templates."""
    lines = _BASE_CORPUS.splitlines()
    for a in range(10):
        for b in range(10):
            lines.append(f"What is {a}+{b}? {a + b}")
    for w in POSITIVE_WORDS + NEGATIVE_WORDS:
        for t in THINGS:
            lines.append(f"Review: a {w} {t}. Sentiment: {'positive' if w in POSITIVE_WORDS else 'negative'}")
    return lines


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on the built-in corpus, wrapped as PreTrainedTokenizerFast.

    Byte-level, so any text (and any byte) can be encoded: tests never hit unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama(tokenizer, *, layers: int, seed: int, intermediate: int = 256):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_attention_heads=2,  # head_dim 64: vLLM's CPU attention refuses 16
        num_key_value_heads=2,
        num_hidden_layers=layers,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _save(model, tokenizer, path: Path) -> Path:
    from transformers import GenerationConfig

    path.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def task_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(user prompt, assistant answer) pairs of the tiny task the teacher may be pretrained on."""
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            a, b = rng.randrange(10), rng.randrange(10)
            out.append((f"What is {a}+{b}?", str(a + b)))
        else:
            positive = rng.random() < 0.5
            word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
            out.append(
                (
                    f"What is the sentiment of this review? Review: a {word} {rng.choice(THINGS)}.",
                    "positive" if positive else "negative",
                )
            )
    return out


def pretrain(model, tokenizer, *, steps: int, seed: int, batch_size: int = 32, lr: float = 3e-3) -> dict:
    """Train ``model`` on the tiny task; loss only on the assistant answer and its <|im_end|>."""
    import torch

    # One thread: bit-identical weights on any machine (multi-threaded CPU reductions differ with the
    # thread count), and no spin-wait collapse when other processes share the 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps)
    )
    model.train()
    t0 = time.monotonic()
    loss_val = float("nan")
    for _step in range(steps):
        rows, labels = [], []
        for prompt, answer in task_examples(rng, batch_size):
            p = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True
            )
            p = list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p)
            a = tokenizer(answer + IM_END + "\n", add_special_tokens=False)["input_ids"]
            rows.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, l_) in enumerate(zip(rows, labels, strict=False)):
            ids[i, : len(r)] = torch.tensor(r)
            lab[i, : len(l_)] = torch.tensor(l_)
            att[i, : len(r)] = 1
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = float(loss.detach())
    model.eval()
    torch.set_num_threads(threads)
    return {"steps": steps, "final_loss": loss_val, "seconds": round(time.monotonic() - t0, 2)}


def make_tiny_models(out_dir: Path, seed: int = 0, pretrain_steps: int = 0) -> dict[str, Path]:
    """Create teacher/, student/ and other-tokenizer-student/ under ``out_dir``; return their paths."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    tokenizer = build_tokenizer(vocab_size=600)
    teacher = _llama(tokenizer, layers=TEACHER_LAYERS, seed=seed)
    info: dict = {"seed": seed, "vocab_size": len(tokenizer)}
    if pretrain_steps > 0:
        info["pretrain"] = pretrain(teacher, tokenizer, steps=pretrain_steps, seed=seed)
    paths = {"teacher": _save(teacher, tokenizer, out_dir / "teacher")}

    student = _llama(tokenizer, layers=STUDENT_LAYERS, seed=seed + 1)
    paths["student"] = _save(student, tokenizer, out_dir / "student")

    other_tok = build_tokenizer(vocab_size=400)  # a different vocabulary (and size)
    other = _llama(other_tok, layers=STUDENT_LAYERS, seed=seed + 2)
    paths["other-tokenizer-student"] = _save(other, other_tok, out_dir / "other-tokenizer-student")

    (out_dir / "tiny-models.json").write_text(json.dumps(info, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pretrain-steps", type=int, default=0, help="train the teacher on the tiny task for N steps"
    )
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    paths = make_tiny_models(args.out_dir, seed=args.seed, pretrain_steps=args.pretrain_steps)
    for name, p in paths.items():
        print(f"{name}: {p}")
    print(f"done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
