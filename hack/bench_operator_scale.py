#!/usr/bin/env python3
"""Operator scale: N DistillationJobs created at once, or a steady rate of new ones; the operator in its own process.

    python hack/bench_operator_scale.py [--jobs 1,100,1000] [--steady 30] [--resync-seconds S]
    python hack/bench_operator_scale.py --rate 50 --duration 60 [--steady 30]
    ... [--api-qps Q --api-burst B]   # the operator's write limit (default: its own, the chart's)

For each run, a fresh API server (hack/flat_apiserver.py, its own process: O(1) per get / create /
patch, so the figures describe the operator, not the stand-in; kmock's emulator re-filters its
whole request history per request) and a fresh `distillery operator --namespace bench` (its own
process, KUBECONFIG pointing at the server, the shipped resync interval unless --resync-seconds
says otherwise); hack/operator_stand.py sets both up. Then:

0. one warm-up job, waited for until it has its Deployment (the cold start: imports, first
   connections), so the figures below describe a running operator;
1. the N jobs are POSTed as fast as the API takes them (64 in flight), or (--rate) the i-th at
   i / rate seconds, open loop, for --duration seconds;
2. per job, the time from its creation to its first child (of any kind) and to its teacher
   Deployment, both server-side creation times (p50 / p95 / p99 / max), and until the last one;
3. reconcile latency p50 / p95: `distillery_reconcile_duration_seconds` scraped from the operator,
   interpolated in its buckets as Prometheus' histogram_quantile does;
4. the operator's CPU time (user + system, /proc) from the first create to the last Deployment, per
   job; its writes per job (creates, patches, deletes, Events, from the server's count); its peak
   RSS (VmHWM) and its RSS at rest (VmRSS after the steady window);
5. steady state: once the operator has caught up (no API request for 3 s), for --steady seconds,
   API requests/s and the operator's CPU use: with event-driven reconciling nothing should happen
   while nothing changes (the resync safety net runs every 5 minutes); the API server's own CPU is
   shown beside it, to tell whether the stand-in or the operator is the limit.

Nothing runs a pod. The API server completes each job's input check Job as it is created: first a
succeeded pod of it whose termination message is the check stage's summary (as a check pod that
found the inputs leaves), then the Job Complete. So the time to the teacher Deployment spans two
reconciles of the job, as on a cluster: create -> check Job (its first child); check complete ->
teacher. The jobs then stay at TeacherStarting, which is the point where the operator's per-job cost
is its steady cost. Prints one line per run and a JSON summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "hack"))

from operator_stand import Stand, create_jobs, create_paced  # noqa: E402


def burst(count: int, args: argparse.Namespace, work: Path) -> dict:
    """N jobs POSTed at once (64 in flight), then a steady window."""
    with Stand(args, work, str(count)) as stand:
        cpu0, api0 = stand.proc.cpu(), stand.api.cpu()
        started = time.monotonic()
        asyncio.run(create_jobs(stand.url, count))
        created_s = time.monotonic() - started
        stand.wait_for_deployments(count)
        all_s = time.monotonic() - started
        cpu_s, api_s = stand.proc.cpu() - cpu0, stand.api.cpu() - api0
        to_first, to_teacher = stand.delays(count)
        stand.settle(started, all_s + args.settle)
        result = {
            "mode": "burst",
            "create_seconds": round(created_s, 2),
            "all_deployments_seconds": round(all_s, 2),
            "api_server_cpu_seconds_to_all_deployments": round(api_s, 2),
            **stand.common(count, cpu_s, to_first, to_teacher),
            **stand.steady(args.steady),
        }
    r = result
    print(
        f"{count:5d} jobs at once ({r['api_write_limit']}): created in {created_s:.1f}s; all teacher "
        f"Deployments after {all_s:.1f}s; create->first child p50 {r['first_child_delay_p50_s']:.2f}s "
        f"p95 {r['first_child_delay_p95_s']:.2f}s; create->teacher Deployment p50 "
        f"{r['deployment_delay_p50_s']:.2f}s p95 {r['deployment_delay_p95_s']:.2f}s max "
        f"{r['deployment_delay_max_s']:.2f}s; reconcile p50 {r['reconcile_p50_ms']} ms p95 "
        f"{r['reconcile_p95_ms']} ms over {r['reconciles']}; operator CPU {r['cpu_ms_per_job']} ms/job, "
        f"{r['writes_per_job']} writes/job; RSS {r['idle_rss_mib']} -> peak {r['peak_rss_mib']} MiB, "
        f"{r['rss_at_rest_mib']} MiB at rest; steady: {r['steady_requests_per_s']} API requests/s, operator "
        f"CPU {r['steady_operator_cpu_percent']}%, API server CPU {r['steady_api_server_cpu_percent']}%; "
        f"cold start {stand.cold_s:.1f}s; load {r['loadavg_1m']}",
        flush=True,
    )
    return result


def sustained(rate: float, duration: float, args: argparse.Namespace, work: Path) -> dict:
    """`rate` new jobs a second for `duration` seconds, then a steady window."""
    count = round(rate * duration)
    with Stand(args, work, f"rate{rate:g}x{duration:g}") as stand:
        cpu0 = stand.proc.cpu()
        started = time.monotonic()
        created_s = asyncio.run(create_paced(stand.url, rate, duration))
        stand.wait_for_deployments(count)
        all_s = time.monotonic() - started
        cpu_s = stand.proc.cpu() - cpu0
        to_first, to_teacher = stand.delays(count)
        stand.settle(started, all_s + args.settle)
        result = {
            "mode": "sustained",
            "rate_per_s": rate,
            "duration_s": duration,
            "create_seconds": round(created_s, 2),
            "all_deployments_seconds": round(all_s, 2),
            "operator_cpu_percent_while_creating": round(cpu_s / all_s * 100, 1),
            **stand.common(count, cpu_s, to_first, to_teacher),
            **stand.steady(args.steady),
        }
    r = result
    print(
        f"{rate:g} jobs/s for {duration:g}s ({count} jobs, {r['api_write_limit']}): created over "
        f"{created_s:.1f}s, all teacher Deployments after {all_s:.1f}s; create->first child p50 "
        f"{r['first_child_delay_p50_s']:.2f}s p95 {r['first_child_delay_p95_s']:.2f}s p99 "
        f"{r['first_child_delay_p99_s']:.2f}s; create->teacher Deployment p50 {r['deployment_delay_p50_s']:.2f}s "
        f"p95 {r['deployment_delay_p95_s']:.2f}s p99 {r['deployment_delay_p99_s']:.2f}s; operator CPU "
        f"{r['cpu_ms_per_job']} ms/job ({r['operator_cpu_percent_while_creating']}% of a core), "
        f"{r['writes_per_job']} writes/job; RSS {r['rss_at_rest_mib']} MiB at rest; steady: "
        f"{r['steady_requests_per_s']} API requests/s, operator CPU {r['steady_operator_cpu_percent']}%; "
        f"load {r['loadavg_1m']}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", default="1,100,1000", help="comma-separated job counts (default 1,100,1000)"
    )
    parser.add_argument(
        "--steady", type=float, default=30.0, help="steady-state window in seconds (default 30)"
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=None,
        help="DISTILLERY_RESYNC_SECONDS for the operator (default: the shipped 300)",
    )
    parser.add_argument(
        "--rate", type=float, help="instead of bursts: this many new jobs a second, for --duration seconds"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of --rate (default 60)")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="most seconds after the last Deployment to wait for the operator to stop writing (default 60)",
    )
    parser.add_argument(
        "--api-qps",
        type=float,
        help="DISTILLERY_API_QPS for the operator: its write limit (0: none; default: the operator's default)",
    )
    parser.add_argument("--api-burst", type=int, help="DISTILLERY_API_BURST for the operator")
    parser.add_argument(
        "--deadline", type=float, default=900.0, help="most seconds to wait for the Deployments"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the operator under py-spy, writing this raw profile"
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        help="run the operator under cProfile, writing its stats here (read with python -m pstats)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "build" / "bench-operator-scale",
        help="where the kubeconfig and the operator's logs go",
    )
    args = parser.parse_args(argv)
    print(f"bench-operator-scale: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    args.work.mkdir(parents=True, exist_ok=True)
    if args.rate:
        results.append(sustained(args.rate, args.duration, args, args.work))
    else:
        for count in [int(n) for n in args.jobs.split(",") if n]:
            results.append(burst(count, args, args.work))
    print(json.dumps({"loadavg": os.getloadavg()[0], "results": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
