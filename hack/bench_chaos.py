#!/usr/bin/env python3
"""What chaos costs: the tiny job in the container tier with no faults, then under N seeds of faults.

    python hack/bench_chaos.py [--seeds 5] [--first 1]

Runs tests/containers/test_chaos.py through pytest once with DISTILLERY_CHAOS_SEED=baseline (the same
job, no faults) and once per seed (DISTILLERY_CHAOS_SEED=N), one after another (the container tier runs
one job at a time), and prints per seed: whether it passed, the faults injected by kind (pod kills and
drains from the driver, 500 / 429 / timeout / watch-end from the API front, skipped faults), the job's
wall time, and what each fault cost: (wall time - the baseline's) / faults injected. Needs the engine
and images as the tier does (DOCKER_HOST=$(hack/container-engine.sh); hack/build-images.sh).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.chaos import parse_result  # noqa: E402  (the run's result line, written and read in one place)

FAULT_KINDS = ("kill", "evict", "500", "429", "timeout", "watch-end")


def row(name: str, passed: bool, result: dict | None, baseline: float | None) -> str:
    """One line of the table: kinds counted, wall time, cost per injected fault against the baseline."""
    if result is None:
        return f"{name:>9}  {'pass' if passed else 'FAIL':4}  (no result: see its log)"
    faults = result["faults"]
    counts = " ".join(f"{kind}={faults.get(kind, 0)}" for kind in (*FAULT_KINDS, "skipped"))
    wall = result["wall_seconds"]
    injected = sum(faults.get(kind, 0) for kind in FAULT_KINDS)
    cost = f"{(wall - baseline) / injected:+6.1f} s/fault" if baseline is not None and injected else "      -"
    return f"{name:>9}  {'pass' if passed else 'FAIL':4}  wall {wall:6.1f} s  {cost}  {counts}"


def run(seed: str, log: Path) -> tuple[bool, dict | None]:
    env = {**os.environ, "DISTILLERY_CHAOS_SEED": seed, "PYTHONPATH": str(REPO / "operator")}
    command = [sys.executable, "-m", "pytest", "-m", "chaos", "-s", "-p", "no:cacheprovider"]
    command.append("tests/containers/test_chaos.py")
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    return code == 0, parse_result(log.read_text(errors="replace"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--logs", type=Path, default=REPO / "build" / "bench-chaos")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    passed, base = run("baseline", args.logs / "baseline.log")
    baseline = base["wall_seconds"] if passed and base else None
    print(row("baseline", passed, base, None), flush=True)
    failures = 0 if passed else 1
    for seed in range(args.first, args.first + args.seeds):
        ok, result = run(str(seed), args.logs / f"seed-{seed}.log")
        failures += not ok
        print(row(f"seed {seed}", ok, result, baseline), flush=True)
    print(f"logs: {args.logs}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
