"""Copying a job's report (and student) to this machine: from `spec.output` in an object store, or off the claim.

Off the claim, with no exec (which `kubectl cp` needs): a short-lived pod runs the job's worker
image with the claim mounted read-only, writes a tar of one directory to stdout as base64 lines
between two markers, and exits; the client reads its log through the API and unpacks it. The
pod is owned by the job (deleted with it) and labelled with it (`distillery.dev/job`), but not
as the operator's (`app.kubernetes.io/managed-by: kubectl-distillery`), so the operator never
takes it for a stage pod. The log is read while the pod writes it (`follow`), which outlasts the
kubelet's log rotation on a real cluster; a trailer with the size and sha256 proves it whole.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any

from distillery.api import DistillationJob, is_uri
from distillery.client.errors import ClientError, NotFound, WaitTimeout
from distillery.client.transport import Transport, path
from distillery.manifests.common import (
    JOB_LABEL,
    MANAGED_BY,
    container_security,
    fit_name,
    label_value,
    pod_security,
    storage_volume,
)

BEGIN = "DISTILLERY-TAR-BEGIN"
END = "DISTILLERY-TAR-END"
MISSING = "DISTILLERY-COPY-MISSING"
COPIER = "kubectl-distillery"
COMPONENT = "copy"
# The pod removes itself from the node if the client is gone (killed, network lost) before it could.
POD_DEADLINE_SECONDS = 900

# Run in the pod by the image's `python` (stdlib only): argv[1] is the directory to send.
SCRIPT = (
    """
import base64, hashlib, os, sys, tarfile
root = sys.argv[1]
if not os.path.isdir(root):
    print("@MISSING@ " + root, flush=True)
    sys.exit(3)
class Out:
    def __init__(self):
        self.pending, self.digest, self.size = b"", hashlib.sha256(), 0
    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        self.pending += data
        cut = len(self.pending) - len(self.pending) % 57  # 57 bytes: one 76-character base64 line
        sys.stdout.write(base64.encodebytes(self.pending[:cut]).decode())
        self.pending = self.pending[cut:]
        return len(data)
out = Out()
print("@BEGIN@", flush=True)
with tarfile.open(fileobj=out, mode="w|") as tar:
    tar.add(root, arcname=".")
sys.stdout.write(base64.encodebytes(out.pending).decode())
print("@END@", out.digest.hexdigest(), out.size, flush=True)
""".replace("@MISSING@", MISSING)
    .replace("@BEGIN@", BEGIN)
    .replace("@END@", END)
)


def copy_pod(
    job: DistillationJob, directory: str, image: str, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pod that sends `directory` (a path under the storage's mount) off the job's claim (pure).

    `template`: a stage pod's spec of the job, whose placement (node selector, tolerations,
    pull secrets) the copy pod takes so it can land where the claim and the image can be had.
    """
    name = job.metadata.name or ""
    uid = (job.metadata.model_extra or {}).get("uid")
    if not uid:
        raise ClientError(
            f'distillationjob "{name}": metadata.uid is empty; read the job from the API server'
        )
    volume = storage_volume(job)
    volume["persistentVolumeClaim"]["readOnly"] = True
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "activeDeadlineSeconds": POD_DEADLINE_SECONDS,
        "securityContext": pod_security(),
        "containers": [
            {
                "name": COMPONENT,
                "image": image,
                "command": ["python", "-c", SCRIPT, directory],
                "volumeMounts": [
                    {"name": "storage", "mountPath": job.spec.storage.mount_path, "readOnly": True}
                ],
                # Limits too, so a namespace whose quota demands them admits it; tar streams, memory stays small.
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "256Mi"},
                },
                "securityContext": container_security(),
            }
        ],
        "volumes": [volume],
    }
    for key in ("nodeSelector", "tolerations", "imagePullSecrets", "runtimeClassName"):
        if (template or {}).get(key):
            spec[key] = template[key]  # type: ignore[index]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": fit_name(name, COMPONENT, 57) + "-",
            "namespace": job.metadata.namespace,
            "labels": {
                JOB_LABEL: label_value(name),
                "app.kubernetes.io/component": COMPONENT,
                MANAGED_BY: COPIER,
            },
            # Not the controller: the operator's children are its own; this one is only deleted with the job.
            "ownerReferences": [{"apiVersion": job.api_version, "kind": job.kind, "name": name, "uid": uid}],
        },
        "spec": spec,
    }


