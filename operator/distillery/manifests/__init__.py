"""Pure builders of every child object of a DistillationJob: spec in, manifest dicts out.

`build(child, job, config)` is the one entry point the controller uses; each child
has a fixed key, a deterministic name (`names(job)`) and the job as its owner. A stage's
Job is keyed by its `Stage` (contract.stages), one per entry of the stage table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distillery.api import DistillationJob
from distillery.contract import stages
from distillery.contract.stages import Stage
from distillery.manifests.common import BuildConfig, Names, fit_name, label_value, names
from distillery.manifests.jobs import (
    build_check_job,
    build_evaluation_job,
    build_generation_job,
    build_pvc,
    build_training_job,
    build_training_service,
    rendezvous_endpoint,
)
from distillery.manifests.teacher import (
    build_teacher_deployment,
    build_teacher_network_policy,
    build_teacher_service,
    teacher_model,
    teacher_url,
)

# Child key -> (apiVersion, kind, plural, name of it in `Names`, builder).
Builder = Callable[[DistillationJob, BuildConfig], "dict[str, Any] | None"]
# Each stage's Job builder; its name in `Names` is the stage's.
JOB_BUILDERS: dict[Stage, Builder] = {
    Stage.check: build_check_job,
    Stage.generate: build_generation_job,
    Stage.train: build_training_job,
    Stage.evaluate: build_evaluation_job,
}
CHILDREN: dict[str, tuple[str, str, str, str, Builder]] = {
    "pvc": ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", "pvc", lambda j, c: build_pvc(j)),
    "teacher": ("apps/v1", "Deployment", "deployments", "teacher", build_teacher_deployment),
    "teacher-service": ("v1", "Service", "services", "teacher", lambda j, c: build_teacher_service(j)),
    "teacher-policy": (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        "teacher_policy",
        build_teacher_network_policy,
    ),
    # Only with training.nodes > 1 (None otherwise): the training pods' names in DNS.
    "train-service": ("v1", "Service", "services", "train", lambda j, c: build_training_service(j)),
    **{
        entry.stage: ("batch/v1", "Job", "jobs", entry.stage.value, JOB_BUILDERS[entry.stage])
        for entry in stages.STAGES
    },
}


def build(child: str, job: DistillationJob, config: BuildConfig) -> dict[str, Any] | None:
    return CHILDREN[child][4](job, config)


def child_name(child: str, job: DistillationJob | str) -> str:
    """A child's name, from the job or just its name (all a child's name depends on)."""
    return getattr(Names(job) if isinstance(job, str) else names(job), CHILDREN[child][3])


__all__ = [
    "CHILDREN",
    "JOB_BUILDERS",
    "BuildConfig",
    "Names",
    "build",
    "build_check_job",
    "build_evaluation_job",
    "build_generation_job",
    "build_pvc",
    "build_teacher_deployment",
    "build_teacher_network_policy",
    "build_teacher_service",
    "build_training_job",
    "build_training_service",
    "child_name",
    "fit_name",
    "label_value",
    "names",
    "rendezvous_endpoint",
    "teacher_model",
    "teacher_url",
]
