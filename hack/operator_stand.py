"""The operator's stand for its scale benchmark (hack/bench_operator_scale.py): a flat API server and
`distillery operator`, each its own process, the jobs it is given, and what is read back from both."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from bench_process import (  # noqa: E402  # after the path: distillery is imported from the checkout
    Proc,
    free_port,
    get_json,
    histogram_quantile,
    percentile,
    reconcile_histogram,
    stop,
    wait_for,
)

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


async def create_jobs(url: str, count: int, concurrency: int = 64, first: int = 0) -> None:
    import aiohttp

    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            async with slots, session.post(url + DJ_PATH, json=job_body(index)) as response:
                if response.status != 201:
                    raise SystemExit(f"creating job {index}: HTTP {response.status} {await response.text()}")

        await asyncio.gather(*(one(i) for i in range(first, first + count)))


class Stand:
    """A fresh flat API server and a fresh `distillery operator` (each its own process), warmed up with one
    job; `with Stand(...) as stand:` stops both at the end."""

    def __init__(self, args: argparse.Namespace, work: Path, label: str) -> None:
        self.args, self.work, self.label = args, work, label
        self.server: subprocess.Popen | None = None
        self.operator: subprocess.Popen | None = None

    def stats(self) -> dict:
        return get_json(self.url + "/_bench/stats")

    def __enter__(self) -> Stand:
        args = self.args
        self.server = subprocess.Popen(
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
        try:
            self._start(args)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, args: argparse.Namespace) -> None:
        self.url = self.server.stdout.readline().split()[-1]
        config = self.work / "kubeconfig"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "s", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "bench"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        metrics_port = free_port()
        self.log = self.work / f"operator-{self.label}.log"
        env = {**os.environ, "KUBECONFIG": str(config), "PYTHONPATH": str(REPO / "operator")}
        if args.resync_seconds:
            env["DISTILLERY_RESYNC_SECONDS"] = str(args.resync_seconds)
        if args.api_qps is not None:  # else the operator's own default (the chart's)
            env["DISTILLERY_API_QPS"] = str(args.api_qps)
        if args.api_burst is not None:
            env["DISTILLERY_API_BURST"] = str(args.api_burst)
        command = [sys.executable, "-m", "distillery", "operator", "--namespace", NAMESPACE]
        command += ["--metrics-port", str(metrics_port)]
        if args.cprofile:  # cProfile of the operator's main thread (its event loop): where the time goes
            command = [sys.executable, "-m", "cProfile", "-o", str(args.cprofile), *command[1:]]
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
        with self.log.open("w") as log:
            self.operator = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(
            lambda: self.operator.poll() is not None or self.stats()["requests"].get(f"watch {DJS}"),
            "the operator to watch DistillationJobs",
            120,
        )
        if self.operator.poll() is not None:
            raise SystemExit(f"the operator exited; see {self.log}")
        # One job first, so that the figures below are not the first reconcile's imports and
        # connection set-up (its time is reported as the cold start).
        cold_started = time.monotonic()
        asyncio.run(create_jobs(self.url, 1, first=WARMUP))
        wait_for(
            lambda: len(self.stats()["created"].get(DEPLOYMENTS, {})) >= 1,
            "the warm-up job's Deployment",
            300,
        )
        self.cold_s = time.monotonic() - cold_started
        self.proc, self.api = Proc(self.operator.pid), Proc(self.server.pid)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        # The warm-up's reconcile ends after its Deployment exists; its time is taken out below.
        self.before = wait_for(
            lambda: (h := reconcile_histogram(self.metrics_url))[2] >= 1 and h, "the first reconcile", 60
        )
        self.idle_rss = self.proc.memory("VmRSS")
        self.writes0 = writes(self.stats())

    def __exit__(self, *_: object) -> None:
        if self.operator is not None:  # py-spy writes its file on SIGINT
            stop(self.operator, signal.SIGINT if self.args.profile else signal.SIGTERM)
        stop(self.server)

    def wait_for_deployments(self, count: int) -> None:
        wait_for(
            lambda: len(self.stats()["created"].get(DEPLOYMENTS, {})) >= count + 1,
            f"{count} teacher Deployments",
            self.args.deadline,
            interval=0.5,
        )

    def delays(self, count: int) -> tuple[list[float], list[float]]:
        """Per job, seconds from its creation to its first child (of any kind) and to its teacher Deployment."""
        made = self.stats()["created"]
        jobs, deployments = made[DJS], made[DEPLOYMENTS]
        first: dict[str, float] = {}
        for resource, objects in made.items():
            if resource == DJS or resource.endswith("/pods"):
                continue  # pods are the stand-in's (it plays the Job controller), not the operator's
            for key, created in objects.items():
                job = key.split("/", 1)[1][: len("job-00000")]
                first[job] = min(created, first.get(job, created))
        to_first = [first[f"job-{i:05d}"] - jobs[f"{NAMESPACE}/job-{i:05d}"] for i in range(count)]
        to_teacher = [
            deployments[f"{NAMESPACE}/{teacher_name(i)}"] - jobs[f"{NAMESPACE}/job-{i:05d}"]
            for i in range(count)
        ]
        return to_first, to_teacher

    def settle(self, since: float, most: float = 60) -> None:
        """Until the operator has caught up (status writes and Events after the Deployments): no API request
        for 3 s, or at most `most` seconds more."""
        count = lambda: sum(get_json(self.url + "/_bench/stats?only=requests")["requests"].values())  # noqa: E731
        settled_at, last = time.monotonic(), count()
        while time.monotonic() - settled_at < 3 and time.monotonic() - since < most:
            time.sleep(0.5)  # sampling the request count, not waiting for a fixed time
            now = count()
            if now != last:
                settled_at, last = time.monotonic(), now

    def steady(self, seconds: float) -> dict:
        """API requests/s and CPU use of the operator and of the API server over a quiet window, and the
        operator's resident memory at its end (at rest)."""
        count = lambda: sum(get_json(self.url + "/_bench/stats?only=requests")["requests"].values())  # noqa: E731
        requests0, cpu0, api0 = count(), self.proc.cpu(), self.api.cpu()
        started = time.monotonic()
        time.sleep(seconds)  # a fixed measuring window, not a wait for a condition
        window = time.monotonic() - started
        requests1 = count()
        return {
            "steady_requests_per_s": round((requests1 - requests0) / window, 2),
            "steady_operator_cpu_percent": round((self.proc.cpu() - cpu0) / window * 100, 2),
            "steady_api_server_cpu_percent": round((self.api.cpu() - api0) / window * 100, 2),
            "rss_at_rest_mib": round(self.proc.memory("VmRSS") / 2**20, 1),
        }

    def common(self, count: int, cpu_s: float, to_first: list[float], to_teacher: list[float]) -> dict:
        after = reconcile_histogram(self.metrics_url)
        buckets = [(bound, n - dict(self.before[0]).get(bound, 0)) for bound, n in after[0]]
        total, reconciles = after[1] - self.before[1], after[2] - self.before[2]
        snapshot = self.stats()
        peak = self.proc.memory("VmHWM")
        return {
            "jobs": count,
            "api_write_limit": limit_text(self.args),
            "cold_start_first_deployment_seconds": round(self.cold_s, 2),
            **{f"first_child_delay_p{q}_s": round(percentile(to_first, q), 3) for q in (50, 95, 99)},
            **{f"deployment_delay_p{q}_s": round(percentile(to_teacher, q), 3) for q in (50, 95, 99)},
            "deployment_delay_max_s": round(max(to_teacher), 3),
            "reconciles": int(reconciles),
            "reconcile_p50_ms": round((histogram_quantile(0.5, buckets) or 0) * 1000, 1),
            "reconcile_p95_ms": round((histogram_quantile(0.95, buckets) or 0) * 1000, 1),
            "reconcile_mean_ms": round(total / reconciles * 1000, 1) if reconciles else None,
            "cpu_seconds_to_all_deployments": round(cpu_s, 2),
            "cpu_ms_per_job": round(cpu_s / count * 1000, 2),
            "writes_per_job": round((writes(snapshot) - self.writes0) / count, 2),
            "idle_rss_mib": round(self.idle_rss / 2**20, 1),
            "peak_rss_mib": round(peak / 2**20, 1),
            "rss_kib_per_job": round((peak - self.idle_rss) / count / 1024, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "requests": {k: v for k, v in snapshot["requests"].items() if v},
        }


def writes(stats: dict) -> int:
    """The operator's writes so far (the bench's own job creates left out)."""
    return sum(
        n
        for key, n in stats["requests"].items()
        if key.split(" ", 1)[0] in ("create", "patch", "update", "delete") and key != f"create {DJS}"
    )


def limit_text(args: argparse.Namespace) -> str:
    if args.api_qps is None and args.api_burst is None:
        return "the operator's default"
    return (
        f"qps {args.api_qps if args.api_qps is not None else 'default'}, burst {args.api_burst or 'default'}"
    )


async def create_paced(url: str, rate: float, duration: float) -> float:
    """rate * duration jobs, the i-th POSTed at i / rate s (open loop: a slow answer delays no later
    create); returns the seconds the creates took."""
    import aiohttp

    count = round(rate * duration)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
            async with session.post(url + DJ_PATH, json=job_body(index)) as response:
                if response.status != 201:
                    raise SystemExit(f"creating job {index}: HTTP {response.status} {await response.text()}")

        await asyncio.gather(*(one(i) for i in range(count)))
    return loop.time() - started
