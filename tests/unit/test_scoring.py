"""Evaluation metrics, retention and the quality gate, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from distillery.api import GateSpec, TaskType
from distillery.evaluation import scoring

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ task metrics


def test_bleu_matches_the_hand_computed_geometric_mean():
    # 1-4 gram precisions 4/5, 3/4, 2/3, 1/2; equal lengths so no brevity penalty.
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert scoring.bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(expected, abs=1e-6)


def test_bleu_applies_the_brevity_penalty():
    # Every n-gram of the 4-word hypothesis is in the 6-word reference: BLEU = exp(1 - 6/4).
    assert scoring.bleu(["a b c d"], ["a b c d e f"]) == pytest.approx(math.exp(1 - 6 / 4), abs=1e-6)


def test_bleu_of_identical_text_is_one_and_unrelated_text_near_zero():
    assert scoring.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert scoring.bleu(["x y z w"], ["a b c d"]) < 0.01


def test_rouge_l_is_the_lcs_f_measure_averaged_over_records():
    # "the cat sat" vs "the cat was sat": LCS 3, precision 3/3, recall 3/4 -> F = 6/7.
    # Second record identical -> 1.0.
    value = scoring.rouge_l(["the cat sat", "hello world"], ["the cat was sat", "hello world"])
    assert value == pytest.approx((6 / 7 + 1.0) / 2)


def test_records_without_a_reference_are_left_out():
    assert scoring.rouge_l(["a b", "zzz"], ["a b", None]) == pytest.approx(1.0)
    assert scoring.bleu(["a"], [None]) is None


@pytest.mark.parametrize(
    ("task", "predictions", "references", "expected"),
    [
        # math: the final number counts, wherever the working is.
        (TaskType.math, ["2+3 makes 5. Answer: 5", "Answer: 7", "I think 12"], ["5", "8", "12"], 2 / 3),
        # qa: normalised first line; the reference may appear inside it as whole words.
        (TaskType.qa, ["Paris.", "The capital is Paris", "London"], ["paris", "Paris", "Paris"], 2 / 3),
        # nli: the first label named.
        (
            TaskType.nli,
            ["Entailment.", "neutral", "contradiction"],
            ["entailment", "contradiction", "2"],
            2 / 3,
        ),
    ],
)
def test_accuracy_extracts_answers_per_task(task, predictions, references, expected):
    labels = ["entailment", "neutral", "contradiction"]
    assert scoring.accuracy(task, predictions, references, labels) == pytest.approx(expected)


def test_accuracy_counts_only_records_with_a_reference():
    assert scoring.accuracy(TaskType.math, ["5", "6", "9"], ["5", None, "1"], []) == pytest.approx(1 / 2)
    assert scoring.accuracy(TaskType.math, ["5"], [None], []) is None


def test_teacher_agreement_compares_extracted_answers():
    # Student answers 5, 7, (nothing); teacher answered 5, 8, 3 -> 1 of 3 agree.
    value = scoring.teacher_agreement(
        TaskType.math, ["so 5", "Answer: 7", "no idea"], ["Answer: 5", "it is 8", "3"], []
    )
    assert value == pytest.approx(1 / 3)
    # A teacher answer that is missing (not generated) is left out, not counted as a miss.
    assert scoring.teacher_agreement(TaskType.math, ["5", "6"], ["5", None], []) == pytest.approx(1.0)


def test_teacher_agreement_for_free_text_is_rouge_l_against_the_teacher():
    value = scoring.teacher_agreement(TaskType.summarization, ["the cat sat"], ["the cat was sat"], [])
    assert value == pytest.approx(6 / 7)


def test_task_scores_pick_the_task_metric_as_score():
    out = scoring.task_scores(
        TaskType.summarization, ["bleu"], ["the cat sat"], ["the cat was sat"], None, []
    )
    # rougeL is always computed for summarization (it is the score); no teacher -> no agreement.
    assert out["score"] == out["rougeL"] == pytest.approx(6 / 7)
    assert "bleu" in out
    assert "teacherAgreement" not in out
    out = scoring.task_scores(
        TaskType.qa, ["accuracy", "bleu", "rougeL", "teacherAgreement"], ["Paris"], ["paris"], ["Rome"], []
    )
    assert out["score"] == out["accuracy"] == 1.0
    assert out["teacherAgreement"] == 0.0
    assert "bleu" not in out and "rougeL" not in out  # overlap metrics mean nothing for one-word answers


def test_token_f1_is_squad_f1_of_the_extracted_answer():
    # "the big red barn" -> answer tokens [big, red, barn]; reference "red barn" -> P 2/3, R 1 -> F1 0.8.
    # Second record: no overlap -> 0.
    value = scoring.token_f1(["The big red barn.", "blue"], ["red barn", "green"])
    assert value == pytest.approx((0.8 + 0.0) / 2)
    out = scoring.task_scores(TaskType.qa, ["f1"], ["red barn"], ["Red barn"], None, [])
    assert out["f1"] == pytest.approx(1.0)


# ------------------------------------------------------------------ serving metrics


def test_percentiles_interpolate_linearly_between_ranks():
    values = [40.0, 10.0, 30.0, 20.0]
    assert scoring.percentile(values, 50) == pytest.approx(25.0)
    # rank 3 * 0.95 = 2.85 -> 30 + 0.85 * (40 - 30)
    assert scoring.percentile(values, 95) == pytest.approx(38.5)
    assert scoring.percentile([7.0], 95) == 7.0
    assert scoring.percentile([], 50) is None


def test_serving_metrics_rates_are_per_second_of_wall_time():
    out = scoring.serving_metrics([100.0, 200.0, 300.0, 400.0], output_tokens=120, wall_seconds=2.0)
    assert out["latencyP50Ms"] == pytest.approx(250.0)
    assert out["latencyMeanMs"] == pytest.approx(250.0)
    assert out["outputTokensPerSecond"] == pytest.approx(60.0)
    assert out["responsesPerSecond"] == pytest.approx(2.0)
    assert scoring.serving_metrics([100.0], 10, None)["outputTokensPerSecond"] is None


# ------------------------------------------------------------------ retention and the gate


def test_retention_and_improvement():
    assert scoring.retention(0.45, 0.9) == pytest.approx(0.5)
    assert scoring.retention(0.45, 0.0) is None
    assert scoring.retention(None, 0.9) is None
    assert scoring.improvement(0.6, 0.4) == {"absolute": pytest.approx(0.2), "relative": pytest.approx(0.5)}
    assert scoring.improvement(0.6, 0.0) == {"absolute": pytest.approx(0.6), "relative": None}


def test_gate_passes_when_every_threshold_holds():
    gate = GateSpec(min_retention=0.9, min_score=0.5, max_latency_ms=200)
    result = scoring.apply_gate(gate, "accuracy", score=0.81, retention_=0.9, latency_p95_ms=150.0)
    assert result.passed
    assert [c["name"] for c in result.checks] == ["minRetention", "minScore", "maxLatencyMs"]
    assert "retention 0.9 >= minRetention 0.9" in result.reason


def test_gate_failure_names_each_failed_threshold_with_value():
    gate = GateSpec(min_retention=0.9, min_score=0.5, max_latency_ms=200)
    result = scoring.apply_gate(gate, "accuracy", score=0.4, retention_=0.95, latency_p95_ms=250.0)
    assert not result.passed
    assert result.reason == (
        "quality gate failed: accuracy 0.4 < minScore 0.5; p95 latency 250 ms > maxLatencyMs 200"
    )


def test_gate_fails_when_a_checked_value_is_unknown():
    result = scoring.apply_gate(GateSpec(min_retention=0.5), "accuracy", 0.3, None, 10.0)
    assert not result.passed
    assert "retention unknown" in result.reason


def test_empty_gate_passes_and_says_so():
    result = scoring.apply_gate(GateSpec(), "rougeL", 0.1, None, None)
    assert result.passed
    assert "no quality gate" in result.reason
