"""What the client tests play on the emulated cluster: the operator's writes, made with the operator's code.

The client reads what the operator writes. Rather than copy its shapes, these helpers make the
writes with the operator's own functions: the status document (`controller.status.status_document`)
sent by `controller.kube.patch_status`, Events by `controller.kube.post_event`, and stage pods
labelled by `manifests.common.metadata` (the labels every child gets). The pods run as processes
under the harness's kubelet, so their logs are real logs read through `pods/<name>/log`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import kubernetes

from distillery.api import (
    Artifacts,
    Condition,
    ConditionType,
    CostStatus,
    DistillationJob,
    DistillationJobStatus,
    EvaluationStatus,
    ModelScore,
    Phase,
    Progress,
    StageCost,
)
from distillery.controller import kube
from distillery.controller.apiclient import Api
from distillery.controller.status import status_document
from distillery.manifests import BuildConfig, build, common
from distillery.storage import Layout

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny-cluster.yaml"
WORKER_IMAGE = BuildConfig().worker_image  # what the operator's stage Jobs run without a chart setting


def job_document(name: str, namespace: str) -> dict[str, Any]:
    """examples/tiny-cluster.yaml under another name."""
    import yaml

    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    return body


def evaluate_job(job: DistillationJob, config: BuildConfig | None = None) -> dict[str, Any]:
    """The job's evaluate Job as the operator builds it, suspended (the harness runs no pod of it): where
    `report` finds the job's worker image."""
    built = build("evaluate", job, config or BuildConfig())
    assert built is not None
    built["spec"]["suspend"] = True
    return built


def running_status() -> DistillationJobStatus:
    return DistillationJobStatus(
        phase=Phase.training,
        message="training the student",
        start_time="2026-12-07T10:00:00Z",
        conditions=[
            Condition(
                type=ConditionType.data_generated, status="True", reason="Completed", message="240 records"
            ),
            Condition(
                type=ConditionType.student_trained, status="False", reason="Training", message="epoch 3"
            ),
        ],
        progress=Progress(summary="train 40% (epoch 32/80, ETA 1m)", percent=40),
        cost=CostStatus(gpu_hours=0.25, stages={"generate": StageCost(wall_seconds=42.0, pod_seconds=80.0)}),
    )


def succeeded_status(job: DistillationJob) -> DistillationJobStatus:
    layout = Layout(Path(job.spec.storage.mount_path), job.metadata.name or "")
    return DistillationJobStatus(
        phase=Phase.succeeded,
        message=f"succeeded: the student is at {layout.student}",
        start_time="2026-12-07T10:00:00Z",
        completion_time="2026-12-07T10:01:35Z",
        conditions=[
            Condition(
                type=ConditionType.evaluated, status="True", reason="Completed", message="scored 3 models"
            ),
            Condition(
                type=ConditionType.quality_gate_passed, status="True", reason="GatePassed", message="ok"
            ),
        ],
        progress=Progress(summary="done", percent=100),
        evaluation=EvaluationStatus(
            metric="exact_match",
            teacher=ModelScore(score=0.9, latency_p50_ms=12.0),
            student=ModelScore(score=0.75, latency_p50_ms=8.0),
            retention=0.8333,
            gate_passed=True,
        ),
        cost=CostStatus(
            gpu_hours=1.5,
            price=12.4,
            currency="USD",
            stages={
                "generate": StageCost(wall_seconds=42.0, pod_seconds=80.0),
                "train": StageCost(wall_seconds=610.0, pod_seconds=610.0, gpu_seconds=610.0, gpus=1),
            },
        ),
        artifacts=Artifacts(
            data=str(layout.work / "generated"),
            student=str(layout.student),
            report=str(layout.evaluation_report),
        ),
    )


class Operator:
    """The operator's writes to one emulated API server, with its own code (its client logs in to `url`)."""

    def __init__(self, url: str):
        configuration = kubernetes.client.Configuration()
        configuration.host = url
        kubernetes.client.Configuration.set_default(configuration)

    def write_status(self, body: dict[str, Any], status: DistillationJobStatus) -> None:
        meta = body["metadata"]
        document = status_document(status)
        asyncio.run(self._call(kube.patch_status, meta["namespace"], meta["name"], document))

    def post_event(self, body: dict[str, Any], reason: str, message: str, type: str = "Normal") -> None:
        asyncio.run(self._call(kube.post_event, body, type, reason, message))

    @staticmethod
    async def _call(function: Any, *args: Any) -> None:
        api = Api()
        try:
            await function(api, *args)
        finally:
            session = api._session
            if session is not None:
                await session.close()


