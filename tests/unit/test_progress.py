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
    metrics.TRAIN_EPOCH.set(1.5)
    metrics.TRAIN_LOSS.set(0.4213)
    text = generate_latest(metrics.REGISTRY).decode()
    live = live_progress("train", [samples(text)])
    live.pop("on_policy_loss")  # process-wide; phases keeps it for onPolicy jobs only (test_phases)
    assert live == {"step": 120, "epoch": 1.5, "train_loss": 0.4213}


def test_evaluation_progress_is_read_from_the_evaluation_registry():
    from distillery.evaluation import metrics

    metrics.EVAL_MODELS_TOTAL.set(3)
    metrics.EVAL_MODELS_DONE.set(2)
    text = generate_latest(metrics.REGISTRY).decode()
    assert live_progress("evaluate", [samples(text)]) == {"models_done": 2, "models_total": 3}


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
