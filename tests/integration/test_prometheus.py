"""A real Prometheus (Debian's package) scrapes Distillery's metrics on 127.0.0.1 and
evaluates every dashboard query and every alert of the chart; promtool lints the scraped
text and unit-tests the alerts.

Two things are scraped:

- the real `distillery operator` (a subprocess, on kmock's in-memory Kubernetes API
  server, reached through a kubeconfig) reconciling a DistillationJob;
- a stand-in: this file, run as a script, serves the registries of the operator and of
  each stage (controller/, generation/, training/, evaluation/ `metrics.py`), each on its
  own port as its own process would, and keeps them moving (counters grow, histograms
  fill) the way the worker pods (generate / train / evaluate) and a job further along its
  life (progress, stage durations, scores) would. Nothing here runs those pods, so the
  stand-in gives those series their values; names and labels are the real ones because
  they come from the same modules.

What Prometheus scrapes is what the chart's monitors select: the chart's rendered ServiceMonitor
and PodMonitors (helm template, two operator replicas) go through the port of the Prometheus
Operator's selection and relabeling (tests/support/prometheus_operator.py) over the pods and
Services the operator's builders make for a tiny job (manifests.build) and the chart's operator
pods. Each target it selects becomes a static target of its monitor endpoint's scrape job, with the
labels the port computed and the endpoint's honor_labels; only its address changes, from the
(fake) pod IP to where its process's registry is served here: the first operator pod to the real
operator, the second to the stand-in's operator registry, each worker pod to its stage's registry,
the teacher pod to a stand-in vLLM registry (vLLM's series names, contract/series.py TEACHER,
checked against the installed vLLM by tests/unit/test_dashboards.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # also when run as a script
sys.path.insert(0, str(ROOT))  # tests.support, when run as a script

import dashboards  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.integration

ALERT_TESTS = ROOT / "tests" / "rules" / "alerts.test.yaml"
NAMESPACE, JOB, FAILED_JOB = "ml", "support-bot", "broken-bot"
REAL_JOB = "real-job"  # reconciled by the real operator
# Each process and the module whose registry it serves.
REGISTRIES = {
    "operator": "distillery.controller.metrics",
    "generate": "distillery.generation.metrics",
    "train": "distillery.training.metrics",
    "evaluate": "distillery.evaluation.metrics",
}
WORKER_STAGES = ("generate", "train", "evaluate")
TEACHER = "teacher"  # the stand-in's vLLM registry (not a Distillery process)
STARTUP_DEADLINE_S = 60.0


# ------------------------------------------------------------------ the stand-in exporter


def serve_workload(ports: dict[str, int], lifetime_s: float) -> None:
    """Serve each process's registry on 127.0.0.1:ports[process] and keep them changing, for at
    most lifetime_s seconds or until the parent process goes away."""
    from prometheus_client import start_http_server

    from distillery.api import Phase
    from distillery.controller import metrics as op
    from distillery.evaluation import metrics as ev
    from distillery.generation import metrics as gen
    from distillery.training import metrics as tr

    parent = os.getppid()
    rng = random.Random(7)

    # Operator: one job generating, one failed, and cluster-wide counts by phase.
    for phase, count in zip(Phase, (0, 0, 1, 0, 0, 3, 1, 0), strict=True):
        op.JOBS.labels(phase.value).set(count)
    for phase in Phase:
        op.JOB_PHASE.labels(NAMESPACE, JOB, phase.value).set(1 if phase is Phase.generating else 0)
        op.JOB_PHASE.labels(NAMESPACE, FAILED_JOB, phase.value).set(1 if phase is Phase.failed else 0)
    op.JOB_TRAIN_LOSS.labels(NAMESPACE, JOB).set(1.7)
    for model, score in (("teacher", 0.82), ("baseline", 0.41), ("student", 0.77)):
        op.JOB_EVAL_SCORE.labels(NAMESPACE, JOB, model).set(score)
        ev.EVAL_SCORE.labels(model).set(score)
        ev.EVAL_THROUGHPUT.labels(model).set(100 / score)
        for percentile, latency in (("50", 0.2), ("95", 0.6)):
            ev.EVAL_LATENCY.labels(model, percentile).set(latency * score)
    op.JOB_RETENTION.labels(NAMESPACE, JOB).set(0.77 / 0.82)
    op.JOB_PRICE.labels(NAMESPACE, JOB, "USD").set(3.2)
    gen.GEN_IN_FLIGHT.set(12)
    tr.TRAIN_VALIDATION_LOSS.set(1.9)

    from prometheus_client import CollectorRegistry, Counter, Gauge

    from distillery.contract import series

    vllm = CollectorRegistry()
    engine = ("model_name", "engine")
    kv_cache = Gauge(series.TEACHER_KV_CACHE_USAGE, "KV-cache usage.", engine, registry=vllm)
    waiting = Gauge(series.TEACHER_REQUESTS_WAITING, "Requests waiting.", engine, registry=vllm)
    running = Gauge(series.TEACHER_REQUESTS_RUNNING, "Requests running.", engine, registry=vllm)
    generated = Counter(series.TEACHER_GENERATION_TOKENS, "Generation tokens.", engine, registry=vllm)
    prompt = Counter(series.TEACHER_PROMPT_TOKENS, "Prompt tokens.", engine, registry=vllm)
    served = ("teacher", "0")

    for process, module in REGISTRIES.items():
        start_http_server(ports[process], addr="127.0.0.1", registry=importlib.import_module(module).REGISTRY)
    start_http_server(ports[TEACHER], addr="127.0.0.1", registry=vllm)
    print("ready", flush=True)

    started, step = time.monotonic(), 0
    while time.monotonic() - started < lifetime_s and os.getppid() == parent:
        step += 1
        op.JOB_PROGRESS.labels(NAMESPACE, JOB, "generate").set(min(1.0, step / 1000))
        op.JOB_RECORDS.labels(NAMESPACE, JOB).set(step * 3)
        op.JOB_TOKENS.labels(NAMESPACE, JOB).set(step * 300)
        op.JOB_REJECTED.labels(NAMESPACE, JOB).set(step // 10)
        op.JOB_GPU_SECONDS.labels(NAMESPACE, JOB, "teacher").set(step * 0.1 * 8)  # an 8-GPU teacher
        op.JOB_CPU_SECONDS.labels(NAMESPACE, JOB, "generate").set(step * 0.05)
        # A shard retried now and then, the teacher restarted more rarely.
        op.JOB_STAGE_RESTARTS.labels(NAMESPACE, JOB, "generate").set(step // 50)
        op.JOB_STAGE_RESTARTS.labels(NAMESPACE, JOB, "teacher").set(step // 200)
        op.STAGE_DURATION.labels(rng.choice(("teacher", "generate"))).observe(rng.uniform(30, 900))
        op.RECONCILES.labels(rng.choice(("ok", "ok", "ok", "retry", "error"))).inc()
        op.RECONCILE_DURATION.observe(rng.uniform(0.005, 0.3))
        op.CHILDREN_CREATED.labels(rng.choice(("Deployment", "Service", "Job"))).inc()
        for _ in range(5):
            outcome = rng.choice(("ok",) * 8 + ("retry", "error"))
            gen.GEN_REQUESTS.labels(outcome).inc()
            if outcome == "ok":
                gen.GEN_REQUEST_DURATION.observe(rng.uniform(0.2, 4.0))
                gen.GEN_TOKENS.labels("prompt").inc(rng.randint(20, 60))
                gen.GEN_TOKENS.labels("completion").inc(rng.randint(30, 120))
                gen.GEN_RECORDS.inc()
        gen.GEN_REJECTED.labels(rng.choice(("length", "duplicate"))).inc()
        tr.TRAIN_LOSS.set(2.5 / (1 + step / 50))
        tr.TRAIN_STEP.set(step)
        tr.TRAIN_EPOCH.set(step / 200)
        tr.TRAIN_TOKENS.inc(340)
        tr.TRAIN_TOKENS_PER_SECOND.set(rng.uniform(300, 360))
        kv_cache.labels(*served).set(rng.uniform(0.4, 0.9))
        waiting.labels(*served).set(rng.randint(0, 20))
        running.labels(*served).set(rng.randint(8, 32))
        generated.labels(*served).inc(rng.randint(200, 400))
        prompt.labels(*served).inc(rng.randint(100, 200))
        time.sleep(0.1)  # the pace of the simulated workload, not a wait on a condition


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a scrape or query may raise while its server starts: not yet, rather than a failure.
SCRAPE_ERRORS = (OSError, ValueError, KeyError)


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            body = get(f"{self.url}/api/v1/{path}?{query}")
        except urllib.error.HTTPError as error:  # 400 carries the PromQL error in its body
            body = error.read()
        return json.loads(body)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)


def monitored_targets():
    """The targets the chart's monitors select: its operator pods (two replicas) and one tiny job's pods."""
    from distillery.api import DistillationJob
    from distillery.manifests import BuildConfig
    from tests.support import prometheus_operator
    from tests.support.chart import render
    from tests.support.kmock_cluster import spec
    from tests.support.monitoring import chart_pods, job_pods

    docs = render(
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.scraper.namespace=monitoring",
        "operator.replicas=2",
        "operator.leaderElection.enabled=true",
    )
    operator_pods, chart_services = chart_pods(docs)
    job = DistillationJob.model_validate(
        {"metadata": {"name": JOB, "namespace": NAMESPACE, "uid": "uid-support-bot"}, "spec": spec()}
    )
    pods, services = job_pods(job, BuildConfig())
    monitors = [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    return prometheus_operator.targets(monitors, chart_services + services, operator_pods + pods)


TARGETS = monitored_targets()
OPERATOR_PODS = sorted({t.labels["pod"] for t in TARGETS if t.job_name.startswith("serviceMonitor/")})


def scrape_config(stand_in: dict[str, str], operator: str) -> dict:
    """Static scrape jobs of the port's targets, each at the address of the process that plays it."""
    from tests.support.monitoring import scrape_config as monitor_jobs

    def address(target) -> str:
        if target.job_name.startswith("serviceMonitor/"):
            # The first replica is the real operator; the second, further along in its jobs'
            # lives, the stand-in's operator registry.
            return operator if target.labels["pod"] == OPERATOR_PODS[0] else stand_in["operator"]
        return stand_in[target.labels["stage"]]

    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(dashboards.ALERTS_FILE)],
        "scrape_configs": monitor_jobs(TARGETS, address),
    }


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def stand_in():
    """process -> the address serving its registry."""
    ports = {process: free_port() for process in (*REGISTRIES, TEACHER)}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, __file__, "--ports", json.dumps(ports), "--lifetime", "600"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        for port in ports.values():
            url = f"http://127.0.0.1:{port}"
            wait_for(
                lambda url=url: get(f"{url}/metrics"),
                "the metrics stand-in serves /metrics",
                STARTUP_DEADLINE_S,
                process=process,
                ignore=SCRAPE_ERRORS,
            )
        yield {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        stop(process)


class KubeAPI:
    """kmock's in-memory Kubernetes API server on 127.0.0.1, in its own thread and event loop."""

    def __init__(self):
        import kmock

        from tests.support.kmock_cluster import RESOURCES, VERBS, Emulator

        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

        async def serve():
            self._stop = asyncio.Event()
            async with Emulator() as emulator, kmock.Server(emulator):
                for resource, info in RESOURCES.items():
                    emulator.resources[resource] = {**info, "verbs": VERBS}
                # kmock cannot parse POST /api/v1/namespaces; store the namespace directly.
                emulator.objects["v1/namespaces", None, NAMESPACE] = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": NAMESPACE, "uid": str(uuid.uuid4())},
                }
                self.emulator, self.url = emulator, str(emulator.url).rstrip("/")
                self._started.set()
                await self._stop.wait()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(serve(),), daemon=True)
        self.thread.start()
        if not self._started.wait(STARTUP_DEADLINE_S):
            raise AssertionError("kmock's emulator did not start")

    def kubeconfig(self) -> str:
        # kopf's client login wants some credential; the emulator checks none.
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                "users": [{"name": "test", "user": {"token": "unchecked"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}],
                "current-context": "emulator",
            }
        )

    def watching(self, plural: str) -> bool:
        return any(
            r.resource is not None and r.resource.plural == plural and r.params.get("watch") in ("true", "1")
            for r in list(self.emulator)
        )

    def create_job(self, name: str, spec: dict) -> int:
        body = {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "generation": 1,
                # The emulator fills in nothing; a real API server would set these.
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "spec": spec,
        }
        path = f"/apis/distillery.dev/v1alpha1/namespaces/{NAMESPACE}/distillationjobs"

        async def post():
            async with self.emulator.request("POST", path, json=body) as response:
                return response.status

        return asyncio.run_coroutine_threadsafe(post(), self.loop).result(timeout=30)

    def close(self):
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10)