def stage_pod(job: DistillationJob, stage: str, lines: list[str], suffix: str = "0") -> dict[str, Any]:
    """A pod of `stage` as the operator's Jobs make them (its labels and owner), printing `lines`."""
    name = common.fit_name(job.metadata.name or "", f"{stage}-{suffix}")
    script = "\n".join(f"print({json.dumps(line)}, flush=True)" for line in lines)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": common.metadata(job, name, stage),
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": stage, "image": WORKER_IMAGE, "command": ["python", "-c", script]}],
        },
    }


def fill_claim(claim: Path, job: DistillationJob) -> dict[str, bytes]:
    """The files evaluation and training leave on the claim (relative path -> content)."""
    layout = Layout(claim, job.metadata.name or "")
    files = {
        "reports/evaluation.md": b"# Evaluation\n\nretention 0.833 (gate passed)\n",
        "reports/evaluation.json": json.dumps({"retention": 0.8333}).encode(),
        "reports/evaluation.png": bytes(range(256)) * 40,
        "student/config.json": b'{"model_type": "llama"}\n',
        "student/model.safetensors": os.urandom(300_000),
    }
    for relative, content in files.items():
        path = layout.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def tool_env(workdir: Path, config: Path) -> dict[str, str]:
    """The environment `distillery` and `kubectl distillery` run in: this checkout's code, the venv's
    scripts first on PATH (where kubectl finds `kubectl-distillery`), the test's kubeconfig."""
    return {
        **os.environ,
        "KUBECONFIG": str(config),
        "HOME": str(workdir),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT / "operator"),
    }


def command_line(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def write_kubeconfig(url: str, namespace: str, path: Path) -> Path:
    """A kubeconfig for the emulator whose context names `namespace` (the client takes it from there)."""
    from tests.harness import kubeconfig

    document = json.loads(kubeconfig(url))
    document["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(json.dumps(document))
    return path


def run_tool(words: list[str], config: Path, workdir: Path, timeout: float = 120) -> Any:
    """A command (`kubectl distillery ...`, `distillery ...`, a script) as a user's shell runs it."""
    import subprocess

    return subprocess.run(
        words, env=tool_env(workdir, config), capture_output=True, text=True, timeout=timeout, cwd=workdir
    )


def pod_phase(api: Any, name: str) -> str | None:
    return ((api.get("v1", "pods", name) or {}).get("status") or {}).get("phase")


def play_operator(cluster: Any, namespace: str, name: str, claim: str) -> None:
    """Once the job `name` exists, do what the operator and its stages leave behind for a finished job:
    the stage pods (with logs), the evaluate Job, the files on the claim, an Event, a Succeeded status."""
    from tests.support.waiting import wait_for

    api = cluster.api(namespace)
    body = wait_for(lambda: api.get("distillery.dev/v1alpha1", "distillationjobs", name), f"job {name}", 60)
    job = DistillationJob.model_validate(body)
    api.create(evaluate_job(job))
    fill_claim(cluster.kubelet.claim_dir(namespace, claim), job)
    pods = [
        stage_pod(job, "generate", ["shard 0: 120 records accepted, 0 rejected"], "0"),
        stage_pod(job, "generate", ["shard 1: 118 records accepted, 2 rejected"], "1"),
        stage_pod(job, "train", ["epoch 1/80 loss 2.512", "epoch 80/80 loss 0.094"]),
        stage_pod(job, "evaluate", ["student exact_match 0.750", "retention 0.833"]),
    ]
    for pod in pods:
        api.create(pod)
    for pod in pods:
        pod_name = pod["metadata"]["name"]
        wait_for(lambda p=pod_name: pod_phase(api, p) == "Succeeded", f"pod {pod_name}", 60)
    operator = Operator(cluster.url)
    operator.post_event(body, "StageCompleted", "evaluate: scored teacher, student")
    operator.write_status(body, succeeded_status(job))
