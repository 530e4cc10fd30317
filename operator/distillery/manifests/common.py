"""What every child object shares: names, labels, owner references, pod security, resources.

Everything here is pure: a DistillationJob (validated) in, plain dicts out. No I/O,
no Kubernetes client, no torch or vLLM; the operator image has none of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from distillery import __version__
from distillery.api import (
    API_VERSION,
    KIND,
    DistillationJob,
    PodSettings,
    Resources,
    StageRuntime,
    TeacherSpec,
    Toleration,
)

# Label keys. `managed-by` + `job` + `stage` are what selectors and the NetworkPolicy use.
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "distillery-operator"
JOB_LABEL = "distillery.dev/job"
STAGE_LABEL = "distillery.dev/stage"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# A DNS-1123/1035 label (Service, Job, label values) is at most 63 characters. Job
# controllers add "-<index>" to Indexed pods' hostnames, so Job names keep room for it.
NAME_LIMIT = 63
JOB_NAME_LIMIT = 52
# A JobSet names each pod `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>-<5 random>` and refuses a JobSet
# whose longest pod name is not a DNS-1035 label (its webhook): room for "-node-0-63-abcde" (64 nodes).
JOBSET_NAME_LIMIT = NAME_LIMIT - len("-node-0-63-abcde")

# Non-root user for every pod: the uid the worker images run as (images/README.md); the
# upstream vLLM image runs fine as any uid once HOME and the caches point at writable places.
RUN_AS_USER = 65532

# Requests used when the spec gives none, so the scheduler can place pods sensibly.
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    "check": {"cpu": "100m", "memory": "512Mi"},
    "teacher": {"cpu": "2", "memory": "8Gi"},
    "generate": {"cpu": "500m", "memory": "1Gi"},
    "train": {"cpu": "2", "memory": "8Gi"},
    "evaluate": {"cpu": "2", "memory": "8Gi"},
}


RELEASE_REGISTRY = "ghcr.io/distillery-dev/distillery"


@dataclass(frozen=True)
class BuildConfig:
    """Operator-wide settings the builders need (from the operator's settings, controller/settings.py)."""

    # Where a release pushes the worker images (hack/release.sh; the chart's imageRegistry default).
    worker_image: str = f"{RELEASE_REGISTRY}/worker-cpu:{__version__}"
    worker_cuda_image: str = f"{RELEASE_REGISTRY}/worker-cuda:{__version__}"
    # Price per GPU-hour by GPU type (contract.cost.parse_prices), for status.cost and the report.
    gpu_hour_prices: str = ""
    currency: str = "USD"
    # What every pod gets unless its section says otherwise (the chart's podDefaults; merge_pod_settings).
    pod_defaults: PodSettings = field(default_factory=PodSettings)
    # The Prometheus that may scrape the teacher's vLLM /metrics through its NetworkPolicy: its
    # namespace ("" admits none) and its pods' labels (`key=value,...`; "" any pod there).
    scraper_namespace: str = ""
    scraper_pod_labels: str = ""
    # The JobSet CRD (jobset.x-k8s.io/v1alpha2) is served by the cluster: `training.launcher: auto`
    # then runs training as a JobSet (the operator looks it up by API discovery at start).
    jobset_installed: bool = False

    def scraper_selector(self) -> dict[str, Any] | None:
        """The NetworkPolicy peer of that Prometheus, or None when none is named."""
        if not self.scraper_namespace:
            return None
        labels = dict(item.split("=", 1) for item in self.scraper_pod_labels.split(",") if item.strip())
        return {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.scraper_namespace}},
            "podSelector": {"matchLabels": {k.strip(): v.strip() for k, v in labels.items()}},
        }

    def worker_image_for(self, runtime: StageRuntime, gpus: int) -> str:
        if runtime.image:
            return runtime.image
        return self.worker_cuda_image if gpus > 0 else self.worker_image


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def fit_name(base: str, suffix: str = "", limit: int = NAME_LIMIT) -> str:
    """A DNS-1035 label `<base>-<suffix>` of at most `limit` characters, the same for the same input.

    Job names may be 253 characters with dots; children need short labels. When the
    base has to be changed (cut, dots replaced, digit first), a hash of the original
    keeps two different jobs from getting the same child names.
    """
    tail = f"-{suffix}" if suffix else ""
    clean = re.sub(r"[^a-z0-9-]", "-", base.lower())
    if not clean[:1].isalpha():
        clean = "dj-" + clean
    if clean == base and len(clean) + len(tail) <= limit:
        return clean + tail
    keep = limit - len(tail) - 7
    return f"{clean[:keep].rstrip('-')}-{_short_hash(base)}{tail}"


