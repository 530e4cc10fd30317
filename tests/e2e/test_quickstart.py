"""The README's "Quick start on a cluster", run as written with a real kubectl, so the walk cannot drift.

Every line of the section's ```bash blocks runs with /usr/bin/kubectl (1.32) against the
emulated API server (KUBECONFIG points at it; tests/harness/kubectl_api.py serves what kubectl
asks) while the operator runs (`distillery operator`, as in tests/support/recovery.py) and the
harness's process kubelet plays the pods. The commands run in a directory where `examples/`,
`charts/` and `hack/` are the checkout's and `build/tiny` is the session's tiny models and data.
What stands in, line by line (`substitute`):

- `helm install distillery ...`: the emulator cannot run a release, so the chart is rendered with
  `helm template` (its CRD included) and applied with kubectl, with `operator.replicas=0`: the
  process tier cannot run the operator's pod (it has no in-cluster login), so the operator is a
  local process with a kubeconfig. `helm uninstall` is `helm template ... | kubectl delete -f -`.
- `.venv/bin/python hack/prepare_tiny.py`: not run; `build/tiny` already holds the session's tiny
  models (tests/fixtures_models.py: prepare_tiny.py's own code and seed) and its data.
- `kubectl cp SRC POD:PATH` and back: the harness has no exec (kubectl cp runs tar in the pod),
  so the copy is made on the directory that stands for the claim the pod mounts at PATH's mount.
- `kubectl get dj tiny -w` runs in the background until the job has ended; its output must show
  the phase Succeeded.

Every other line runs verbatim, and must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness import ProcessRuntime, kubeconfig
from tests.support.chart import CHART, RELEASE_NAMESPACE
from tests.support.doc_commands import QUICKSTART, section_commands
from tests.support.recovery import ProcessOperator
from tests.support.tiny import EXAMPLE, POD_ENV, ROOT, prepare_claim
from tests.tools import helm_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = ROOT / "README.md"
KUBECTL = "/usr/bin/kubectl"
NAMESPACE = "default"  # the walk names none


def quickstart_commands() -> list[str]:
    """The section's ```bash blocks, one command per entry (continuation lines joined, comments dropped)."""
    return section_commands(README, QUICKSTART)


def test_tiny_cluster_example_is_tiny_yaml_with_a_claim():
    """examples/tiny-cluster.yaml is examples/tiny.yaml but for its storage (a claim) and the teacher's CPU image."""
    local = yaml.safe_load(EXAMPLE.read_text())
    cluster = yaml.safe_load((ROOT / "examples" / "tiny-cluster.yaml").read_text())
    claim = yaml.safe_load_all((ROOT / "examples" / "tiny-claim.yaml").read_text())
    assert cluster["spec"]["storage"] == {"pvc": {"claimName": next(claim)["metadata"]["name"]}}
    assert cluster["spec"]["teacher"].pop("image").split(":")[0].endswith("/worker-cpu")
    for spec in (local["spec"], cluster["spec"]):
        spec.pop("storage")
    assert cluster == local


def test_notes_name_the_cluster_example():
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl apply -f examples/tiny-cluster.yaml" in notes
    assert "apply -f examples/tiny.yaml" not in notes