class Operator:
    """`distillery operator` as its Deployment runs it, against the emulator."""

    def __init__(self, api: KubeAPI, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        self.log_path = workdir / "operator.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distillery", "operator", f"--metrics-port={self.port}"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-15:])

    def assert_alive(self) -> None:
        code = self.process.poll()
        assert code is None, f"the operator exited with code {code}; its output ends:\n{self.log_tail()}"

    def close(self):
        stop(self.process)
        self._log.close()


@pytest.fixture(scope="module")
def kube_api():
    api = KubeAPI()
    yield api
    api.close()


@pytest.fixture(scope="module")
def operator(kube_api, tmp_path_factory):
    """The real operator, watching, with one job created; an error (with the operator's output)
    for every test that uses it when the process has exited."""
    from tests.support.kmock_cluster import spec

    running = Operator(kube_api, tmp_path_factory.mktemp("operator"))
    try:
        # Create the job only once the operator watches: the emulator replays stored
        # objects on every watch.
        wait_for(
            lambda: running.process.poll() is not None or kube_api.watching("distillationjobs"),
            "the operator watches DistillationJobs",
            STARTUP_DEADLINE_S,
            ignore=SCRAPE_ERRORS,
        )
        running.assert_alive()
        assert kube_api.create_job(REAL_JOB, spec()) in (200, 201)
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def prometheus(stand_in, operator, tmp_path_factory):
    from tests.tools import prometheus_binary

    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(stand_in, f"127.0.0.1:{operator.port}")))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_for(
            lambda: get(f"{server.url}/-/ready"),
            "prometheus is ready",
            STARTUP_DEADLINE_S,
            process=process,
            ignore=SCRAPE_ERRORS,
        )

        def stand_in_targets_up():
            targets = server.api("targets")["data"]["activeTargets"]
            mine = [
                t for t in targets if any(t["scrapeUrl"] == f"http://{a}/metrics" for a in stand_in.values())
            ]
            return len(mine) == len(TARGETS) - 1 and all(t["health"] == "up" for t in mine)

        wait_for(
            stand_in_targets_up,
            "the stand-in's scrape targets are up",
            STARTUP_DEADLINE_S,
            process=process,
            ignore=SCRAPE_ERRORS,
        )

        # rate() needs two samples of a growing counter in its window, from every target: on a
        # loaded machine one target's first scrapes can time out while the others' succeed.
        def every_target_scraped_twice():
            scrapes = server.query("sum_over_time(up[1m])")["data"]["result"]
            return len(scrapes) == len(TARGETS) and all(float(s["value"][1]) >= 2 for s in scrapes)

        wait_for(
            every_target_scraped_twice,
            "every target has been scraped twice (rates are computable)",
            STARTUP_DEADLINE_S,
            process=process,
            ignore=SCRAPE_ERRORS,
        )
        yield server
    finally:
        stop(process)
        log.close()


