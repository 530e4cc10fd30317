#!/usr/bin/env python3
"""End to end: wall time of `distillery run examples/tiny.yaml` from nothing, split by stage.

    python hack/bench_e2e.py [--out build/bench-e2e]

Runs what the README's first command runs, on a fresh storage directory (OUT, emptied first, so no
stage is skipped as already done): hack/prepare_tiny.py (tiny models and prompts), then
`distillery run examples/tiny.yaml --storage OUT` as a subprocess. Stage times are the runner's
own `[n/3] STAGE: done in Ns` lines; `generate` includes starting and stopping the teacher's vLLM
and `evaluate` includes starting vLLM for the teacher, the baseline and the student, one at a time. Prints one line per
stage, the student's scores, and a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HACK))

from bench_quality import stage_times  # noqa: E402
from prepare_tiny import PRETRAIN_STEPS, TRAIN_PROMPTS, VALIDATION_PROMPTS, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "build" / "bench-e2e", help="storage (emptied first)"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    load_start = os.getloadavg()[0]
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    prepare(
        out, TRAIN_PROMPTS, VALIDATION_PROMPTS, PRETRAIN_STEPS, 0, force=True
    )  # prepare_tiny.py's defaults
    prepare_s = time.monotonic() - started

    command = [
        sys.executable,
        "-m",
        "distillery",
        "run",
        str(REPO / "examples" / "tiny.yaml"),
        "--storage",
        str(out),
    ]
    print("bench-e2e: " + " ".join(command), flush=True)
    run_started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        sys.stderr.write(line)
        lines.append(line)
    process.wait()
    run_s = time.monotonic() - run_started
    stages = stage_times("".join(lines))
    from distillery.storage import Layout

    report_path = Layout(out, "tiny").evaluation_report
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    models = report.get("models", {})
    print()
    print(f"prepare_tiny.py      {prepare_s:5.0f}s")
    for stage, seconds in stages.items():
        print(f"{stage:20} {seconds:5d}s")
    print(f"distillery run total {run_s:5.0f}s (exit code {process.returncode})")
    print(
        "accuracy: "
        + ", ".join(f"{n} {models[n]['score']:.3f}" for n in models if models[n].get("score") is not None)
    )
    summary = {
        "prepare_seconds": round(prepare_s, 1),
        "stages": stages,
        "run_seconds": round(run_s, 1),
        "exit_code": process.returncode,
        "scores": {n: m.get("score") for n, m in models.items()},
        "retention": report.get("retention"),
        "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary, sort_keys=True))
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