class Walk:
    def __init__(self, cluster, workdir: Path):
        self.cluster, self.workdir = cluster, workdir
        config = workdir / "kubeconfig"
        config.write_text(kubeconfig(cluster.url))
        self.env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(workdir / "home")}
        self.outputs: list[tuple[str, str]] = []
        self.watch: subprocess.Popen | None = None

    def substitute(self, command: str) -> str | None:
        """The command to run for a README line (None: done here, not by a shell)."""
        words = shlex.split(command)
        render = f"{helm_binary()} template distillery {CHART} -n {RELEASE_NAMESPACE} --include-crds"
        if words[:3] == ["helm", "install", "distillery"]:
            return f"{render} --set operator.replicas=0 | {KUBECTL} apply -n {RELEASE_NAMESPACE} -f -"
        if words[:3] == ["helm", "uninstall", "distillery"]:
            return f"{render} --set operator.replicas=0 | {KUBECTL} delete -n {RELEASE_NAMESPACE} -f -"
        if words[-1] == "hack/prepare_tiny.py":
            return None  # build/tiny is there already
        if words[:2] == ["kubectl", "cp"]:
            self.copy(*words[2:])
            return None
        return command.replace("kubectl ", f"{KUBECTL} ", 1) if words[0] == "kubectl" else command

    def copy(self, source: str, target: str) -> None:
        def local(spec: str) -> Path:
            if ":" not in spec:
                return self.workdir / spec
            pod_name, path = spec.split(":", 1)
            pod = self.cluster.api(NAMESPACE).get("v1", "pods", pod_name)
            assert pod is not None, f"kubectl cp: no pod {pod_name}"
            volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
            for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
                claim = volumes[mount["name"]].get("persistentVolumeClaim")
                root = mount["mountPath"].rstrip("/") + "/"
                if claim and path.startswith(root):
                    claim_dir = self.cluster.kubelet.claim_dir(NAMESPACE, claim["claimName"])
                    return claim_dir / path[len(root) :]
            raise AssertionError(f"kubectl cp: {path} is on no claim of pod {pod_name}")

        source_path, target_path = local(source), local(target)
        assert source_path.is_dir(), f"kubectl cp: {source} is not there"
        target_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source_path, target_path, symlinks=False)
        self.outputs.append((f"kubectl cp {source} {target}", ""))

    def run(self, command: str) -> None:
        if command.split("#")[0].split()[-1] == "-w":
            line = self.substitute(command.split("#")[0])
            # To a file, not a pipe: nobody reads it until the end, and a full pipe would stall kubectl.
            self.watch_log = self.workdir.parent / "watch.log"
            with self.watch_log.open("w") as out:
                self.watch = subprocess.Popen(
                    line,
                    shell=True,
                    cwd=self.workdir,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            return
        line = self.substitute(command)
        if line is None:
            return
        result = subprocess.run(
            line, shell=True, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=1800
        )
        self.outputs.append((command, result.stdout + result.stderr))
        assert result.returncode == 0, (
            f"{command}\n(ran: {line})\nexit {result.returncode}:\n{result.stdout}{result.stderr}"
        )

    def watched(self) -> str:
        assert self.watch is not None, "the walk has no `kubectl get dj -w`"
        os.killpg(self.watch.pid, signal.SIGINT)
        self.watch.wait(30)
        return self.watch_log.read_text()

    def output(self, start: str) -> str:
        return next(out for command, out in self.outputs if command.startswith(start))


@pytest.fixture
def workdir(tmp_path: Path, tiny_models: dict[str, Path]) -> Path:
    """Where the walk runs: the checkout's examples, charts and hack, and build/tiny as prepare_tiny.py makes it."""
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("examples", "charts", "hack"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    prepare_claim(work / "build" / "tiny", tiny_models, copy_models=False)
    return work


def test_readme_quick_start_on_a_cluster(make_cluster, workdir: Path, tmp_path: Path):
    commands = quickstart_commands()
    assert any("examples/tiny-cluster.yaml" in c for c in commands), commands
    cluster = make_cluster(
        [NAMESPACE, RELEASE_NAMESPACE], root=tmp_path / "cluster", runtime=ProcessRuntime(env=POD_ENV)
    )
    operator = ProcessOperator(cluster, tmp_path)
    walk = Walk(cluster, workdir)
    operator.start()
    try:
        for command in commands:
            walk.run(command)
            if command.startswith("kubectl wait --for=jsonpath"):
                watched = walk.watched()
                assert re.search(r"^tiny\s+Succeeded\b", watched, re.M), watched
    except BaseException:
        print(f"operator:\n{operator.tail()}\n{cluster.kubelet.diagnostics()}")
        raise
    finally:
        operator.stop()

    assert "StageCompleted" in walk.output("kubectl describe dj tiny")
    assert walk.output("kubectl logs -l distillery.dev/job=tiny,distillery.dev/stage=generate").strip()
    report = walk.output("cat tiny-report/evaluation.md")
    assert "retention" in report.lower(), report
    assert (workdir / "tiny-student" / "config.json").is_file()
    api = cluster.api(NAMESPACE)
    assert api.get("distillery.dev/v1alpha1", "distillationjobs", "tiny") is None
    assert api.get("v1", "persistentvolumeclaims", "tiny-data") is None