# ------------------------------------------------------------------ tests


def _promtool_check_metrics(text: bytes) -> None:
    from tests.tools import promtool_binary

    result = subprocess.run(
        [promtool_binary(), "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), (result.stdout + result.stderr).decode()


def test_promtool_check_metrics_accepts_every_distillery_metric(stand_in):
    texts = {
        process: get(f"http://{address}/metrics")
        for process, address in stand_in.items()
        if process != TEACHER
    }
    # The stand-in sets every labelled metric, so every name of each registry is in its text.
    assert (
        b"distillery_eval_latency_seconds{" in texts["evaluate"]
        and b"distillery_job_phase{" in texts["operator"]
    )
    for text in texts.values():
        _promtool_check_metrics(text)


def test_each_process_exports_only_its_own_series(stand_in, operator):
    """The operator's /metrics has no worker series and a stage's none of the operator's or another stage's."""
    own = {
        "operator": (
            "distillery_job",
            "distillery_jobs",
            "distillery_reconcile",
            "distillery_children",
            "distillery_stage",
            "distillery_operator",
        ),
        "generate": ("distillery_generation_",),
        "train": ("distillery_train_",),
        "evaluate": ("distillery_eval_",),
    }
    texts = {
        process: get(f"http://{address}/metrics").decode()
        for process, address in stand_in.items()
        if process != TEACHER
    }
    operator.assert_alive()
    wait_for(
        lambda: get(f"{operator.url}/metrics"),
        "the operator serves /metrics",
        STARTUP_DEADLINE_S,
        ignore=SCRAPE_ERRORS,
    )
    texts["operator (real process)"] = get(f"{operator.url}/metrics").decode()
    for process, text in texts.items():
        names = {
            line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("distillery_")
        }
        prefixes = own[process.split(" ")[0]]
        assert names, process
        assert all(name.startswith(prefixes) for name in names), (process, sorted(names))


def test_real_operator_serves_probes_and_clean_metrics(operator):
    operator.assert_alive()
    # The chart's probes: liveness /healthz, readiness /readyz.
    wait_for(
        lambda: get(f"{operator.url}/readyz") == b"ready\n",
        "the operator is ready",
        STARTUP_DEADLINE_S,
        ignore=SCRAPE_ERRORS,
    )
    assert get(f"{operator.url}/healthz") == b"ok\n"
    _promtool_check_metrics(get(f"{operator.url}/metrics"))


def test_prometheus_sees_the_real_operator_reconcile_a_job(prometheus, operator):
    operator.assert_alive()
    # The first operator pod's target is the real operator (its labels are the port's: pod, instance).
    target = f'job="distillery-operator", pod="{OPERATOR_PODS[0]}"'
    wait_for(
        lambda: prometheus.query(f"up{{{target}}} == 1")["data"]["result"],
        "the operator target is up",
        30,
        ignore=SCRAPE_ERRORS,
    )
    # The operator's own series of the job it reconciles, through the honor_labels scrape.
    phases = wait_for(
        lambda: prometheus.query(
            f'distillery_job_phase{{namespace="{NAMESPACE}", distillery_job="{REAL_JOB}"}} == 1'
        )["data"]["result"],
        "the operator's phase series for the job",
        30,
        ignore=SCRAPE_ERRORS,
    )
    (phase,) = [p["metric"]["phase"] for p in phases]
    assert phase != "Failed", f"the operator failed the job:\n{operator.log_tail()}"
    reconciles = prometheus.query(f'sum(distillery_reconcile_total{{{target}, result="ok"}})')["data"][
        "result"
    ]
    assert reconciles and float(reconciles[0]["value"][1]) >= 1


def test_promtool_checks_and_unit_tests_the_alerts():
    from tests.tools import promtool_binary

    check = subprocess.run(
        [promtool_binary(), "check", "rules", str(dashboards.ALERTS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(dashboards.alert_rules())} rules found" in check.stdout
    unit = subprocess.run(
        [promtool_binary(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested == {r["alert"] for r in dashboards.alert_rules()}, "every alert needs a promtool test"
    # ...both ways: a case where it fires and one where it stays quiet.
    cases = [t for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for t in case["alert_rule_test"]]
    for name in tested:
        outcomes = {bool(t["exp_alerts"]) for t in cases if t["alertname"] == name}
        assert outcomes == {True, False}, name


BOARDS = [json.loads(text) for text in dashboards.generated_files().values()]
QUERIES = [(title, expr) for board in BOARDS for title, expr in dashboards.panel_queries(board)]


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[f"{i}:{t}" for i, (t, _) in enumerate(QUERIES)])
def test_dashboard_query_returns_data(prometheus, title, expr):
    response = prometheus.query(dashboards.substitute_variables(expr))
    assert response["status"] == "success", f"{title}: {response.get('error')}"
    assert response["data"]["result"], f"{title}: no series for {expr}"


def test_dashboard_variables_list_the_jobs(prometheus):
    (board,) = BOARDS
    values = {}
    for name, selector in dashboards.variable_selectors(board):
        response = prometheus.api(
            f"label/{name}/values", **{"match[]": dashboards.substitute_variables(selector)}
        )
        assert response["status"] == "success", response
        values[name] = set(response["data"])
    assert values["namespace"] == {NAMESPACE}
    assert values["distillery_job"] >= {JOB, FAILED_JOB}  # plus the real operator's job, when it runs


@pytest.mark.parametrize("rule", dashboards.alert_rules(), ids=lambda r: r["alert"])
def test_alert_expression_executes(prometheus, rule):
    response = prometheus.query(rule["expr"])
    assert response["status"] == "success", f"{rule['alert']}: {response.get('error')}"


def test_prometheus_loads_and_evaluates_the_alerts(prometheus):
    def evaluated_rules():
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules) else None

    rules = wait_for(
        evaluated_rules, "every rule has been evaluated", STARTUP_DEADLINE_S, ignore=SCRAPE_ERRORS
    )
    assert {r["name"] for r in rules} == {r["alert"] for r in dashboards.alert_rules()}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    # The stand-in has one Failed job, and that alert has no `for`: it fires at once.
    failed = next(r for r in rules if r["name"] == "DistillationJobFailed")
    assert (FAILED_JOB, "firing") in [(a["labels"]["distillery_job"], a["state"]) for a in failed["alerts"]]
    assert JOB not in [a["labels"]["distillery_job"] for a in failed["alerts"]]

    # The stand-in's generate pods accept records all along: generation is not stalled (once
    # Prometheus has two samples of their counter; an alert pending before that goes away).
    def stalled() -> list[str]:
        groups = prometheus.api("rules")["data"]["groups"]
        rule = next(r for g in groups for r in g["rules"] if r["name"] == "DistillationGenerationStalled")
        return [a["labels"]["distillery_job"] for a in rule["alerts"]]

    wait_for(lambda: JOB not in stalled(), "the stalled alert stays quiet", 30, ignore=SCRAPE_ERRORS)
    # The operator target is up, so OperatorDown stays quiet.
    assert next(r for r in rules if r["name"] == "DistillationOperatorDown")["alerts"] == []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve Distillery's metrics with a simulated workload.")
    parser.add_argument("--ports", type=json.loads, required=True, help='JSON: {"operator": PORT, ...}')
    parser.add_argument("--lifetime", type=float, default=300.0, help="seconds before exiting on its own")
    args = parser.parse_args()
    serve_workload(args.ports, args.lifetime)
