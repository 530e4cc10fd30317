"""The teacher's records as training examples: chat-templated, assistant-only labels, grouped by length.

Pure Python except `collate` (torch). The records are `contract.records.Record`.

Each example is the conversation rendered with the STUDENT's chat template, tokenized in
three pieces exactly as at inference: the prompt (up to and including the assistant
header), the response, and the template's closing tokens (e.g. `<|im_end|>`). Loss is on
the response and the closing tokens only, so the student learns to answer and to stop.
For logit KD the response is the teacher's own token ids, so every stored top-k lines up
with the position it was computed for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.contract.records import Record
from distillery.storage import RECORDS, shard_files

IGNORE = -100  # label of tokens without loss (the prompt, padding)


@dataclass
class Example:
    """One training sequence. `input_ids[:prompt_length]` carry no loss."""

    input_ids: list[int]
    prompt_length: int
    # position in input_ids of a teacher-scored token -> that position's top-k [(id, logprob), ...]
    teacher_top: dict[int, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def loss_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_length


def record_files(directory: Path, shards: int | None = None) -> list[Path]:
    """The accepted-record files of one split (rejected records are not training data); given `shards`
    (generation.shards), only that shard set: files another shard count left are stale."""
    return shard_files(directory, shards, RECORDS)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def render(tokenizer: Any, messages: list[dict[str, Any]], response: str) -> tuple[str, str]:
    """(prompt text, closing text) the student's chat template puts around `response`."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], tokenize=False
    )
    if full.startswith(prompt) and full[len(prompt) :].startswith(response):
        return prompt, full[len(prompt) + len(response) :]
    # Templates that rewrite the assistant turn (e.g. strip reasoning): end with EOS instead.
    return prompt, tokenizer.eos_token or ""


def encode(
    record: Record | dict[str, Any], tokenizer: Any, max_length: int, use_teacher_tokens: bool = False
) -> Example | None:
    """One record as an Example; None when the prompt alone fills `max_length` (nothing to learn)."""
    record = Record.of(record)
    prompt, closing = render(tokenizer, record.messages, record.response)
    prompt_ids = _ids(tokenizer, prompt)
    teacher_top: dict[int, list[tuple[int, float]]] = {}
    if use_teacher_tokens and record.logprobs and record.has_teacher_top:
        response_ids = [entry.token_id for entry in record.logprobs]
        for offset, entry in enumerate(record.logprobs):
            teacher_top[len(prompt_ids) + offset] = [(int(i), float(lp)) for i, lp in entry.top]
    else:
        response_ids = _ids(tokenizer, record.response)
    closing_ids = _ids(tokenizer, closing)
    # The teacher's tokens may already end with the template's stop token (e.g. <|im_end|>).
    overlap = next(
        (
            k
            for k in range(min(len(response_ids), len(closing_ids)), 0, -1)
            if response_ids[-k:] == closing_ids[:k]
        ),
        0,
    )
    input_ids = (prompt_ids + response_ids + closing_ids[overlap:])[:max_length]
    if len(prompt_ids) >= len(input_ids):
        return None
    teacher_top = {pos: top for pos, top in teacher_top.items() if pos < len(input_ids)}
    return Example(input_ids, len(prompt_ids), teacher_top)


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 64
) -> list[list[int]]:
    """Batches of example indices, each of similar lengths; deterministic in (seed, epoch).

    Shuffle, sort inside windows of `group` batches by length, cut into batches, shuffle the
    batches: the order stays random, but a batch's sequences are alike in length, so
    padding them costs little (the training report gives the padding fraction).
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors plus the teacher's top-k rows (kd_slot: row index per target token, -1: none)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    size = (len(examples), width)
    input_ids = torch.full(size, pad_id, dtype=torch.long)
    labels = torch.full(size, IGNORE, dtype=torch.long)
    attention = torch.zeros(size, dtype=torch.long)
    kd_slot = torch.full(size, -1, dtype=torch.long)
    tops: list[list[tuple[int, float]]] = []
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, example.prompt_length : n] = input_ids[row, example.prompt_length : n]
        attention[row, :n] = 1
        for position, top in sorted(example.teacher_top.items()):
            kd_slot[row, position] = len(tops)
            tops.append(top)
    top_ids, top_logprobs = top_tensors(tops)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "kd_slot": kd_slot,
        "top_ids": top_ids,
        "top_logprobs": top_logprobs,
        **targets_of(labels, kd_slot),
        "real_tokens": int(attention.sum()),
        "loss_tokens": int((labels[:, 1:] != IGNORE).sum()),  # position 0 is never predicted
    }


def top_tensors(tops: list[list[tuple[int, float]]]) -> tuple[Any, Any]:
    """The teacher's top-k of each scored position as (ids, logprobs) rows, padded to the longest with -inf."""
    import torch

    k = max((len(t) for t in tops), default=1)
    top_ids = torch.zeros((len(tops), k), dtype=torch.long)
    top_logprobs = torch.full((len(tops), k), float("-inf"))
    for index, top in enumerate(tops):
        top_ids[index, : len(top)] = torch.tensor([i for i, _ in top], dtype=torch.long)
        top_logprobs[index, : len(top)] = torch.tensor([lp for _, lp in top])
    return top_ids, top_logprobs


def targets_of(labels: Any, kd_slot: Any) -> dict[str, Any]:
    """Where the loss looks, as indices computed here on the CPU: a GPU would wait for the host at
    every boolean index in the loss (`nonzero`), and torch.compile could not trace one.

    `select`: positions (into the batch's flattened [rows * width] hidden states) whose next token
    carries a label; `targets`: those labels; `scored` / `scored_slots`: which selected positions
    the teacher scored, and their rows in `top_ids` / `top_logprobs`.
    """
    width = labels.shape[1]
    rows, columns = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    slots = kd_slot[:, 1:][rows, columns]
    scored = (slots >= 0).nonzero().flatten()
    return {
        "select": rows * width + columns,
        "targets": labels[:, 1:][rows, columns],
        "scored": scored,
        "scored_slots": slots[scored],
    }
