"""The top-k KD loss and the tokenizer check that guards logit KD."""

from __future__ import annotations

import pytest
import torch

from distillery.api import DistillationJob
from distillery.errors import InvalidJob
from distillery.tokenizer import tokenizer_differences
from distillery.training.kd import topk_kd_loss

pytestmark = pytest.mark.unit


def _teacher_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What generation stores: the top-k ids and their (full-vocabulary) log-probabilities."""
    logp = torch.log_softmax(logits, dim=-1)
    values, ids = logp.topk(k, dim=-1)
    return ids, values


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_zero_when_student_equals_teacher(temperature):
    torch.manual_seed(0)
    logits = torch.randn(7, 50)
    ids, logprobs = _teacher_topk(logits, 5)
    loss = topk_kd_loss(logits, ids, logprobs, temperature)
    assert loss.abs().item() < 1e-6


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_positive_when_distributions_differ(temperature):
    torch.manual_seed(0)
    teacher, student = torch.randn(7, 50), torch.randn(7, 50)
    ids, logprobs = _teacher_topk(teacher, 5)
    assert topk_kd_loss(student, ids, logprobs, temperature).item() > 1e-3


def test_student_shifted_by_a_constant_still_agrees():
    # Logits are defined up to a constant per row; the loss must not see it.
    torch.manual_seed(1)
    logits = torch.randn(4, 30)
    ids, logprobs = _teacher_topk(logits, 4)
    assert topk_kd_loss(logits + 3.0, ids, logprobs).abs().item() < 1e-6


def test_padding_entries_are_ignored():
    torch.manual_seed(2)
    teacher, student = torch.randn(3, 40), torch.randn(3, 40)
    ids, logprobs = _teacher_topk(teacher, 3)
    padded_ids = torch.cat([ids, torch.zeros(3, 2, dtype=torch.long)], dim=1)
    padded_logprobs = torch.cat([logprobs, torch.full((3, 2), float("-inf"))], dim=1)
    expected = topk_kd_loss(student, ids, logprobs)
    assert torch.isclose(topk_kd_loss(student, padded_ids, padded_logprobs), expected, atol=1e-6)


def test_sum_is_mean_times_rows_and_empty_is_zero():
    torch.manual_seed(3)
    teacher, student = torch.randn(6, 20), torch.randn(6, 20)
    ids, logprobs = _teacher_topk(teacher, 4)
    mean = topk_kd_loss(student, ids, logprobs, 2.0)
    assert torch.isclose(topk_kd_loss(student, ids, logprobs, 2.0, "sum"), mean * 6)
    empty = torch.zeros(0, 20, requires_grad=True)
    zero = topk_kd_loss(empty, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4))
    assert zero.item() == 0.0
    zero.backward()  # still part of the graph: an empty batch must not break backward


def test_gradient_steps_move_the_student_towards_the_teacher():
    torch.manual_seed(4)
    teacher = torch.randn(5, 30) * 3
    ids, logprobs = _teacher_topk(teacher, 6)
    student = torch.randn(5, 30, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=1.0)
    losses = []
    for _ in range(50):
        loss = topk_kd_loss(student, ids, logprobs, 2.0)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.1 * losses[0]


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def tokenizers():
    from make_tiny_models import build_tokenizer  # hack/ is on sys.path (tests/conftest.py)

    return build_tokenizer(600), build_tokenizer(600), build_tokenizer(400)


def test_same_tokenizer_matches(tokenizers):
    first, second, _ = tokenizers
    assert tokenizer_differences(first, second) == []


def test_different_vocabularies_are_named(tokenizers):
    first, _, other = tokenizers
    problems = tokenizer_differences(first, other)
    expected = f"vocabulary size {len(first.get_vocab())} (student) vs {len(other.get_vocab())} (teacher)"
    assert len(first.get_vocab()) != len(other.get_vocab())
    assert expected in problems, problems


def test_different_special_tokens_are_named(tokenizers):
    first, second, _ = tokenizers
    second.eos_token = "<|pad|>"
    try:
        problems = tokenizer_differences(first, second)
    finally:
        second.eos_token = "<|im_end|>"
    assert problems == ["eos_token '<|im_end|>' (student) vs '<|pad|>' (teacher)"]


def test_kd_with_an_endpoint_teacher_is_refused_with_the_alternative(tmp_path, tokenizers):
    from distillery.tokenizer import check_same_tokenizer

    job = DistillationJob.model_validate(
        {
            "metadata": {"name": "kd"},
            "spec": {
                "teacher": {"endpoint": {"url": "https://llm.example.com/v1", "model": "big"}},
                "student": {"model": "student"},
                "data": {"taskType": "qa", "train": "train.jsonl"},
                "generation": {"topLogprobs": 5},
                "training": {"method": "kd"},
            },
        }
    )
    with pytest.raises(InvalidJob) as caught:
        check_same_tokenizer(job, tmp_path, tokenizers[0])
    message = str(caught.value)
    assert message.startswith("spec.training.method: is 'kd' but the teacher is an endpoint")
    assert "training.method: sft" in message
