"""On-policy batches (`training.method: onPolicy`): the student samples, the served teacher grades every token.

For an on-policy update the loop hands this module the prompts of the batches it would have
trained on; each prompt is completed `samples_per_prompt` times by the student with its current
weights, the teacher returns its log-probabilities of exactly those tokens (vLLM's prompt
logprobs, `serving.prompt_logprobs`), and the batch trains the student's reverse KL to the
teacher on them (`kd.topk_reverse_kl`). Which updates are on-policy is decided by the update's
number alone (`is_on_policy`), and each update samples from its own seed, so a run resumed
from a checkpoint draws the same samples an uninterrupted run would have drawn from the same
weights, and no update is done twice.

The sampler is the training process itself (its own KV-cached loop; no vLLM beside training):
it needs no second server and copy of the model in the training pod's memory, and samples from
the weights being trained (exactly on-policy, never stale). It is not the fastest: measured on
CPU (hack/bench_onpolicy_sampler.py, docs/benchmarks.md §1b) a vLLM server given fresh weights
before every batch samples about 4x faster; a vLLM sampler is the way to speed this up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from distillery.training import metrics
from distillery.training.data import Example, collate


@dataclass(frozen=True)
class OnPolicyConfig:
    """How on-policy batches are drawn (the spec's `training.onPolicy`; part of the checkpoint fingerprint).

    Args:
        fraction: share of updates that are on-policy; the others train on the teacher's records.
        samples_per_prompt: completions sampled per prompt of an on-policy batch.
        temperature: the student's sampling temperature.
        max_new_tokens: longest completion.
        top_logprobs: teacher log-probabilities asked per sampled token (its top-k; the sampled one is added).
        max_seq_length: prompt + completion never exceed it.
    """

    fraction: float = 1.0
    samples_per_prompt: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 64
    top_logprobs: int = 20
    max_seq_length: int = 2048


def is_on_policy(step: int, fraction: float) -> bool:
    """Whether update `step` (0-based) is on-policy: `fraction` of the updates, spread evenly, by number alone."""
    return math.floor((step + 1) * fraction + 1e-9) > math.floor(step * fraction + 1e-9)


@torch.no_grad()
def sample(
    model: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    stop_ids: set[int],
    pad_id: int,
    generator: torch.Generator,
) -> list[list[int]]:
    """Each prompt's completion by `model`, sampled at `temperature` from its full distribution (no top-k or
    top-p), up to and including the first stop token, or `max_new_tokens` long. Prompts are left-padded."""
    device = generator.device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    stops = torch.tensor(sorted(stop_ids), device=device)
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1
        )
        completions: list[list[int]] = [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        position = position[:, -1:]
        for _ in range(max_new_tokens):
            probs = torch.softmax(out.logits[:, -1].float() / temperature, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator)
            for row in (~done).nonzero().flatten().tolist():
                completions[row].append(int(tokens[row, 0]))
            done |= torch.isin(tokens[:, 0], stops)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
            position = position + 1
            out = model(
                input_ids=tokens,
                attention_mask=mask,
                position_ids=position,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
    finally:
        model.train(was_training)
    return completions


def graded_example(
    prompt: list[int], completion: list[int], grades: list[dict[int, float]], vocab: int | None = None
) -> Example:
    """A training example whose every completion token carries the teacher's grades (its listed log-probs).

    Ids at or above `vocab` (rows the student's head does not have) are left out: their mass stays in the
    "other" bin of both models, which is where it belongs for a student that cannot write them."""
    start = len(prompt)
    top = {
        start + offset: sorted(
            ((i, lp) for i, lp in g.items() if vocab is None or i < vocab), key=lambda x: -x[1]
        )
        for offset, g in enumerate(grades)
    }
    return Example(prompt + completion, start, top)


class OnPolicySource:
    """Draws the batches of on-policy updates: the student samples, the teacher (`grade`) grades.

    `grade(sequences, starts, top_k)` is `PromptLogprobsClient.grade`: for each sequence, the
    teacher's {token id: log-prob} at each position from its start.
    """

    def __init__(
        self,
        model: Any,
        config: OnPolicyConfig,
        grade: Callable[..., list[Any]],
        *,
        stop_ids: set[int],
        pad_id: int,
        seed: int,
        rank: int,
        device: torch.device,
    ):
        self.model, self.config, self.grade = model, config, grade
        self.stop_ids, self.pad_id, self.seed, self.rank, self.device = stop_ids, pad_id, seed, rank, device
        self.vocab = model.get_output_embeddings().weight.shape[0]

    def wants(self, step: int) -> bool:
        return is_on_policy(step, self.config.fraction)

    def micro_batches(
        self,
        groups: list[list[Example]],
        state: dict[str, Any],
        collate_fn: Callable[..., dict[str, Any]] = collate,
    ) -> list[dict[str, Any]]:
        """The on-policy micro-batches of update `state["step"]`, one per group of examples (their prompts),
        made by `collate_fn` (padded, or packed: `training.packing`)."""
        config = self.config
        totals = state.setdefault(
            "on_policy",
            {
                "updates": 0,
                "scored_tokens": 0,
                "teacher_tokens": 0,
                "sample_seconds": 0.0,
                "grade_seconds": 0.0,
            },
        )
        batches = []
        for index, group in enumerate(groups):
            prompts = [
                e.input_ids[: e.prompt_length] for e in group for _ in range(config.samples_per_prompt)
            ]
            room = config.max_seq_length - max(len(p) for p in prompts)
            generator = torch.Generator(self.device)
            # One seed per (run, update, micro-batch, rank): a resumed run draws what it would have drawn.
            generator.manual_seed(((self.seed * 1_000_003 + state["step"]) * 1009 + index) * 131 + self.rank)
            began = time.perf_counter()
            completions = sample(
                self.model,
                prompts,
                max_new_tokens=max(1, min(config.max_new_tokens, room)),
                temperature=config.temperature,
                stop_ids=self.stop_ids,
                pad_id=self.pad_id,
                generator=generator,
            )
            sampled = time.perf_counter()
            sequences = [p + c for p, c in zip(prompts, completions, strict=True)]
            graded = self.grade(sequences, [len(p) for p in prompts], config.top_logprobs)
            totals["sample_seconds"] += sampled - began
            totals["grade_seconds"] += time.perf_counter() - sampled
            examples = [
                graded_example(p, c, g.positions, self.vocab)
                for p, c, g in zip(prompts, completions, graded, strict=True)
            ]
            scored = sum(len(c) for c in completions)
            totals["scored_tokens"] += scored
            totals["teacher_tokens"] += sum(len(s) for s in sequences)
            metrics.TRAIN_TEACHER_GRADED_TOKENS.inc(scored)
            batches.append(collate_fn(examples, self.pad_id))
        totals["updates"] += 1
        return batches


def stop_token_ids(tokenizer: Any) -> set[int]:
    """Where a completion ends: EOS, and the first token the chat template closes an answer with (`<|im_end|>`)."""
    from distillery.training.data import render

    _, closing = render(tokenizer, [{"role": "user", "content": "x"}], "y")
    closing_ids = tokenizer(closing, add_special_tokens=False)["input_ids"] if closing else []
    stops = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    return stops | set(closing_ids[:1])


def tokens_disagreeing(tokenizer: Any, sequence: list[int], start: int, graded: Any) -> list[str]:
    """How the teacher's reading of `sequence[start:]` (`serving.prompt_logprobs.Graded`) shows another
    tokenizer: ids it ranks that the student's tokenizer does not have, and ids whose text, as the teacher
    writes it back (`decoded_token`), is not the student's text of that id.

    For a teacher behind an endpoint, whose tokenizer cannot be loaded, this is the tokenizer check, on a
    real prompt. Partial UTF-8 tokens are skipped."""
    size = len(tokenizer)
    beyond = sorted({i for position in graded.positions for i in position if i >= size})
    out = (
        [f"it ranks ids the student's tokenizer ({size} tokens) does not have, e.g. {beyond[:3]}"]
        if beyond
        else []
    )
    for token, theirs in zip(sequence[start:], graded.decoded, strict=True):
        mine = tokenizer.decode([token])
        if theirs is None or "\ufffd" in mine or "\ufffd" in theirs or mine == theirs:
            continue
        out.append(f"id {token} is {mine!r} to the student, {theirs!r} to the teacher")
    return out
