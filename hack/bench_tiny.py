#!/usr/bin/env python3
"""The README's first command N times: per-run wall time, retention, teacher/student latency and tokens/s.

    python hack/bench_tiny.py [--runs 5] [--out build/bench-tiny]

hack/prepare_tiny.py once into OUT (models remade, so they are the script's deterministic ones), then
N times: OUT's jobs/ emptied (every stage runs again) and `distillery run examples/tiny.yaml --storage
OUT` timed as a subprocess. Each run's figures come from its report (`evaluation.json`), where the
evaluation measured the teacher, the baseline and the student the same way, and from its log: each
stage's time and each vLLM start's (`log_times`). The 1-minute load
average is printed beside each run: on a shared machine the wall time says more about the others'
work than about this one's. Prints a table, the medians, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HACK))

from prepare_tiny import PRETRAIN_STEPS, TRAIN_PROMPTS, VALIDATION_PROMPTS, prepare  # noqa: E402

# (name, format): each column as wide as its name.
COLUMNS = (
    ("run", "d"),
    ("wall_s", ".0f"),
    ("exit", "d"),
    ("retention", ".3f"),
    ("teacher_p50_ms", ".0f"),
    ("student_p50_ms", ".0f"),
    ("teacher_tok_s", ".0f"),
    ("student_tok_s", ".0f"),
    ("teacher_cpu_ms_tok", ".1f"),
    ("student_cpu_ms_tok", ".1f"),
    ("generate_s", ".0f"),
    ("train_s", ".0f"),
    ("evaluate_s", ".0f"),
    ("vllm_ready_s", "s"),
    ("load_before", ".2f"),
    ("load_after", ".2f"),
)

# What `distillery run` prints: `[1/3] generate: done in 32s` (local.runner.timed) and
# `vllm: 'teacher' ready in 27s` (serving.vllm.local_vllm_server).
STAGE_DONE = re.compile(r"^\[\d+/\d+\] (?P<stage>\w+): done in (?P<seconds>\d+)s$")
SERVER_READY = re.compile(r"^vllm: '(?P<name>[^']+)' ready in (?P<seconds>\d+)s$")


def log_times(text: str) -> dict:
    """Each stage's wall seconds and each vLLM start's seconds (in order, as `18/11/12`) from a run's log."""
    times: dict = {}
    starts = []
    for line in text.splitlines():
        if found := STAGE_DONE.match(line.strip()):
            times[f"{found['stage']}_s"] = float(found["seconds"])
        elif found := SERVER_READY.match(line.strip()):
            starts.append(found["seconds"])
    times["vllm_ready_s"] = "/".join(starts) or None
    return times


def one_run(number: int, out: Path) -> dict:
    """`distillery run` on OUT with its jobs/ emptied; the figures from the report it wrote."""
    from distillery.contract.report import EvaluationReport
    from distillery.storage import Layout

    shutil.rmtree(out / "jobs", ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "distillery",
        "run",
        str(REPO / "examples" / "tiny.yaml"),
        "--storage",
        str(out),
    ]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    log = out / f"bench-run-{number}.log"
    with log.open("w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    report = EvaluationReport.read(Layout(out, "tiny").evaluation_report)
    teacher, student = report.models["teacher"], report.models["student"]
    return {
        "run": number,
        "wall_s": wall,
        "exit": code,
        "retention": report.retention,
        "teacher_p50_ms": teacher.latency_p50_ms,
        "student_p50_ms": student.latency_p50_ms,
        "teacher_tok_s": teacher.output_tokens_per_second,
        "student_tok_s": student.output_tokens_per_second,
        "teacher_cpu_ms_tok": teacher.cpu_ms_per_output_token,
        "student_cpu_ms_tok": student.cpu_ms_per_output_token,
        **log_times(log.read_text(errors="replace")),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "comparable": report.measurement.comparable if report.measurement else False,
        "log": str(log),
    }


def row(values: dict) -> str:
    return "  ".join(
        format(values[name], f">{len(name)}{form}") if values.get(name) is not None else f"{'-':>{len(name)}}"
        for name, form in COLUMNS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many times to run it (default 5)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "build" / "bench-tiny", help="storage (emptied first)"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    prepare(
        out, TRAIN_PROMPTS, VALIDATION_PROMPTS, PRETRAIN_STEPS, 0, force=True
    )  # prepare_tiny.py's defaults
    print("uptime: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    print(
        "  ".join(f"{name:>{len(form.format(0)) if 'f' in form else 3}}" for name, form in COLUMNS),
        flush=True,
    )
    runs = []
    for number in range(1, args.runs + 1):
        runs.append(one_run(number, out))
        print(row(runs[-1]), flush=True)
    median = {}
    for name, _ in COLUMNS[1:]:
        values = [r[name] for r in runs if r.get(name) is not None]
        if name not in ("exit", "vllm_ready_s") and values:
            median[name] = statistics.median(values)
    print("med" + row(median)[3:])
    print("uptime: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(json.dumps({"runs": runs, "median": median}, sort_keys=True))
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
