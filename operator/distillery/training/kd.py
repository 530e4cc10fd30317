"""Logit knowledge distillation: the KD loss on the teacher's stored top-k, and the tokenizer check.

The teacher's records keep only its top-k log-probabilities per response token, so the
loss compares distributions on that support: both the teacher's and the student's are
renormalised over the same k token ids (softened by the KD temperature T) and

    KD = T^2 * KL(p_teacher || p_student)   averaged over the response tokens

T^2 keeps the gradient scale independent of T (Hinton et al., 2015). Renormalising the
student too makes the loss exactly zero when the two models agree, whatever k is.
"""

from __future__ import annotations

from typing import Any

import torch


def topk_kd_loss(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(teacher || student) on each row's teacher top-k token ids, averaged (or summed) over rows.

    Args:
        student_logits: [N, V] the student's logits at the N positions the teacher scored.
        top_ids: [N, K] token ids of the teacher's top-k at each position (padding: any id).
        top_logprobs: [N, K] the teacher's log-probabilities of those ids; `-inf` marks padding
            (rows may carry fewer than K entries).
        temperature: softens both distributions; the loss is multiplied by T^2.
        reduction: "mean" or "sum" over the rows.
    Returns:
        a scalar; 0 when N is 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    valid = torch.isfinite(top_logprobs)
    student = torch.gather(student_logits.float(), 1, top_ids) / temperature
    student = student.masked_fill(~valid, float("-inf"))
    teacher_logp = torch.log_softmax(top_logprobs.float() / temperature, dim=-1)
    student_logp = torch.log_softmax(student, dim=-1)
    teacher_p = teacher_logp.exp()
    # Padding entries have p = 0; where() keeps 0 * (-inf - -inf) from turning into NaN.
    per_entry = torch.where(valid, teacher_p * (teacher_logp - student_logp), torch.zeros_like(teacher_p))
    per_row = per_entry.sum(dim=-1) * temperature**2
    return per_row.sum() if reduction == "sum" else per_row.mean()


def tokenizer_differences(student: Any, teacher: Any) -> list[str]:
    """What differs between two Hugging Face tokenizers for logit KD (empty: they match).

    Logit KD compares distributions token id by token id, so both must map the same text
    to the same ids: same vocabulary (added tokens included) and the same special tokens.
    """
    problems = []
    student_vocab, teacher_vocab = student.get_vocab(), teacher.get_vocab()
    if len(student_vocab) != len(teacher_vocab):
        problems.append(f"vocabulary size {len(student_vocab)} (student) vs {len(teacher_vocab)} (teacher)")
    else:
        differing = [token for token, index in student_vocab.items() if teacher_vocab.get(token) != index]
        if differing:
            shown = ", ".join(repr(t) for t in sorted(differing)[:3])
            problems.append(f"{len(differing)} tokens have different ids (e.g. {shown})")
    for name in ("eos_token", "bos_token", "unk_token"):
        mine, theirs = getattr(student, name, None), getattr(teacher, name, None)
        if mine != theirs:
            problems.append(f"{name} {mine!r} (student) vs {theirs!r} (teacher)")
    return problems
