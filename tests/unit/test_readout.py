"""Progress a person can read: percent, ETA, counts and durations, and the `kubectl get dj` line."""

from __future__ import annotations

import pytest

from distillery.api import Progress
from distillery.controller import readout

pytestmark = pytest.mark.unit


def test_eta_is_none_until_a_rate_is_known():
    assert readout.eta_seconds(0, 5000, 600) is None  # nothing done yet
    assert readout.eta_seconds(100, 5000, 0) is None  # no time passed: no division by zero
    assert readout.eta_seconds(100, None, 600) is None  # no total
    assert readout.eta_seconds(100, 0, 600) is None
    assert readout.eta_seconds(None, 5000, 600) is None
    assert readout.eta_seconds(100, 5000, None) is None


def test_eta_is_the_work_left_at_the_rate_since_the_stage_started_in_whole_minutes():
    # 1850 of 5000 in 444 s: 3150 left at 4.17/s = 756 s, 12.6 min -> 13 min.
    assert readout.eta_seconds(1850, 5000, 444) == 13 * 60
    assert readout.eta_seconds(5000, 5000, 444) == 0
    assert readout.eta_seconds(6000, 5000, 444) == 0  # a count past the total never goes negative


def test_eta_is_monotonic():
    # More done in the same time never gives a later ETA ...
    by_done = [readout.eta_seconds(done, 5000, 600) for done in range(1, 5001, 7)]
    assert by_done == sorted(by_done, reverse=True)
    # ... and at a steady rate (5 prompts/s) it only falls as time passes.
    steady = [readout.eta_seconds(5 * t, 5000, t) for t in range(1, 1001)]
    assert steady == sorted(steady, reverse=True) and steady[-1] == 0


def test_percent_is_whole_rounded_down_and_bounded():
    assert readout.percent(1850, 5000) == 37
    assert readout.percent(4999, 5000) == 99  # 100 only when all is done
    assert readout.percent(5000, 5000) == 100 and readout.percent(6000, 5000) == 100
    assert readout.percent(0, 5000) == 0
    assert readout.percent(10, 0) is None and readout.percent(10, None) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "<1m"), (29, "<1m"), (60, "1m"), (720, "12m"), (3900, "1h05m"), (86400 + 3 * 3600, "1d03h")],
)
def test_durations_read_as_a_person_writes_them(seconds, text):
    assert readout.duration_text(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (1850, "1850"),
        (9999, "9999"),
        (12345, "12.3k"),
        (123456, "123k"),
        (1_234_567, "1.23M"),
        (5_000_000_000, "5B"),
    ],
)
def test_counts_are_exact_when_small_and_three_figures_when_large(n, text):
    assert readout.count_text(n) == text


def test_the_generation_line_shows_percent_prompts_and_eta():
    live = {"prompts_done": 1850, "prompts_total": 5000, "tokens_per_second": 1234.5, "shards_reporting": 1}
    figures = readout.generation(1, 0, 0, live, 444)
    assert figures["summary"] == "generate 37% (1850/5000 prompts, ETA 13m)"
    assert (
        figures["percent"],
        figures["eta_seconds"],
        figures["prompts_done"],
        figures["prompts_total"],
    ) == (
        37,
        780,
        1850,
        5000,
    )
    assert figures["tokens_per_second"] == 1230  # three figures: it goes to status only with a move


def test_the_generation_line_before_any_shard_has_counted_its_prompts():
    figures = readout.generation(4, 0, 0, {}, 30)
    assert figures["summary"] == "generate counting prompts (0/4 shards done)"
    assert figures["percent"] is None and figures["eta_seconds"] is None and figures["prompts_total"] is None


def test_the_generation_total_is_estimated_until_every_shard_has_counted():
    # 4 shards: one finished (1250 prompts), one running (500 of 1250 done), two not started.
    live = {"prompts_done": 500, "prompts_total": 1250, "shards_reporting": 1}
    figures = readout.generation(4, 1, 1250, live, 600)
    assert figures["prompts_total"] is None and figures["percent"] == 35  # 1750 of ~5000
    assert figures["summary"] == "generate ~35% (1750 prompts, 1/4 shards, ETA 19m)"
    every = readout.generation(2, 1, 1250, live, 600)  # 2 shards: all counted
    assert every["summary"] == "generate 70% (1750/2500 prompts, 1/2 shards, ETA 4m)"


def test_the_training_line_uses_updates_when_their_total_is_known_else_epochs():
    progress = Progress(step=500, steps_total=1200, epoch=1.25, train_loss=0.4213)
    figures = readout.training(progress, 3, 1800)
    assert figures["summary"] == "train 41% (step 500/1200, epoch 1.25/3, loss 0.421, ETA 42m)"
    by_epoch = readout.training(Progress(epoch=1.5), 3, None)
    assert by_epoch["summary"] == "train 50% (epoch 1.50/3)" and by_epoch["eta_seconds"] is None
    assert readout.training(Progress(), 3, 10)["summary"] == "train starting"


def test_the_evaluation_line_counts_models():
    figures = readout.evaluation(Progress(models_done=1, models_total=3), 300)
    assert figures["summary"] == "evaluate 33% (1/3 models, ETA 10m)"
    assert readout.evaluation(Progress(), 300)["summary"] == "evaluate running"


def test_figures_move_only_where_a_person_sees_it():
    old = Progress(percent=37, eta_seconds=780, shards_done=0, prompts_done=1850, tokens_per_second=1230)
    assert not readout.moved(old, old.model_copy(update={"prompts_done": 1862, "tokens_per_second": 1240}))
    assert readout.moved(old, old.model_copy(update={"percent": 38}))
    assert readout.moved(old, old.model_copy(update={"eta_seconds": 720}))
    assert readout.moved(old, old.model_copy(update={"shards_done": 1}))
    assert readout.moved(None, old)