def label_value(name: str) -> str:
    """A label value (at most 63 characters) standing for the job name."""
    if len(name) <= NAME_LIMIT:
        return name
    return f"{name[: NAME_LIMIT - 7].rstrip('-.')}-{_short_hash(name)}"


@dataclass(frozen=True)
class Names:
    """Every child's name, derived from the job's name only (so an operator restart finds them)."""

    job: str

    @property
    def pvc(self) -> str:
        return fit_name(self.job, "data")

    @property
    def teacher(self) -> str:  # Deployment and Service
        return fit_name(self.job, "teacher")

    @property
    def teacher_policy(self) -> str:
        return fit_name(self.job, "teacher-ingress")

    @property
    def check(self) -> str:
        return fit_name(self.job, "check", JOB_NAME_LIMIT)

    @property
    def generate(self) -> str:
        return fit_name(self.job, "generate", JOB_NAME_LIMIT)

    @property
    def train(self) -> str:
        return fit_name(self.job, "train", JOB_NAME_LIMIT)

    @property
    def train_set(self) -> str:  # the training JobSet: its longest pod name must be a DNS label
        return fit_name(self.job, "train", JOBSET_NAME_LIMIT)

    @property
    def evaluate(self) -> str:
        return fit_name(self.job, "evaluate", JOB_NAME_LIMIT)


def names(job: DistillationJob) -> Names:
    return Names(_require(job.metadata.name, "metadata.name"))


def _require(value: str | None, field: str) -> str:
    if not value:
        raise ValueError(f"{field}: is required to build child objects")
    return value


def selector_labels(job: DistillationJob, stage: str) -> dict[str, str]:
    return {JOB_LABEL: label_value(names(job).job), STAGE_LABEL: stage}


def labels(job: DistillationJob, stage: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "distillery",
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/part-of": "distillery",
        MANAGED_BY: MANAGER,
        **selector_labels(job, stage),
    }


