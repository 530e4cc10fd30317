#!/usr/bin/env python3
"""Operator scale: N DistillationJobs created at once, the operator in its own process.

    python hack/bench_operator_scale.py [--jobs 1,100,1000] [--steady 30] [--reconcile-seconds 10]

For each N, a fresh API server (hack/flat_apiserver.py, its own process: O(1) per get / create /
patch, so the figures describe the operator, not the stand-in; kmock's emulator re-filters its
whole request history per request) and a fresh `distillery operator --namespace bench` (its own
process, KUBECONFIG pointing at the server, the shipped resync interval unless --resync-seconds
says otherwise). Then:

0. one warm-up job, waited for until it has its Deployment (the cold start: imports, first
   connections), so the figures below describe a running operator;
1. the N jobs are POSTed as fast as the API takes them (64 in flight);
2. time until each has its teacher Deployment: server-side creation time of the Deployment minus
   that of its job (p50 / p95 / max), and until the last one;
3. reconcile latency p50 / p95: `distillery_reconcile_duration_seconds` scraped from the operator,
   interpolated in its buckets as Prometheus' histogram_quantile does;
4. the operator's CPU time (user + system, /proc) from the first create to the last Deployment, per
   job, and its peak RSS (VmHWM) minus its idle RSS, per job;
5. steady state: once the operator has caught up (no API request for 3 s), for --steady seconds,
   API requests/s and the operator's CPU use: with event-driven reconciling nothing should happen
   while nothing changes (the resync safety net runs every 5 minutes); the API server's own CPU is
   shown beside it, to tell whether the stand-in or the operator is the limit.

Nothing runs a pod. The API server completes each job's input check Job as it is created: first a
succeeded pod of it whose termination message is the check stage's summary (as a check pod that
found the inputs leaves), then the Job Complete. So the time to the teacher Deployment spans two
reconciles of the job, as on a cluster: create -> check Job; check complete -> teacher. The jobs
then stay at TeacherStarting, which is the point where the operator's per-job cost is its steady
cost. Prints one line per N and a JSON summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

NAMESPACE = "bench"
DJ_PATH = f"/apis/distillery.dev/v1alpha1/namespaces/{NAMESPACE}/distillationjobs"
DEPLOYMENTS = "apps/v1/deployments"
DJS = "distillery.dev/v1alpha1/distillationjobs"
WARMUP = 99999  # index of the warm-up job, outside every measured range


def job_body(index: int) -> dict:
    return {
        "apiVersion": "distillery.dev/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": f"job-{index:05d}", "namespace": NAMESPACE},
        "spec": {
            "teacher": {"model": "Qwen/Qwen2.5-7B-Instruct", "gpus": 1},
            "student": {"model": "Qwen/Qwen2.5-0.5B-Instruct"},
            "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
            "storage": {"pvc": {"size": "10Gi"}},
        },
    }


def teacher_name(index: int) -> str:
    from distillery.api import DistillationJob
    from distillery.manifests import child_name

    return child_name("teacher", DistillationJob.model_validate(job_body(index)))


def check_summary() -> str:
    """What a check pod that found the inputs leaves as its termination message (the stage's own writer)."""
    from distillery.contract.summaries import CheckSummary, termination_message

    return termination_message(CheckSummary())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def wait_for(predicate, what: str, seconds: float, interval: float = 0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench-operator-scale: timed out after {seconds:.0f}s waiting for {what}")


class Proc:
    """/proc figures of one process: CPU seconds (user + system) and resident memory."""

    def __init__(self, pid: int):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def memory(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, +Inf last."""
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the largest finite bucket: its bound is all that is known
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def reconcile_histogram(metrics_url: str) -> tuple[list[tuple[float, float]], float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    buckets, total, count = [], 0.0, 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "distillery_reconcile_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return sorted(buckets), total, count


async def create_jobs(url: str, count: int, concurrency: int = 64, first: int = 0) -> None:
    import aiohttp

    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            async with slots, session.post(url + DJ_PATH, json=job_body(index)) as response:
                if response.status != 201:
                    raise SystemExit(f"creating job {index}: HTTP {response.status} {await response.text()}")

        await asyncio.gather(*(one(i) for i in range(first, first + count)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_size(count: int, args: argparse.Namespace, work: Path) -> dict:
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "hack" / "flat_apiserver.py"),
            "--namespace",
            NAMESPACE,
            "--complete-jobs-ending=-check",
            f"--completed-pod-message={check_summary()}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    operator = None
    try:
        url = server.stdout.readline().split()[-1]
        stats = lambda: get_json(url + "/_bench/stats")  # noqa: E731
        config = work / "kubeconfig"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "s", "cluster": {"server": url}}],
                    "users": [{"name": "u", "user": {"token": "bench"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        metrics_port = free_port()
        log = (work / f"operator-{count}.log").open("w")
        env = {**os.environ, "KUBECONFIG": str(config), "PYTHONPATH": str(REPO / "operator")}
        if args.resync_seconds:
            env["DISTILLERY_RESYNC_SECONDS"] = str(args.resync_seconds)
        command = [
            sys.executable,
            "-m",
            "distillery",
            "operator",
            "--namespace",
            NAMESPACE,
            "--metrics-port",
            str(metrics_port),
        ]
        if args.profile:  # figures are then py-spy's, not the operator's: for finding where time goes only
            command = [
                "py-spy",
                "record",
                "--format",
                "raw",
                "-r",
                "250",
                "-o",
                str(args.profile),
                "--",
                *command,
            ]
        operator = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: operator.poll() is not None or stats()["requests"].get(f"watch {DJS}"),
            "the operator to watch DistillationJobs",
            120,
        )
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited; see {log.name}")
        # One job first, so that the figures below are not the first reconcile's imports and
        # connection set-up (its time is reported as the cold start).
        cold_started = time.monotonic()
        asyncio.run(create_jobs(url, 1, first=WARMUP))
        wait_for(
            lambda: len(stats()["created"].get(DEPLOYMENTS, {})) >= 1, "the warm-up job's Deployment", 300
        )
        cold_s = time.monotonic() - cold_started
        proc, api = Proc(operator.pid), Proc(server.pid)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        # The warm-up's reconcile ends after its Deployment exists; its time is taken out below.
        before = wait_for(
            lambda: (h := reconcile_histogram(metrics_url))[2] >= 1 and h, "the first reconcile", 60
        )
        idle_rss, cpu0, api0 = proc.memory("VmRSS"), proc.cpu(), api.cpu()

        started = time.monotonic()
        asyncio.run(create_jobs(url, count))
        created_s = time.monotonic() - started
        wait_for(
            lambda: len(stats()["created"].get(DEPLOYMENTS, {})) >= count + 1,
            f"{count} teacher Deployments",
            args.deadline,
            interval=0.5,
        )
        all_s = time.monotonic() - started
        cpu1, api1 = proc.cpu(), api.cpu()
        snapshot = stats()
        made = snapshot["created"]
        jobs, deployments = made[DJS], made[DEPLOYMENTS]
        delays = [
            deployments[f"{NAMESPACE}/{teacher_name(i)}"] - jobs[f"{NAMESPACE}/job-{i:05d}"]
            for i in range(count)
        ]

        # Steady state begins once the operator has caught up (status writes and Events after the
        # Deployments): no API request for 3 s, or at most a minute more.
        settled_at, last = time.monotonic(), sum(stats()["requests"].values())
        while time.monotonic() - settled_at < 3 and time.monotonic() - started < all_s + 60:
            time.sleep(0.5)  # sampling the request count, not waiting for a fixed time
            now = sum(stats()["requests"].values())
            if now != last:
                settled_at, last = time.monotonic(), now
        requests0 = sum(stats()["requests"].values())
        steady_started = time.monotonic()
        time.sleep(args.steady)  # a fixed measuring window, not a wait for a condition
        steady_s = time.monotonic() - steady_started
        cpu2, api2 = proc.cpu(), api.cpu()
        requests1 = sum(stats()["requests"].values())
        after = reconcile_histogram(metrics_url)
        buckets = [(bound, count - dict(before[0]).get(bound, 0)) for bound, count in after[0]]
        total, reconciles = after[1] - before[1], after[2] - before[2]
        peak = proc.memory("VmHWM")
        by_kind = {k: v for k, v in stats()["requests"].items() if v}
    finally:
        if operator is not None:
            stop(
                operator, signal.SIGINT if args.profile else signal.SIGTERM
            )  # py-spy writes its file on SIGINT
        stop(server)
    result = {
        "jobs": count,
        "cold_start_first_deployment_seconds": round(cold_s, 2),
        "create_seconds": round(created_s, 2),
        "all_deployments_seconds": round(all_s, 2),
        "deployment_delay_p50_s": round(percentile(delays, 50), 3),
        "deployment_delay_p95_s": round(percentile(delays, 95), 3),
        "deployment_delay_max_s": round(max(delays), 3),
        "reconciles": int(reconciles),
        "reconcile_p50_ms": round(histogram_quantile(0.5, buckets) * 1000, 1),
        "reconcile_p95_ms": round(histogram_quantile(0.95, buckets) * 1000, 1),
        "reconcile_mean_ms": round(total / reconciles * 1000, 1) if reconciles else None,
        "cpu_seconds_to_all_deployments": round(cpu1 - cpu0, 2),
        "cpu_ms_per_job": round((cpu1 - cpu0) / count * 1000, 1),
        "idle_rss_mib": round(idle_rss / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "rss_kib_per_job": round((peak - idle_rss) / count / 1024, 1),
        "steady_requests_per_s": round((requests1 - requests0) / steady_s, 1),
        "steady_operator_cpu_percent": round((cpu2 - cpu1) / steady_s * 100, 1),
        "api_server_cpu_seconds_to_all_deployments": round(api1 - api0, 2),
        "steady_api_server_cpu_percent": round((api2 - api1) / steady_s * 100, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "requests": by_kind,
    }
    print(
        f"{count:5d} jobs: created in {created_s:.1f}s; all teacher Deployments after {all_s:.1f}s "
        f"(per job p50 {result['deployment_delay_p50_s']:.2f}s, p95 {result['deployment_delay_p95_s']:.2f}s, "
        f"max {result['deployment_delay_max_s']:.2f}s); reconcile p50 {result['reconcile_p50_ms']} ms, "
        f"p95 {result['reconcile_p95_ms']} ms over {reconciles:.0f}; operator CPU {result['cpu_ms_per_job']} "
        f"ms/job, RSS {result['idle_rss_mib']} -> {result['peak_rss_mib']} MiB "
        f"({result['rss_kib_per_job']} KiB/job); steady: {result['steady_requests_per_s']} API requests/s, "
        f"operator CPU {result['steady_operator_cpu_percent']}%, API server CPU "
        f"{result['steady_api_server_cpu_percent']}%; cold start {cold_s:.1f}s; load {result['loadavg_1m']}",
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
        "--deadline", type=float, default=900.0, help="most seconds to wait for the Deployments"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the operator under py-spy, writing this raw profile"
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
    for count in [int(n) for n in args.jobs.split(",") if n]:
        results.append(one_size(count, args, args.work))
    print(json.dumps({"loadavg": os.getloadavg()[0], "results": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
