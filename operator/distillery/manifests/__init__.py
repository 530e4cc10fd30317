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
    training_launcher,
)
from distillery.manifests.jobset import build_training_jobset, jobset_rendezvous_endpoint
from distillery.manifests.teacher import (
    build_teacher_deployment,
    build_teacher_network_policy,
    build_teacher_service,
    build_teacher_statefulset,
    teacher_is_gang,
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
    "train-service": ("v1", "Service", "services", "train", build_training_service),
    # The alternates (ALTERNATES): what "teacher" and the training stage become in some specs.
    "teacher-gang": ("apps/v1", "StatefulSet", "statefulsets", "teacher", build_teacher_statefulset),
    "train-set": ("jobset.x-k8s.io/v1alpha2", "JobSet", "jobsets", "train_set", build_training_jobset),
    **{
        entry.stage: ("batch/v1", "Job", "jobs", entry.stage.value, JOB_BUILDERS[entry.stage])
        for entry in stages.STAGES
    },
}


# A child the phase machine names -> (the child built instead, when it is chosen for this job). The phase
# machine speaks of "teacher" and the train stage only; which kind serves them is the builders' choice.
ALTERNATES: dict[str, tuple[str, Callable[[DistillationJob, BuildConfig], bool]]] = {
    "teacher": ("teacher-gang", lambda j, c: teacher_is_gang(j)),
    Stage.train: ("train-set", lambda j, c: training_launcher(j, c) == "jobset"),
}


def resolve(child: str, job: DistillationJob, config: BuildConfig) -> str:
    """The child that stands for `child` in this job: itself, or its alternate when that is chosen."""
    alternate = ALTERNATES.get(child)
    return alternate[0] if alternate is not None and alternate[1](job, config) else child


def forms(child: str) -> tuple[str, ...]:
    """Every child that may stand for `child` (itself and its alternate): what to look for or delete."""
    alternate = ALTERNATES.get(child)
    return (child, alternate[0]) if alternate is not None else (child,)


def build(child: str, job: DistillationJob, config: BuildConfig) -> dict[str, Any] | None:
    """The manifest of `child` as the operator creates it for this job (its alternate where chosen)."""
    return CHILDREN[resolve(child, job, config)][4](job, config)


def child_name(child: str, job: DistillationJob | str) -> str:
    """A child's name, from the job or just its name (all a child's name depends on)."""
    return getattr(Names(job) if isinstance(job, str) else names(job), CHILDREN[child][3])


__all__ = [
    "ALTERNATES",
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
    "build_teacher_statefulset",
    "build_training_job",
    "build_training_jobset",
    "build_training_service",
    "child_name",
    "fit_name",
    "forms",
    "jobset_rendezvous_endpoint",
    "label_value",
    "names",
    "rendezvous_endpoint",
    "resolve",
    "teacher_is_gang",
    "teacher_model",
    "teacher_url",
    "training_launcher",
]
