"""End to end: examples/tiny.yaml through the real operator, every pod run for real.

What is real: the operator (`distillery operator`, its own process, logging in with a
kubeconfig as it would outside a cluster), the manifests it builds, the teacher (vLLM on
CPU serving the tiny teacher), the generation shards, training and evaluation (each the
exact command line of its pod). What stands in: the API server (kmock's emulator) and the
cluster's kubelet and controllers (tests/harness with its process runtime, which runs each
pod as a local process with its volumes mapped to directories and writes pod and Job status back).

Resilience, in the same run: once a generation shard has written part of its records, the
operator is killed (SIGKILL) and that shard's pod is killed too; the Job controller replaces
the pod, which resumes; the operator is started again. The job must still succeed, with
every child object created once and every input record answered exactly once.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Kubelet, ProcessRuntime, RestClient, api_path, kubeconfig, serve_emulator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny.yaml"
NAMESPACE = "e2e"
CLAIM = "tiny-data"  # the PVC the job names; the harness maps it to the prepared directory
DJ = ("distillery.dev/v1alpha1", "distillationjobs")
# Deadlines (s): vLLM on 2 busy cores takes about a minute to start; the whole job a few.
GENERATING_DEADLINE = 300
SUCCEEDED_DEADLINE = 600

# The image's environment (what images/worker-cpu.Dockerfile and a CPU node would give the
# pods): a small KV cache, no hub access, no usage reporting.
POD_ENV = {
    "PYTHONUNBUFFERED": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


# ---------------------------------------------------------------- the pieces


class Api(RestClient):
    """REST calls to the emulator in the test's namespace, plus the job's status."""

    def __init__(self, url: str):
        super().__init__(url, NAMESPACE)

    def status(self) -> dict[str, Any]:
        return (self.get(*DJ, "tiny") or {}).get("status") or {}


class Operator:
    """`distillery operator` as its own process, so that it can be killed for real."""

    def __init__(self, url: str, emulator: Any, workdir: Path):
        self.emulator = emulator
        self.config = workdir / "kubeconfig"
        self.config.write_text(kubeconfig(url))
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        watches = self._watches()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.config),
            # Read the running stage pods' /metrics every second instead of every 15 (a setting the operator reads).
            "DISTILLERY_PROGRESS_SECONDS": "1",
        }
        # Every namespace, as the chart installs it by default (kmock cannot list namespaces,
        # which `--namespace` would need).
        command = [str(Path(sys.executable).with_name("distillery")), "operator", "--metrics-port", "0"]
        with self.log.open("a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(command)}\n")
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(
            lambda: self._watches() > watches or self.process.poll() is not None,
            "the operator to watch DistillationJobs",
            60,
            self.tail,
        )
        assert self.process.poll() is None, f"the operator exited at start:\n{self.tail()}"

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown, as when its node dies."""
        assert self.process is not None and self.process.poll() is None, "the operator is not running"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _watches(self) -> int:
        return sum(
            1
            for r in list(self.emulator)
            if r.resource is not None
            and r.resource.plural == "distillationjobs"
            and r.params.get("watch") in ("true", "1")
        )


