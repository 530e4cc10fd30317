"""Divergences on the teacher's top-k: logit KD on stored top-k and on-policy reverse KL (the tokenizer check is
`distillery.tokenizer`).

**Logit KD** (`kd`). The teacher's records keep only its top-k log-probabilities per response
token, so the loss compares distributions on that support: both the teacher's and the
student's are renormalised over the same k token ids (softened by the KD temperature T) and

    KD = T^2 * KL(p_teacher || p_student)   averaged over the response tokens

T^2 keeps the gradient scale independent of T (Hinton et al., 2015). Renormalising the
student too makes the loss exactly zero when the two models agree, whatever k is.

**On-policy** (`onPolicy`, `topk_reverse_kl`). The student wrote the tokens and the teacher
grades them: per position, its log-probabilities of its top-k and of the sampled token, over the
full vocabulary. The loss is the student's reverse KL, KL(p_student || p_teacher), on k+1 bins
(each listed token, and "every other token", whose mass each model gives as 1 - the listed
mass). Why this form:
* reverse KL is mode-seeking: a student far smaller than its teacher puts its mass on what the
  teacher would most likely say instead of spreading it over everything the teacher might say,
  and the student is graded on text it writes itself (GKD, Agarwal et al. 2024; MiniLLM; the
  Qwen3 report). GKD's generalized JSD interpolates towards forward KL; reverse KL is its
  on-policy choice and needs no extra knob.
* binning is exact coarse-graining: both bin distributions are true distributions, so the loss
  is >= 0, 0 exactly when the student gives every listed token the teacher's probability (and
  the rest the same total), and never more than the full-vocabulary reverse KL (data
  processing inequality). The "other" bin keeps the student from hiding mass outside the
  teacher's top-k, which renormalising on the top-k alone would not see.
The gradient flows through the student's log-probabilities at the sampled positions; like GKD,
the samples themselves are treated as data (no gradient through the sampling).
"""

from __future__ import annotations

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


# The "other" bin's probability is kept at least this: vLLM's top-k may hold all of the mass
# (the bin is then 0, or below 0 by rounding), and log(0) would make the loss infinite.
REST_FLOOR = 1e-8


def _log_rest(log_listed: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(p)) from log(sum(p)) over the listed tokens, floored at log(REST_FLOOR)."""
    listed = log_listed.clamp(max=0.0)
    return torch.log((-torch.expm1(listed)).clamp(min=REST_FLOOR))


def topk_reverse_kl(
    student_logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """KL(student || teacher) per position on the teacher's listed tokens plus one "other" bin.

    Args:
        student_logits: [N, V] the student's logits at the N positions the teacher graded.
        top_ids: [N, K] the listed token ids per position (the teacher's top-k and the sampled
            token, each once; padding: any id).
        top_logprobs: [N, K] the teacher's full-vocabulary log-probabilities of those ids; `-inf`
            marks padding.
        reduction: "mean" or "sum" over the positions.
    Returns:
        a scalar; 0 when N is 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    valid = torch.isfinite(top_logprobs)
    student_all = torch.log_softmax(student_logits.float(), dim=-1)
    # Padding is set to 0, not -inf, before it is multiplied: exp(-inf) * (-inf - -inf) is NaN, and
    # where() would pass a NaN gradient on even from the branch it does not take.
    student = torch.gather(student_all, 1, top_ids).masked_fill(~valid, 0.0)
    teacher = top_logprobs.float().masked_fill(~valid, 0.0)
    per_entry = torch.where(valid, student.exp() * (student - teacher), torch.zeros_like(student))
    padding = torch.full_like(student, float("-inf"))
    student_rest = _log_rest(torch.logsumexp(torch.where(valid, student, padding), dim=-1))
    teacher_rest = _log_rest(torch.logsumexp(torch.where(valid, teacher, padding), dim=-1))
    per_row = per_entry.sum(dim=-1) + student_rest.exp() * (student_rest - teacher_rest)
    return per_row.sum() if reduction == "sum" else per_row.mean()
