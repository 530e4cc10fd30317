"""The operator reads a running stage's progress from the stage's own /metrics exposition."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from distillery.controller.progress import live_progress, running_pods, samples

pytestmark = pytest.mark.unit


def test_training_progress_is_read_from_the_training_registry():
    # The training process's own registry and series, exposed as its pod serves them.
    from distillery.training import metrics

    metrics.TRAIN_STEP.set(120)
    metrics.TRAIN_STEPS.set(300)
    metrics.TRAIN_TOKENS_PER_SECOND.set(5120.5)
    metrics.TRAIN_EPOCH.set(1.5)
    metrics.TRAIN_LOSS.set(0.4213)
    text = generate_latest(metrics.REGISTRY).decode()
    live = live_progress("train", [samples(text)])
    live.pop("on_policy_loss")  # process-wide; phases keeps it for onPolicy jobs only (test_phases)
    assert live == {
        "step": 120,
        "steps_total": 300,
        "epoch": 1.5,
        "train_loss": 0.4213,
        "tokens_per_second": 5120.5,
    }


def test_evaluation_progress_is_read_from_the_evaluation_registry():
    from distillery.evaluation import metrics

    metrics.EVAL_MODELS_TOTAL.set(3)
    metrics.EVAL_MODELS_DONE.set(2)
    text = generate_latest(metrics.REGISTRY).decode()
    assert live_progress("evaluate", [samples(text)]) == {"models_done": 2, "models_total": 3}


def test_generation_progress_is_summed_over_the_running_shards():
    """Two shard pods, each serving the generation registry as its process would (one registry per
    process: the second pod's exposition is taken after setting the gauges again)."""
    from distillery.generation import metrics

    pods = []
    for prompts, done, records, rate in ((2500, 1000, 990, 400.0), (2500, 850, 800, 350.5)):
        metrics.GEN_PROMPTS.set(prompts)
        metrics.GEN_PROMPTS_DONE.set(done)
        metrics.GEN_RECORDS_ACCEPTED.set(records)
        metrics.GEN_OUTPUT_TOKENS_PER_SECOND.set(rate)
        pods.append(samples(generate_latest(metrics.REGISTRY).decode()))
    for gauge in (
        metrics.GEN_PROMPTS,
        metrics.GEN_PROMPTS_DONE,
        metrics.GEN_RECORDS_ACCEPTED,
        metrics.GEN_OUTPUT_TOKENS_PER_SECOND,
    ):
        gauge.set(0)  # a third shard, still counting its inputs
    pods.append(samples(generate_latest(metrics.REGISTRY).decode()))
    assert live_progress("generate", pods) == {
        "prompts_done": 1850,
        "prompts_total": 5000,
        "records": 1790,
        "tokens_per_second": 750.5,
        "shards_reporting": 2,
    }


def test_a_pod_that_reports_nothing_adds_nothing():
    assert (
        live_progress("train", [{}]) == {}
        and live_progress("generate", [{"distillery_train_step": 3.0}]) == {}
    )


def test_only_running_pods_of_the_stage_are_scraped():
    def pod(stage, phase, ip):
        return {
            "metadata": {"labels": {"distillery.dev/stage": stage}},
            "status": {"phase": phase, "podIP": ip},
        }

    children = {
        "Pod": [
            pod("train", "Running", "10.0.0.1"),
            pod("train", "Succeeded", "10.0.0.2"),
            pod("evaluate", "Running", "10.0.0.3"),
            pod("train", "Pending", None),
        ]
    }
    assert running_pods(children, "train") == ["10.0.0.1"]
