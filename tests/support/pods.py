"""A stage pod's container run as local processes: the command line and env the manifests build, with
`$(VAR)` expanded the way the kubelet does, so a stage test runs exactly what a pod would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob
from distillery.contract.commands import RENDEZVOUS_ENDPOINT_ENV, SHARD_INDEX_ENV
from distillery.manifests import BuildConfig, build
from distillery.storage import Layout
from tests.support.training import REPO, make_job

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion in command and args; an unknown name is left as written."""
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env with a literal value (references to Secrets are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_pod(
    container: dict[str, Any], overrides: Mapping[str, str], termination: Path, cwd: Path
) -> subprocess.Popen:
    """The container's command as a local process (`kill_pod` ends it and everything it started).

    `torchrun` runs as this interpreter's `torch.distributed.run`, and `distillery` as its module, so the
    test's environment is the one that runs."""
    env = {
        **os.environ,
        **literal_env(container),
        **overrides,
        "PYTHONPATH": str(REPO / "operator"),
        "OMP_NUM_THREADS": "1",
        "DISTILLERY_TERMINATION_LOG": str(termination),
    }
    argv = [expand(a, env) for a in container["command"] + container["args"]]
    # Each pod has its own network namespace; local "pods" share one, so the metrics server stays off.
    if "--metrics-port" in argv:
        argv[argv.index("--metrics-port") + 1] = "0"
    executables = {"torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    executables["distillery"] = [sys.executable, "-m", "distillery"]
    argv = [*executables[argv[0]], *argv[1:]]
    log = (termination.parent / f"{termination.name}.out").open("w")
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def kill_pod(process: subprocess.Popen) -> None:
    """SIGKILL the process and every descendant, as a pod's death ends every process in its cgroup.

    A process group is not enough: torchrun starts each worker in a session of its own."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)


# ------------------------------------------------------------------ the training Job's pods

NAME = "nodes"  # the job whose training pods these run
TRAIN_WAIT_SECONDS = 600


def job_on(root: Path, tiny_models: dict[str, Path], **training) -> DistillationJob:
    """The tiny job with its storage mounted at `root` (the pods' working directory and --storage)."""
    document = make_job(NAME, tiny_models["student"], tiny_models["teacher"], gpus=0, **training).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    document["metadata"].update(namespace="default", uid="9d3c0a4e-0000-4000-8000-000000000001")
    document["spec"]["storage"] = {"mountPath": str(root), "pvc": {"claimName": "shared"}}
    return DistillationJob.model_validate(document)


def start_pods(job: DistillationJob, root: Path, attempt: int) -> list[subprocess.Popen]:
    """Every training pod of the job's Indexed Job, pod 0's rendezvous on a loopback port."""
    manifest = build("train", job, BuildConfig())
    assert manifest["spec"]["completionMode"] == "Indexed"
    container = container_of(manifest)
    endpoint = f"127.0.0.1:{free_port()}"
    return [
        start_pod(
            container,
            {RENDEZVOUS_ENDPOINT_ENV: endpoint, SHARD_INDEX_ENV: str(index)},
            root / f"termination-{attempt}-{index}",
            root,
        )
        for index in range(manifest["spec"]["completions"])
    ]


def wait_all(pods: list[subprocess.Popen], root: Path) -> list[int]:
    codes = [pod.wait(timeout=TRAIN_WAIT_SECONDS) for pod in pods]
    return codes


def output(root: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(root.glob("termination-*.out")))


def report_of(root: Path) -> dict:
    return json.loads(Layout(root, NAME).training_report.read_text())