def wait_for(condition: Callable[[], Any], what: str, timeout: float, details: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")


def tiny_job() -> dict[str, Any]:
    """examples/tiny.yaml, in the test's namespace, with the storage claim a cluster needs."""
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["namespace"] = NAMESPACE
    storage = job["spec"].setdefault("storage", {})
    # tiny.yaml's storage.path serves `distillery run`; in a cluster the job names a claim.
    storage.setdefault("pvc", {"claimName": CLAIM})
    return job


@pytest.fixture(scope="module")
def storage(tmp_path_factory, tiny_models: dict[str, Path]) -> Path:
    """The claim's contents, laid out as hack/prepare_tiny.py lays out build/tiny.

    The models are the session's tiny models (tests/fixtures_models.py: the same
    make_tiny_models call, seed and pretraining prepare_tiny.py uses), linked rather than
    trained a second time; the data is written by prepare_tiny.py's own writer.
    """
    import prepare_tiny  # hack/ is on sys.path (tests/conftest.py)

    root = tmp_path_factory.mktemp("tiny-data")
    (root / "models").mkdir()
    for name in ("teacher", "student"):
        (root / "models" / name).symlink_to(tiny_models[name], target_is_directory=True)
    prepare_tiny.write_data(root)
    return root


@pytest.fixture
def cluster(storage: Path, tmp_path: Path) -> Iterator[tuple[Any, Api, Kubelet, Operator]]:
    with serve_emulator([NAMESPACE]) as (emulator, url):
        kubelet = Kubelet(
            url,
            tmp_path / "kubelet",
            runtime=ProcessRuntime(env=POD_ENV),
            claims={CLAIM: storage},
            namespace=NAMESPACE,
        )
        kubelet.start()
        operator = Operator(url, emulator, tmp_path)
        try:
            yield emulator, Api(url), kubelet, operator
        finally:
            operator.stop()
            kubelet.stop()


# ---------------------------------------------------------------- checks on the result


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_each_input_answered_once(job: dict[str, Any], storage: Path) -> None:
    """Every input record answered exactly once: accepted or rejected, never both, never twice."""
    generated = storage / "jobs" / job["metadata"]["name"] / "generated"
    for split in ("train", "validation"):
        ids = [
            r["id"] for path in sorted((generated / split).glob("shard-*.jsonl")) for r in read_jsonl(path)
        ]
        assert len(ids) == len(set(ids)), f"{split}: duplicated records"
        assert sorted(ids) == sorted(input_ids(job, storage, split)), f"{split}: records lost or invented"
        assert not list((generated / split).glob("*.partial")), f"{split}: partial files left behind"


def input_ids(job: dict[str, Any], storage: Path, split: str) -> list[str]:
    """Ids of the input records generation had to answer, as the generate stage names them."""
    from distillery.errors import parse_job
    from distillery.tasks import record_id

    spec = parse_job(copy.deepcopy(job)).spec
    path = storage / getattr(spec.data, split)
    limit = spec.data.max_train_samples if split == "train" else spec.data.max_validation_samples
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and (limit is None or len(ids) < limit):
            ids.append(record_id(spec.data, json.loads(line), number))
    return ids


def creations(emulator: Any, resource: str, name: str) -> int:
    """How many times an object was created (its history restarts after each deletion)."""
    history = emulator.objects[resource, NAMESPACE, name].history
    return sum(1 for i, v in enumerate(history) if v is not None and (i == 0 or history[i - 1] is None))


def shard_size(job: dict[str, Any], storage: Path, index: int) -> int:
    """Input records shard `index` of 2 answers (record K belongs to shard K mod 2)."""
    return sum(len(input_ids(job, storage, split)[index::2]) for split in ("train", "validation"))


def partial_records(storage: Path) -> dict[int, int]:
    """Lines written so far by each running shard (index -> lines in its .partial files)."""
    counts: dict[int, int] = {}
    for path in (storage / "jobs" / "tiny" / "generated").glob("*/shard-*.partial"):
        index = int(path.name.split("-")[1])
        counts[index] = counts.get(index, 0) + sum(1 for _ in path.open())
    return counts


# ---------------------------------------------------------------- the test


def test_tiny_job_end_to_end_survives_operator_and_pod_kills(cluster, storage: Path):
    emulator, api, kubelet, operator = cluster

    def details() -> str:
        return (
            f"job status: {json.dumps(api.status(), indent=1)[:3000]}\n"
            f"operator log:\n{operator.tail()}\n{kubelet.diagnostics()}"
        )

    shutil.rmtree(storage / "jobs", ignore_errors=True)  # a rerun starts from the prepared inputs only
    operator.start()
    job = tiny_job()
    # The claim the job names, as an administrator (or hack/kind-e2e.sh) made it beforehand.
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
             "status": {"phase": "Bound"}}  # fmt: skip
    api.call("POST", api_path("v1", "persistentvolumeclaims", NAMESPACE), claim)
    api.call("POST", api_path(*DJ, NAMESPACE), job)

    # 1. Mid-generation: a shard running with some, but at most half, of its records written.
    sizes = {index: shard_size(job, storage, index) for index in (0, 1)}

    def shard_mid_way() -> Any:
        written = partial_records(storage)
        running = [p for p in kubelet.pods() if p.owner == "Job/tiny-generate" and p.pid]
        return next((p for p in running if 0 < written.get(p.index, 0) <= sizes[p.index] // 2), None)

    victim = wait_for(
        shard_mid_way, "a generation shard to have written records", GENERATING_DEADLINE, details
    )
    # Freeze it at once (SIGSTOP), so it is still mid-shard when it is killed below.
    kubelet.kill(victim.name, signal.SIGSTOP)
    assert api.status().get("phase") == "Generating", details()

    # 2. The operator dies (SIGKILL), then the shard's pod is killed mid-shard.
    operator.kill()
    kubelet.kill(victim.name, signal.SIGKILL)

    # 3. The Job controller replaces the pod without the operator; the operator comes back.
    wait_for(
        lambda: [p for p in kubelet.pods() if p.index == victim.index and p.name != victim.name],
        f"a replacement pod for shard {victim.index}",
        60,
        details,
    )
    operator.start()

    # 4. The job succeeds; on the way, training reports its progress live (from its pod's /metrics).
    live: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        status = api.status()
        progress = status.get("progress") or {}
        if status.get("phase") == "Training" and progress.get("step") is not None:
            live.append(progress)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, "the DistillationJob to finish", SUCCEEDED_DEADLINE, details)
    assert status["phase"] == "Succeeded", details()

    # Status: conditions, progress and the evaluation summary a person reads.
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}
    for kind in ("DataGenerated", "StudentTrained", "Evaluated", "QualityGatePassed"):
        assert conditions.get(kind, ("",))[0] == "True", (kind, status)
    assert conditions.get("TeacherReady") == ("False", "ScaledDown"), status  # removed once generation ended
    progress = status["progress"]
    assert progress["shardsDone"] == progress["shardsTotal"] == 2, progress
    assert progress["records"] > 0, progress
    evaluation = status["evaluation"]
    assert evaluation["student"]["score"] is not None and evaluation["retention"] is not None, evaluation
    assert evaluation["gatePassed"] is True, evaluation
    assert status.get("completionTime") and status.get("startTime"), status
    assert live and live[0]["summary"].startswith("train epoch"), "no live training progress in status"

    # What it cost: each stage's pods reported their time and CPU; the CPU teacher holds no GPU.
    cost = status["cost"]
    for stage in ("check", "generate", "train", "evaluate"):
        used = cost["stages"][stage]
        assert used["podSeconds"] > 0 and used["cpuSeconds"] > 0 and used["gpuSeconds"] == 0, (stage, cost)
    assert cost["stages"]["teacher"]["wallSeconds"] > 0 and cost["gpuHours"] == 0, cost
    assert cost["teacherOutputTokens"] == progress["tokens"] and cost["trainingTokens"] > 0, cost
    assert cost["evaluationRequests"] > 0, cost

    # The report is on the storage, where the status says.
    report = status["artifacts"]["report"]
    mount = job["spec"]["storage"].get("mountPath", "/data")
    local_report = storage / os.path.relpath(report, mount) if report.startswith("/") else storage / report
    assert local_report.is_file(), (report, local_report)
    report_cost = json.loads(local_report.read_text())["cost"]
    assert set(report_cost["stages"]) == {"teacher", "check", "generate", "train", "evaluate"}, report_cost
    assert report_cost["stages"]["train"] == cost["stages"]["train"], (
        "the operator passed its cost to the report"
    )
    assert "## Cost" in local_report.with_suffix(".md").read_text()

    # The teacher is gone after generation, and its process with it.
    teacher = api.get("apps/v1", "deployments", "tiny-teacher")
    assert teacher is None or teacher["spec"].get("replicas") == 0, teacher
    teacher_pods = [p for p in kubelet.pods() if p.owner == "Deployment/tiny-teacher"]
    assert teacher_pods and all(p.pid is None for p in teacher_pods), teacher_pods

    # No duplicate children, though the operator ran twice: each created exactly once.
    for resource, name in [
        ("batch/v1/jobs", "tiny-check"),
        ("apps/v1/deployments", "tiny-teacher"),
        ("v1/services", "tiny-teacher"),
        ("batch/v1/jobs", "tiny-generate"),
        ("batch/v1/jobs", "tiny-train"),
        ("batch/v1/jobs", "tiny-evaluate"),
    ]:
        assert creations(emulator, resource, name) == 1, (resource, name)
    assert sorted(j["metadata"]["name"] for j in api.items("batch/v1", "jobs")) == [
        "tiny-check",
        "tiny-evaluate",
        "tiny-generate",
        "tiny-train",
    ]

    # The killed shard was replaced once and resumed; the other shard ran once.
    generate = api.get("batch/v1", "jobs", "tiny-generate")["status"]
    assert generate.get("failed") == 1 and generate.get("succeeded") == 2, generate
    shard_pods = [p for p in kubelet.pods() if p.owner == "Job/tiny-generate"]
    assert sorted(p.index for p in shard_pods) == sorted([0, 1, victim.index]), shard_pods
    assert next(p for p in shard_pods if p.name == victim.name).exit_codes == [137]
    replacement = next(p for p in shard_pods if p.index == victim.index and p.name != victim.name)
    resumed = json.loads(
        next(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
            for pod in api.items("v1", "pods")
            if pod["metadata"]["name"] == replacement.name
        )
    )
    assert resumed["resumed"] > 0, resumed

    assert_each_input_answered_once(job, storage)
