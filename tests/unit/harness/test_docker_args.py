"""The Docker backend's translation of a pod spec into `docker create` arguments, and the
ServiceAccount admission the harness plays (pure functions: no engine, no API server).
The same translation against a real engine is tests/containers/test_runtime.py."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from distillery.api import DistillationJob
from distillery.manifests import BuildConfig, build
from tests.harness import ContainerConfig, HarnessError
from tests.harness.docker.args import (
    NEVER_PULL,
    PRESENT,
    PULL,
    Mount,
    command_args,
    create_args,
    mounts,
    never_pull_message,
    non_root_problem,
    pull_decision,
    pull_error_message,
    pull_policy,
    quantity,
    resource_args,
    security_args,
    security_context,
    user_args,
)
from tests.harness.docker.services import dns_names, dns_search
from tests.harness.serviceaccount import SERVICE_ACCOUNT_PATH, ApiAccess, admit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def config(spec: dict, **fields) -> ContainerConfig:
    defaults = dict(
        name=spec["name"],
        image=spec.get("image", "img"),
        command=spec.get("command") or [],
        args=spec.get("args") or [],
        env={},
        working_dir=spec.get("workingDir", ""),
        mounts={},
        ports=[],
        termination_message_path="/dev/termination-log",
        termination_log=Path("/pods/p/main.termination-log"),
        log=Path("/pods/p/main.log"),
        spec=spec,
    )
    return ContainerConfig(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", 2),
        ("1.5", Decimal("1.5")),
        ("512Mi", 512 * 2**20),
        ("8Gi", 8 * 2**30),
        ("1G", 10**9),
        ("1e3", 1000),
        ("100k", 100_000),
        (3, 3),
    ],
)
def test_quantities(text, value):
    assert quantity(text) == value


def test_a_bad_quantity_is_refused():
    with pytest.raises(HarnessError, match="quantity"):
        quantity("12 apples")


def test_security_context_flags():
    pod = {
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 2000,
            "runAsNonRoot": True,
            "fsGroup": 3000,
            "supplementalGroups": [4000, 3000],
        }
    }
    container = {
        "securityContext": {
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }
    }
    security = security_context(pod, container)
    assert security["runAsUser"] == 65532 and security["runAsGroup"] == 2000  # the container's wins
    assert user_args(security, pod) == ["--user", "65532:2000", "--group-add", "3000", "--group-add", "4000"]
    assert security_args(security) == [
        "--read-only",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--security-opt",
        "no-new-privileges",
    ]
    assert security_args({"seccompProfile": {"type": "Unconfined"}}) == [
        "--security-opt",
        "seccomp=unconfined",
    ]
    assert security_args({"seccompProfile": {"type": "RuntimeDefault"}}) == []
    # runAsGroup alone keeps the image's user.
    assert user_args({"runAsGroup": 5}, {}, image_user="65532:65532") == ["--user", "65532:5"]
    assert user_args({}, {}) == []


@pytest.mark.parametrize(
    ("security", "image_user", "problem"),
    [
        ({"runAsNonRoot": True}, "", "image will run as root"),
        ({"runAsNonRoot": True}, "0:0", "image will run as root"),
        ({"runAsNonRoot": True}, "nobody", "non-numeric user (nobody)"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "65532", "runAsUser breaks non-root policy"),
        ({"runAsNonRoot": True}, "65532:65532", None),
        ({"runAsNonRoot": True, "runAsUser": 1000}, "", None),
        ({}, "", None),
    ],
)
def test_run_as_non_root_is_checked_as_the_kubelet_does(security, image_user, problem):
    found = non_root_problem(security, image_user, "p", "c")
    assert (found is None) if problem is None else (problem in found), found


def test_limits_and_requests_become_cgroup_settings():
    assert resource_args({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "250m"}}) == [
        "--cpus",
        "0.5",
        "--memory",
        str(256 * 2**20),
        "--memory-swap",
        str(256 * 2**20),
        "--cpu-shares",
        "256",
    ]
    assert resource_args({"requests": {"cpu": "2", "memory": "8Gi"}}) == ["--cpu-shares", "2048"]
    assert resource_args({"limits": {"nvidia.com/gpu": "1"}}) == []  # not the engine's here
    assert resource_args({"requests": {"cpu": "1m"}}) == ["--cpu-shares", "2"]  # the kubelet's minimum


def test_command_and_args_as_written():
    assert command_args(
        config(
            {"name": "c", "command": ["python3", "-m", "x"], "args": ["--port", "8000"]},
            command=["python3", "-m", "x"],
            args=["--port", "8000"],
        )
    ) == (["--entrypoint", "python3"], ["-m", "x", "--port", "8000"])
    assert command_args(config({"name": "c"}, args=["generate", "--x"])) == ([], ["generate", "--x"])
    assert command_args(config({"name": "c"})) == ([], [])


def test_mounts_follow_the_volume_types():
    spec = {
        "name": "c",
        "volumeMounts": [
            {"name": "storage", "mountPath": "/data"},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "tmp", "mountPath": "/tmp", "readOnly": True},
        ],
    }
    volumes = {
        "storage": {"persistentVolumeClaim": {"claimName": "a"}},
        "shm": {"emptyDir": {"medium": "Memory"}},
        "cfg": {"configMap": {"name": "x"}},
        "tmp": {"emptyDir": {}},
    }
    host = {
        "/data": Path("/claims/a"),
        "/dev/shm": Path("/pods/p/shm"),
        "/etc/cfg": Path("/pods/p/cfg"),
        "/tmp": Path("/pods/p/tmp"),
    }
    found = mounts(config(spec, mounts=host), volumes, {"shm": "dh-x-ns-p-shm"})
    assert found == [
        Mount("bind", "/claims/a", "/data"),
        Mount("volume", "dh-x-ns-p-shm", "/dev/shm"),
        Mount("bind", "/pods/p/cfg", "/etc/cfg", readonly=True),
        Mount("bind", "/pods/p/tmp", "/tmp", readonly=True),
        Mount("bind", "/pods/p/main.termination-log", "/dev/termination-log"),
    ]
    assert found[1].arg() == "type=volume,source=dh-x-ns-p-shm,target=/dev/shm,volume-nocopy"
    assert found[2].arg() == "type=bind,source=/pods/p/cfg,target=/etc/cfg,readonly"


def test_a_generation_pod_of_the_tiny_job_translates_without_rewrites():
    document = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    document["metadata"].update(namespace="ns", uid="u")
    document["spec"]["storage"] = {"pvc": {"claimName": "tiny-data"}}
    manifest = build(
        "generate", DistillationJob.model_validate(document), BuildConfig(worker_image="worker:1")
    )
    pod = manifest["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    host = {m["mountPath"]: Path("/host") / m["name"] for m in spec["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = create_args(
        name="n",
        config=config(spec, mounts=host, env={"HOME": "/tmp"}),
        pod_spec=pod,
        sandbox="sb",
        labels={"l": "v"},
        mounts=mounts(config(spec, mounts=host), volumes, {"shm": "vol-shm"}),
        env={"HOME": "/tmp"},
    )
    image = args.index("worker:1")
    assert args[image + 1 :] == spec["command"][1:] + spec["args"]  # exactly as written
    assert args[args.index("--entrypoint") + 1] == spec["command"][0]
    assert args[args.index("--user") + 1] == "65532:65532" and args[args.index("--group-add") + 1] == "65532"
    assert {"--read-only", "no-new-privileges"} <= set(args) and args[args.index("--cap-drop") + 1] == "ALL"
    assert "type=volume,source=vol-shm,target=/dev/shm,volume-nocopy" in args
    assert (
        "type=bind,source=/host/tmp,target=/tmp" in args
        and "type=bind,source=/host/storage,target=/data" in args
    )
    assert (
        args[args.index("--network") + 1] == "container:sb" and args[args.index("--workdir") + 1] == "/data"
    )
    assert args[args.index("--pull") + 1] == "never"


def test_service_dns_names_and_search_path():
    assert dns_names("teacher", "ml") == ["teacher.ml.svc.cluster.local", "teacher.ml.svc"]
    assert dns_search("ml") == ["ml.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def test_admission_adds_the_service_account_token_volume():
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]},
    }
    admitted = admit(pod)
    assert admitted["spec"]["serviceAccountName"] == "default" and "volumes" not in pod["spec"]  # a copy
    (volume,) = admitted["spec"]["volumes"]
    sources = volume["projected"]["sources"]
    assert [next(iter(s)) for s in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]
    for container in admitted["spec"]["containers"] + admitted["spec"]["initContainers"]:
        assert container["volumeMounts"] == [
            {"name": volume["name"], "mountPath": SERVICE_ACCOUNT_PATH, "readOnly": True}
        ]
    opted_out = admit(
        {
            "metadata": {"name": "p"},
            "spec": {"automountServiceAccountToken": False, "containers": [{"name": "a"}]},
        }
    )
    assert "volumes" not in opted_out["spec"]
    access = ApiAccess("10.0.0.1", 6443, "PEM", "token")
    assert (
        access.env()["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
        and access.env()["KUBERNETES_SERVICE_PORT"] == "6443"
    )


@pytest.mark.parametrize(
    ("container", "policy"),
    [
        ({"image": "127.0.0.1:5055/distillery/operator:0.1.0-tier-abc"}, "IfNotPresent"),
        ({"image": "127.0.0.1:5055/distillery/operator"}, "Always"),  # the port is not a tag
        ({"image": "python:latest"}, "Always"),
        ({"image": "python"}, "Always"),
        ({"image": "python@sha256:" + "0" * 64}, "IfNotPresent"),
        ({"image": "python:latest", "imagePullPolicy": "Never"}, "Never"),  # as written wins
        ({"image": "python:3.11", "imagePullPolicy": "Always"}, "Always"),
    ],
)
def test_pull_policy_is_the_written_one_else_the_api_servers_default(container, policy):
    assert pull_policy(container) == policy


def test_an_unknown_pull_policy_is_refused():
    with pytest.raises(HarnessError, match="imagePullPolicy"):
        pull_policy({"image": "x:1", "imagePullPolicy": "Sometimes"})


@pytest.mark.parametrize(
    ("policy", "present", "decision"),
    [
        ("Always", True, PULL),  # every start, present or not
        ("Always", False, PULL),
        ("IfNotPresent", True, PRESENT),
        ("IfNotPresent", False, PULL),
        ("Never", True, PRESENT),
        ("Never", False, NEVER_PULL),
    ],
)
def test_the_kubelets_pull_decision(policy, present, decision):
    assert pull_decision(policy, present) == decision


def test_pull_messages_are_the_kubelets():
    assert never_pull_message("a/b:1") == 'Container image "a/b:1" is not present with pull policy of Never'
    stderr = "Error response from daemon: manifest for r:5/a:1 not found: manifest unknown\n"
    assert pull_error_message("r:5/a:1", stderr) == (
        'failed to pull image "r:5/a:1": Error response from daemon: manifest for r:5/a:1 not found: '
        "manifest unknown"
    )


def test_create_never_pulls():
    """The runtime pulls (or not) before `docker create`, which must not pull on its own."""
    args = create_args(
        name="c",
        config=config({"name": "main", "image": "r/a:1"}),
        pod_spec={},
        sandbox="s",
        labels={},
        mounts=[],
        env={},
    )
    assert args[args.index("--pull") + 1] == "never"
