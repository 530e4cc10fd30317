"""Training tokens/s of two local training "pods" (the Indexed Job's command line: torchrun, c10d on
127.0.0.1, gloo) beside one process taking the same global batch (two micro-batches accumulated).

    .venv/bin/python hack/bench_train_nodes.py [--records 1024]

Makes the tiny models (hack/make_tiny_models.py) in a temporary directory, prints one line per run
and the machine's load. On one machine both "nodes" share its cores, so this measures the
all-reduce's cost, not the speed-up N real nodes bring.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "hack")]

from tests.support.pods import NAME, job_on, report_of, start_pods, wait_all  # noqa: E402
from tests.support.training import answer_records, run_cli, toy_pairs, write_records  # noqa: E402

from make_tiny_models import make_tiny_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1024)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    tiny = make_tiny_models(root / "models", seed=0, pretrain_steps=0)
    pairs = answer_records(toy_pairs(args.records, seed=3), "train")
    two, one = root / "two", root / "one"
    for storage in (two, one):
        write_records(storage, NAME, "train", pairs)

    started = time.monotonic()
    codes = wait_all(start_pods(job_on(two, tiny, nodes=2, batchSize=8, epochs=1), two, 0), two)
    assert codes == [0, 0], codes
    two_wall = time.monotonic() - started

    job = job_on(one, tiny, nodes=1, batchSize=8, gradientAccumulationSteps=2, epochs=1)
    (one / "job.json").write_text(job.model_dump_json(by_alias=True, exclude_none=True))
    started = time.monotonic()
    result = run_cli(["train", "--job", str(one / "job.json"), "--storage", str(one)], one / "termination")
    assert result.returncode == 0, result.stderr[-2000:]
    one_wall = time.monotonic() - started

    for label, storage, wall in (
        ("2 pods x 1 process", two, two_wall),
        ("1 process, 2 micro-batches", one, one_wall),
    ):
        report = report_of(storage)
        print(
            f"{label}: {report['tokens_per_second']:.0f} training tok/s, wall {wall:.1f} s, "
            f"final loss {report['history'][-1]['loss']:.5f}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
