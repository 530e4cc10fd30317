"""The chaos run's pure parts (tests/support/chaos.py, the API front's FrontFaults): the seeded schedule,
which pod role a fault may hit, and the status-phase check."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from tests.harness.apifront import FAULT_KINDS, FrontFaults
from tests.support.chaos import (
    COOLDOWN_SECONDS,
    EVICT,
    GAP_SECONDS,
    KILL,
    MAX_HITS,
    ROLES,
    choose,
    eligible,
    phase_violations,
    role_of,
    schedule,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(20))
def test_schedule_spaces_faults_15_to_30_seconds_with_a_drain_early(seed):
    faults = schedule(seed, 600)
    times = [0.0] + [f.at for f in faults]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(GAP_SECONDS[0] - 0.1 <= gap <= GAP_SECONDS[1] + 0.1 for gap in gaps), gaps
    assert 600 - GAP_SECONDS[1] <= faults[-1].at <= 600
    assert any(f.kind == EVICT for f in faults[:3]), faults[:3]
    assert {f.kind for f in faults} <= {KILL, EVICT} and {f.target for f in faults} <= set(ROLES)


def test_schedule_is_replayed_from_its_seed_and_differs_between_seeds():
    assert schedule(7, 900) == schedule(7, 900)
    assert schedule(7, 900) != schedule(8, 900)
    # A longer run extends the same schedule: a replay with another duration sees the same first faults.
    assert schedule(7, 900)[:10] == schedule(7, 2000)[:10]
    # Over many seeds every role is aimed at, and about a quarter of the faults are drains.
    faults = [f for seed in range(50) for f in schedule(seed, 600)]
    assert Counter(f.target for f in faults).keys() == set(ROLES)
    assert 0.15 < sum(f.kind == EVICT for f in faults) / len(faults) < 0.4


def test_a_short_run_has_no_faults():
    assert schedule(1, 10) == []


@pytest.mark.parametrize(
    ("namespace", "owner", "role"),
    [
        ("distillery-system", "ReplicaSet/whatever", "operator"),
        ("e2e", "Job/tiny-train", "train"),
        ("e2e", "Job/tiny-generate", "generate"),
        ("e2e", "Deployment/tiny-teacher", "teacher"),
        ("e2e", "Job/tiny-check", "check"),
        ("e2e", "Job/tiny-evaluate", "evaluate"),
        ("e2e", "Job/other-train", None),
        ("e2e", "", None),
        ("e2e", "Job/tiny-export", None),
    ],
)
def test_role_of_a_pod(namespace, owner, role):
    assert role_of(namespace, owner, "tiny", "distillery-system") == role


def test_a_role_is_hit_only_when_up_out_of_its_cooldown_and_under_its_cap():
    now = 100.0
    up = ["train", "operator", "teacher"]
    assert eligible(up, {}, {}, now) == ["operator", "teacher", "train"]
    assert eligible(up, {}, {"train": now - COOLDOWN_SECONDS + 1}, now) == ["operator", "teacher"]
    assert eligible(up, {}, {"train": now - COOLDOWN_SECONDS}, now) == ["operator", "teacher", "train"]
    assert eligible(up, {"teacher": MAX_HITS["teacher"]}, {}, now) == ["operator", "train"]
    assert eligible([], {}, {}, now) == []


def test_choose_prefers_the_target_else_draws_another_role():
    rng = random.Random(0)
    assert choose("train", ["operator", "train"], rng) == "train"
    assert choose("check", ["operator", "train"], rng) in ("operator", "train")
    assert choose("check", [], rng) is None
    drawn = {choose("check", ["operator", "train"], random.Random(seed)) for seed in range(20)}
    assert drawn == {"operator", "train"}


@pytest.mark.parametrize(
    ("phases", "problems"),
    [
        ([None, None, "Pending", "Generating", "Training", "Succeeded"], 0),
        ([None, "Generating", "Generating", "Evaluating"], 0),
        (["Pending", "Generating", None, "Generating"], 1),
        (["Pending", "Generating", "", "Generating"], 1),
        (["Pending", "Generating", "Pending", "Generating"], 1),
        (["Generating", None, "Pending"], 2),
    ],
)
def test_phase_violations(phases, problems):
    assert len(phase_violations(phases)) == problems, phase_violations(phases)


def test_front_faults_hit_about_the_ratio_with_every_kind_and_replay_from_the_seed():
    faults = FrontFaults(3)
    draws = [faults.draw() for _ in range(4000)]
    hit = [d for d in draws if d is not None]
    assert 0.08 < len(hit) / len(draws) < 0.12
    assert set(hit) == set(FAULT_KINDS)
    again = FrontFaults(3)
    assert [again.draw() for _ in range(4000)] == draws
    other = FrontFaults(4)
    assert [other.draw() for _ in range(4000)] != draws
    # Off: a ratio of 0 injects nothing.
    off = FrontFaults(3, ratio=0.0)
    assert {off.draw() for _ in range(1000)} == {None}


def test_front_faults_end_watches_at_each_boundary():
    faults = FrontFaults(1, watch_seconds=60)
    start = faults.started
    assert faults.watch_end(start) == start + 60
    assert faults.watch_end(start + 59.9) == start + 60
    assert faults.watch_end(start + 60) == start + 120
    assert faults.watch_end(start + 185) == start + 240


def test_the_runs_result_line_is_what_the_benchmark_reads():
    import bench_chaos  # hack/ is on sys.path (tests/conftest.py)
    from tests.support.chaos import parse_result, result_line

    output = "noise\n" + result_line(4, 300.04, Counter({"kill": 5, "evict": 1, "500": 6})) + "\nmore\n"
    result = parse_result(output)
    assert result == {"seed": 4, "wall_seconds": 300.0, "faults": {"kill": 5, "evict": 1, "500": 6}}
    assert parse_result("no result here") is None
    line = bench_chaos.row("seed 4", True, result, baseline=180.0)
    assert "wall  300.0 s" in line and "+10.0 s/fault" in line and "kill=5" in line and "timeout=0" in line
    assert "FAIL" in bench_chaos.row("seed 5", False, None, 180.0)