def owner_reference(job: DistillationJob) -> dict[str, Any]:
    """Makes the job the controller of the child: deleting the job deletes the child (garbage collector)."""
    extra = job.metadata.model_extra or {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": names(job).job,
        "uid": _require(extra.get("uid"), "metadata.uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(job: DistillationJob, name: str, stage: str, extra_labels: dict[str, str] | None = None) -> dict:
    return {
        "name": name,
        "namespace": _require(job.metadata.namespace, "metadata.namespace"),
        "labels": {**labels(job, stage), **(extra_labels or {})},
        "ownerReferences": [owner_reference(job)],
    }


def _quantity(value: str | int) -> str:
    return str(value)


def resources(spec: Resources, stage: str, gpus: int) -> dict[str, Any]:
    """Requests and limits: the spec's, default requests where it has none, and GPUs as a limit."""
    # A default request is left out where the spec sets a limit: the API server then takes the
    # limit as the request, where a default above the limit would be refused.
    defaults = {k: v for k, v in DEFAULT_REQUESTS[stage].items() if k not in spec.limits}
    requests = {**defaults, **{k: _quantity(v) for k, v in spec.requests.items()}}
    limits = {k: _quantity(v) for k, v in spec.limits.items()}
    if gpus > 0:
        # Extended resources are requested through limits (requests default to them).
        limits.setdefault("nvidia.com/gpu", str(gpus))
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def tolerations(items: list[Toleration]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in items]


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,  # the storage volume becomes writable by that group
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    # A read-only root: what a stage writes goes to the job's storage, /tmp or /dev/shm (volumes).
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def storage_volume(job: DistillationJob) -> dict[str, Any]:
    pvc = job.spec.storage.pvc
    if pvc is None:
        raise ValueError(
            "spec.storage.pvc: is required in a cluster (storage.path is only for `distillery run`)"
        )
    claim = pvc.claim_name or names(job).pvc
    return {"name": "storage", "persistentVolumeClaim": {"claimName": claim}}


def shm_volume() -> dict[str, Any]:
    # PyTorch/NCCL and vLLM's tensor parallelism share tensors through /dev/shm; the
    # container runtime's default 64 MiB is far too small.
    return {"name": "shm", "emptyDir": {"medium": "Memory"}}


def tmp_volume() -> dict[str, Any]:
    # The root filesystem is read-only; Python's temp files, vLLM's sockets and caches ($HOME is
    # /tmp), torch inductor's compiled kernels and matplotlib's config go here (images/README.md).
    return {"name": "tmp", "emptyDir": {}}


def volume_mounts(job: DistillationJob) -> list[dict[str, Any]]:
    return [
        {"name": "storage", "mountPath": job.spec.storage.mount_path},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def common_env(job: DistillationJob) -> list[dict[str, Any]]:
    mount = job.spec.storage.mount_path
    return [
        # A non-root uid may have no home directory; caches go where they survive restarts.
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{mount}/.cache/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def object_store_env(job: DistillationJob) -> list[dict[str, Any]]:
    """The object store's access keys from `storage.objectStore.credentialsSecret`, by reference: the pod
    reads the Secret, the job and its children never hold the keys."""
    from distillery.contract.commands import ACCESS_KEY_ID_ENV, SECRET_ACCESS_KEY_ENV

    store = job.spec.storage.object_store
    secret = store.credentials_secret if store is not None else None
    if secret is None:
        return []
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
        for env, key in (
            (ACCESS_KEY_ID_ENV, secret.access_key_id_key),
            (SECRET_ACCESS_KEY_ENV, secret.secret_access_key_key),
        )
    ]


def merge_pod_settings(defaults: PodSettings, own: StageRuntime | TeacherSpec) -> PodSettings:
    """A section's pod settings over the operator's defaults: the section's values win.

    labels, annotations, nodeSelector: merged key by key, the section's value winning for a key;
    imagePullSecrets, tolerations: the section's list replaces the default one when not empty;
    affinity: the section's replaces the default whole when set;
    serviceAccountName, priorityClassName, runtimeClassName: the section's when set.
    """
    return PodSettings.model_construct(
        image_pull_secrets=own.image_pull_secrets or defaults.image_pull_secrets,
        service_account_name=own.service_account_name or defaults.service_account_name,
        priority_class_name=own.priority_class_name or defaults.priority_class_name,
        runtime_class_name=own.runtime_class_name or defaults.runtime_class_name,
        affinity=own.affinity or defaults.affinity,
        node_selector={**defaults.node_selector, **own.node_selector},
        tolerations=own.tolerations or defaults.tolerations,
        labels={**defaults.labels, **own.labels},
        annotations={**defaults.annotations, **own.annotations},
    )


def pod_template(
    job: DistillationJob,
    stage: str,
    container: dict[str, Any],
    *,
    settings: PodSettings,
    restart_policy: str,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod template: the operator's labels (and `extra_labels` of its own, e.g. Kueue's queue) over the
    extra ones the settings give (which may not name them), and the spec."""
    meta: dict[str, Any] = {"labels": {**settings.labels, **labels(job, stage), **(extra_labels or {})}}
    if settings.annotations:
        meta["annotations"] = dict(settings.annotations)
    return {
        "metadata": meta,
        "spec": pod_spec(job, container, settings=settings, restart_policy=restart_policy),
    }


def pod_spec(
    job: DistillationJob,
    container: dict[str, Any],
    *,
    settings: PodSettings,
    restart_policy: str,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Stage pods never talk to the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "restartPolicy": restart_policy,
        "containers": [container],
        "volumes": [storage_volume(job), shm_volume(), tmp_volume()],
    }
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = tolerations(settings.tolerations)
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": ref.name} for ref in settings.image_pull_secrets]
    for key, value in (
        ("serviceAccountName", settings.service_account_name),
        ("priorityClassName", settings.priority_class_name),
        ("runtimeClassName", settings.runtime_class_name),
    ):
        if value:
            spec[key] = value
    if settings.affinity is not None:
        spec["affinity"] = settings.affinity.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return spec


def container(
    job: DistillationJob,
    *,
    name: str,
    image: str,
    command: list[str],
    args: list[str] | None = None,
    env: list[dict[str, Any]] | None = None,
    resource_spec: dict[str, Any],
    ports: list[dict[str, Any]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "workingDir": job.spec.storage.mount_path,
        "env": common_env(job) + (env or []),
        "ports": ports,
        "resources": resource_spec,
        "volumeMounts": volume_mounts(job),
        "securityContext": container_security(),
        # Stages write a JSON summary to /dev/termination-log; a crash leaves the log tail instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if args is not None:
        out["args"] = args
    return out