def decode(log: str) -> bytes | None:
    """The tar a copy pod's log carries; None while it is incomplete. Raises ClientError for a missing
    directory or a tar that does not match its trailer."""
    lines = log.splitlines()
    for line in lines:
        if line.startswith(MISSING):
            raise ClientError(f"{line[len(MISSING) :].strip()}: not on the job's storage (nothing to copy)")
    if BEGIN not in lines:
        return None
    body = lines[lines.index(BEGIN) + 1 :]
    trailer = next((i for i, line in enumerate(body) if line.startswith(END + " ")), None)
    if trailer is None:
        return None
    _, digest, size = body[trailer].split()
    data = base64.b64decode("".join(body[:trailer]))
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        raise ClientError(f"the copy pod's log was cut ({len(data)} of {size} bytes arrived)")
    return data


def unpack(data: bytes, target: Path) -> list[Path]:
    """Extract a tar into `target`, refusing members that would land outside it; the files written."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            destination = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not destination.is_relative_to(root):
                raise ClientError(f"refusing {member.name!r} from the copy: not a plain file under {target}")
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            destination.write_bytes(source.read())
            written.append(destination)
    return written


# ------------------------------------------------------------------ off the claim, through the API


def copy_off_claim(
    http: Transport,
    job: DistillationJob,
    template: dict[str, Any] | None,
    directory: str,
    target: Path,
    image: str,
    timeout: float,
) -> list[Path]:
    """Run the copy pod for `directory`, read its log, unpack it into `target`, delete the pod; the files."""
    namespace = job.metadata.namespace or ""
    created = http.json(
        "POST",
        path("", "v1", "pods", namespace),
        body=copy_pod(job, directory, image, template),
        what="the copy pod",
    )
    pod_name = created["metadata"]["name"]
    resource = path("", "v1", "pods", namespace, pod_name)
    try:
        deadline = time.monotonic() + timeout
        phase = _wait_pod(http, resource, pod_name, ("Running", "Succeeded", "Failed"), deadline)
        data = None
        if phase == "Running":  # read while it writes: a long log outlasts the kubelet's rotation
            with contextlib.suppress(NotFound):  # no log yet: read it once the pod has ended
                data = decode("\n".join(http.lines(resource + "/log", query={"follow": True})))
        if data is None:
            phase = _wait_pod(http, resource, pod_name, ("Succeeded", "Failed"), deadline)
            log = http.text(resource + "/log", what=f'copy pod "{pod_name}"')
            data = decode(log)
            if data is None:
                tail = log.strip().splitlines()[-1:] or ["(empty log)"]
                raise ClientError(f'copy pod "{pod_name}" ended {phase} without the copy: {tail[0][:300]}')
        return unpack(data, target)
    finally:
        with contextlib.suppress(NotFound):  # already gone
            http.json("DELETE", resource, query={"gracePeriodSeconds": 0}, what=f'copy pod "{pod_name}"')


def _wait_pod(http: Transport, resource: str, pod_name: str, phases: tuple[str, ...], deadline: float) -> str:
    while True:
        pod = http.json("GET", resource, what=f'copy pod "{pod_name}"')
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if phase in phases:
            return phase
        if time.monotonic() >= deadline:
            waiting = [
                (s.get("state") or {}).get("waiting", {}).get("reason")
                for s in (pod.get("status") or {}).get("containerStatuses") or []
            ]
            why = f" ({', '.join(w for w in waiting if w)})" if any(waiting) else ""
            raise WaitTimeout(f'copy pod "{pod_name}" is still {phase}{why}: it did not finish in time')
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


# ------------------------------------------------------------------ from spec.output


def exported_uri(job: DistillationJob) -> str | None:
    """Where the job's export is in an object store, once written (`status.artifacts.output`); None when
    there is none there (no `spec.output`, not written, or a path on the claim)."""
    written = job.status.artifacts.output if job.status and job.status.artifacts else None
    if job.spec.output is None or not written or not is_uri(job.spec.output.uri):
        return None
    return job.spec.output.uri


def copy_from_store(job: DistillationJob, uri: str, reports: Path, student: Path | None) -> None:
    """The export's `report/` into `reports` and the rest (the student and its model card) into `student`,
    with this machine's credentials (AWS_* variables or profile) and `storage.objectStore`'s endpoint."""
    try:
        from distillery.datasource import filesystem

        fs, base = filesystem(uri, job.spec.storage.object_store)
        base = base.rstrip("/")
        for remote in fs.find(base):
            relative = remote[len(base) :].lstrip("/")
            if relative.startswith("report/"):
                local = reports / relative.removeprefix("report/")
            elif student is not None:
                local = student / relative
            else:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
    except ModuleNotFoundError as error:
        raise ClientError(
            f"copying from {uri} needs the Python package {error.name!r}; "
            "install it with: pip install 'distillery-operator[worker]'"
        ) from None
    except Exception as error:
        raise ClientError(
            f"spec.output.uri ({uri}): cannot read the export: {type(error).__name__}: {error}"
        ) from None
