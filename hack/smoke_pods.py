#!/usr/bin/env python3
"""Print the `docker run` arguments of one pod the operator would create, NUL-separated.

    python smoke_pods.py JOB.yaml CHILD --worker-image IMG --pvc-dir DIR --scratch DIR [--index K]
                         [--add-tmp] [--read-only] [--completions]

Used by hack/smoke-images.sh, inside the worker image (it needs only `distillery`): the pod
template comes from the operator's own builders (`distillery.manifests.build`), so the
container runs with exactly the command, args, env, working directory, user, capabilities and
volumes a cluster would give it. CHILD is a key of `distillery.manifests.CHILDREN` with a pod
template (teacher, generate, train, evaluate).

How the pod maps onto Docker (what a kubelet would do):
- runAsUser/runAsGroup -> --user, fsGroup -> --group-add; runAsNonRoot refuses uid 0;
- allowPrivilegeEscalation: false -> no-new-privileges; capabilities.drop -> --cap-drop;
  readOnlyRootFilesystem -> --read-only;
- the storage PVC -> a bind mount of --pvc-dir (made group-writable for fsGroup by the caller);
  an emptyDir -> a fresh directory under --scratch (mode 0777, as the kubelet makes it), or a
  tmpfs for medium Memory; /dev/termination-log -> a file under --scratch, as the kubelet mounts it;
- an Indexed Job's JOB_COMPLETION_INDEX -> --index; the teacher's Service -> a network alias.
--add-tmp and --read-only add what the manifests should have (an emptyDir at /tmp, a
read-only root) when they do not have it yet, saying so on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from distillery.api import DistillationJob
from distillery.manifests import BuildConfig, build, names

TERMINATION_LOG = "/dev/termination-log"


def note(message: str) -> None:
    print(f"smoke_pods: {message}", file=sys.stderr)


def load_job(path: Path, worker_image: str) -> DistillationJob:
    """The job as the operator sees it in a cluster: storage is a claim, the teacher runs the worker image."""
    document = yaml.safe_load(path.read_text())
    metadata = document.setdefault("metadata", {})
    metadata.setdefault("namespace", "smoke")
    metadata.setdefault("uid", "00000000-0000-0000-0000-000000000000")
    spec = document["spec"]
    spec["storage"] = {"pvc": {"claimName": f"{metadata['name']}-data"}}
    teacher = spec["teacher"]
    teacher["image"] = worker_image
    # The teacher as a user's spec gets it by default: --dtype auto and torch.compile on (the
    # tiny example turns compilation off with -O0; compiling is what needs g++ and a writable cache).
    teacher.pop("extraArgs", None)
    teacher.pop("dtype", None)
    return DistillationJob.model_validate(document)


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def docker_args(job: DistillationJob, child: str, options: argparse.Namespace) -> list[str]:
    manifest = build(child, job, BuildConfig(worker_image=options.worker_image))
    if manifest is None or "template" not in manifest.get("spec", {}):
        raise SystemExit(f"smoke_pods: {child} has no pod template")
    pod = pod_of(manifest)
    (container,) = pod["containers"]
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    scratch = Path(options.scratch)
    indexed = manifest["spec"].get("completionMode") == "Indexed"
    pod_name = f"{child}-{options.index}" if indexed else child
    args: list[str] = []

    user, group = security.get("runAsUser"), security.get("runAsGroup")
    if user is None:
        raise SystemExit(
            f"smoke_pods: {child}: no runAsUser; the smoke runs every pod as the manifests' user"
        )
    if security.get("runAsNonRoot") and user == 0:
        raise SystemExit(f"smoke_pods: {child}: runAsNonRoot with runAsUser 0")
    args += ["--user", f"{user}:{group if group is not None else user}"]
    if "fsGroup" in pod_security:
        args += ["--group-add", str(pod_security["fsGroup"])]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    elif options.read_only:
        note(f"{child}: the manifest does not set readOnlyRootFilesystem; running read-only anyway")
        args.append("--read-only")

    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
    for path, mount in mounts.items():
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            args += ["-v", f"{os.path.abspath(options.pvc_dir)}:{path}"]
        elif "emptyDir" in volume:
            args += empty_dir(volume, path, scratch / f"{pod_name}-{mount['name']}")
        else:
            raise SystemExit(
                f"smoke_pods: {child}: volume {mount['name']} is of a kind the smoke does not mount"
            )
    if "/tmp" not in mounts and options.add_tmp:
        note(f"{child}: the manifest mounts nothing at /tmp; adding the emptyDir it needs")
        args += empty_dir({"emptyDir": {}}, "/tmp", scratch / f"{pod_name}-tmp")

    termination = scratch / f"{pod_name}-termination-log"
    termination.write_text("")
    termination.chmod(0o666)
    args += ["-v", f"{termination.resolve()}:{container.get('terminationMessagePath', TERMINATION_LOG)}"]

    for variable in container.get("env", []):
        if "value" not in variable:
            raise SystemExit(f"smoke_pods: {child}: env {variable['name']} is not a plain value")
        args += ["-e", f"{variable['name']}={variable['value']}"]
    if indexed:
        args += ["-e", f"JOB_COMPLETION_INDEX={options.index}"]
    if "workingDir" in container:
        args += ["-w", container["workingDir"]]
    if child == "teacher":
        args += ["--network-alias", names(job).teacher]  # the Service in front of the pod

    command = container.get("command") or []
    if command:
        args += ["--entrypoint", command[0]]
    return [*args, container["image"], *command[1:], *container.get("args", [])]


def empty_dir(volume: dict[str, Any], path: str, host_dir: Path) -> list[str]:
    if volume["emptyDir"].get("medium") == "Memory":
        # As the kubelet mounts it: no size cap but the memory limit's, exec allowed (--mount's
        # tmpfs would be noexec).
        return ["--tmpfs", f"{path}:rw,exec,mode=1777"]
    host_dir.mkdir(parents=True, exist_ok=True)
    host_dir.chmod(0o777)  # the kubelet makes emptyDirs world-writable
    return ["-v", f"{host_dir.resolve()}:{path}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("child")
    parser.add_argument("--worker-image", required=True)
    parser.add_argument("--pvc-dir", required=True, help="host directory that stands for the job's claim")
    parser.add_argument("--scratch", required=True, help="directory for emptyDirs and termination logs")
    parser.add_argument("--index", type=int, default=0, help="JOB_COMPLETION_INDEX of an Indexed Job's pod")
    parser.add_argument(
        "--add-tmp", action="store_true", help="add an emptyDir at /tmp when the pod has none"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="run read-only even if the manifest says not"
    )
    parser.add_argument("--completions", action="store_true", help="print the Job's completions and exit")
    options = parser.parse_args()
    job = load_job(options.job, options.worker_image)
    if options.completions:
        manifest = build(options.child, job, BuildConfig(worker_image=options.worker_image)) or {}
        print(manifest.get("spec", {}).get("completions", 1))
        return
    sys.stdout.write("".join(arg + "\0" for arg in docker_args(job, options.child, options)))


if __name__ == "__main__":
    main()
