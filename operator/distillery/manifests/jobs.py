"""The stage Jobs (generation, training, evaluation) and the storage claim."""

from __future__ import annotations

from typing import Any

from distillery.api import DistillationJob, StageRuntime
from distillery.contract import stages
from distillery.contract.commands import (
    API_KEY_ENV,
    METRICS_PORT,
    RENDEZVOUS_ENDPOINT_ENV,
    RENDEZVOUS_PORT,
    CheckCommand,
    EvaluateCommand,
    GenerateCommand,
    StageCommand,
    TrainCommand,
)
from distillery.contract.exit_codes import ExitCode
from distillery.contract.stages import Stage
from distillery.manifests import common
from distillery.manifests.teacher import teacher_model, teacher_url

# Opening a few objects takes seconds; a store that hangs must not hold the job for long.
CHECK_DEADLINE_SECONDS = 600
# The check's verdicts: inputs missing or unreadable, the storage refused, a package missing. A retry
# would only repeat them, so they fail the Job at once; any other end (a crash, an OOM kill, a node's
# SIGKILL) is retried within generation.backoffLimit, as a stage's crash is.
CHECK_VERDICTS = sorted(
    int(code) for code in (ExitCode.INVALID_SPEC, ExitCode.MISSING_DEPENDENCY, ExitCode.STORAGE_UNWRITABLE)
)


def _metrics_port() -> list[dict[str, Any]]:
    return [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]


def _command_line(command: StageCommand) -> dict[str, list[str]]:
    """The stage's argv as a container's command (the executable) and args (the rest)."""
    argv = command.argv()
    return {"command": argv[:1], "args": argv[1:]}


def _job(
    job: DistillationJob,
    *,
    name: str,
    stage: str,
    runtime: StageRuntime,
    container: dict[str, Any],
    job_spec: dict[str, Any],
    config: common.BuildConfig,
    extra_rules: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    queue = job.spec.queue_name
    extra = {common.KUEUE_QUEUE_LABEL: queue} if queue else {}
    spec: dict[str, Any] = {
        **job_spec,
        # With a Kueue queue the Job starts suspended and Kueue admits it (unsuspends) when
        # quota allows, as Kueue documents for batch/v1 Jobs.
        "suspend": bool(queue),
        # A replacement only once the old pod has ended: never two pods writing one shard or one
        # checkpoint while an evicted or preempted pod is still terminating.
        "podReplacementPolicy": "Failed",
        # Evictions, preemption and node drains are not the stage's fault: they do not use up
        # backoffLimit (the replacement resumes from the storage).
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                *extra_rules,
            ]
        },
        "template": common.pod_template(
            job,
            stage,
            container,
            settings=common.merge_pod_settings(config.pod_defaults, runtime),
            restart_policy="Never",
        ),
    }
    if runtime.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = runtime.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": common.metadata(job, name, stage, extra),
        "spec": spec,
    }


def build_check_job(job: DistillationJob, config: common.BuildConfig) -> dict[str, Any]:
    """A small Job before the teacher: the inputs exist and are readable (`distillery check`).

    It runs with the generation stage's image and placement (the nodes that can reach the data)
    and small requests; a verdict about the inputs (CHECK_VERDICTS) fails the Job at once, while a
    crashed or killed check pod is retried like any stage's (a kill must not fail a whole job).
    """
    gen = job.spec.generation
    command = CheckCommand(job=job, storage=job.spec.storage.mount_path)
    container = common.container(
        job,
        name=Stage.check,
        image=config.worker_image_for(gen, 0),
        **_command_line(command),
        env=common.object_store_env(job),
        resource_spec={"requests": dict(common.DEFAULT_REQUESTS[Stage.check])},
        ports=[],
    )
    runtime = gen.model_copy(update={"active_deadline_seconds": CHECK_DEADLINE_SECONDS})
    return _job(
        job,
        name=common.names(job).check,
        stage=Stage.check,
        runtime=runtime,
        container=container,
        config=config,
        job_spec={"completions": 1, "parallelism": 1, "backoffLimit": gen.backoff_limit},
        extra_rules=(
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": Stage.check.value,
                    "operator": "In",
                    "values": CHECK_VERDICTS,
                },
            },
        ),
    )


def _teacher_key_env(job: DistillationJob) -> list[dict[str, Any]]:
    """The endpoint teacher's API key, by reference to its Secret, for the pods that ask the teacher."""
    endpoint = job.spec.teacher.endpoint
    if endpoint is None or endpoint.api_key_secret is None:
        return []
    ref = endpoint.api_key_secret
    return [{"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def build_generation_job(job: DistillationJob, config: common.BuildConfig) -> dict[str, Any]:
    """An Indexed Job: one pod per shard, each retried on its own (a failed shard fails the stage)."""
    gen = job.spec.generation
    mount = job.spec.storage.mount_path
    env = _teacher_key_env(job) + common.object_store_env(job)  # the inputs may be s3:// URIs
    # The shard index comes from JOB_COMPLETION_INDEX, which the Job controller sets.
    command = GenerateCommand(
        job=job,
        storage=mount,
        teacher_url=teacher_url(job),
        teacher_model=teacher_model(job),
        metrics_port=METRICS_PORT,
    )
    container = common.container(
        job,
        name=Stage.generate,
        image=config.worker_image_for(gen, 0),
        **_command_line(command),
        env=env,
        resource_spec=common.resources(gen.resources, Stage.generate, 0),
        ports=_metrics_port(),
    )
    return _job(
        job,
        name=common.names(job).generate,
        stage=Stage.generate,
        runtime=gen,
        container=container,
        config=config,
        job_spec={
            "completionMode": "Indexed",
            "completions": gen.shards,
            "parallelism": gen.parallelism or gen.shards,
            "backoffLimitPerIndex": gen.backoff_limit,
            # One shard that keeps failing fails the stage at once instead of burning GPU hours.
            "maxFailedIndexes": 0,
        },
    )


def training_launcher(job: DistillationJob, config: common.BuildConfig) -> str:
    """`job` or `jobset`: what runs the training pods (`training.launcher`; `auto` follows whether the
    operator found the JobSet CRD on the cluster, `config.jobset_installed`)."""
    chosen = job.spec.training.launcher
    if chosen == "auto":
        return "jobset" if config.jobset_installed else "job"
    return chosen


def rendezvous_endpoint(job: DistillationJob) -> str:
    """Pod 0's name in DNS and the rendezvous port: an Indexed Job names each pod's host `<job>-<index>`,
    and the headless Service that is the pods' subdomain gives it a record (Kubernetes' "Indexed Job with
    pod-to-pod communication")."""
    name = common.names(job).train
    return f"{name}-0.{name}:{RENDEZVOUS_PORT}"


def _training_job_spec(job: DistillationJob) -> dict[str, Any]:
    training = job.spec.training
    if training.nodes == 1:
        # A retried pod resumes from the latest checkpoint on the storage.
        return {"completions": 1, "parallelism": 1, "backoffLimit": training.backoff_limit}
    return {
        # Every pod at once (Kueue admits the Job's pods as one workload: the whole gang or none).
        "completionMode": "Indexed",
        "completions": training.nodes,
        "parallelism": training.nodes,
        # One lost pod fails its peers' collectives too, and each failed pod counts: backoffLimit
        # restarts of the whole group, each resuming on every pod from the last checkpoint.
        "backoffLimit": training.backoff_limit * training.nodes,
    }


def training_job(
    job: DistillationJob, config: common.BuildConfig, *, name: str, endpoint: str | None
) -> dict[str, Any]:
    """The training pods as a Job named `name` whose torchrun meet at `endpoint` (None on one node): the
    Job itself (`build_training_job`) or a JobSet's Job template (`manifests.jobset`)."""
    training = job.spec.training
    asks_teacher = stages.facts(Stage.train).needs_teacher(
        job.spec
    )  # onPolicy: the teacher grades the student's samples
    command = TrainCommand(
        job=job,
        storage=job.spec.storage.mount_path,
        teacher_url=teacher_url(job) if asks_teacher else None,
        teacher_model=teacher_model(job) if asks_teacher else None,
        metrics_port=METRICS_PORT,
    )
    env = _teacher_key_env(job) if asks_teacher else []
    ports = _metrics_port()
    if endpoint is not None:
        env = [*env, {"name": RENDEZVOUS_ENDPOINT_ENV, "value": endpoint}]
        ports = [*ports, {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    container = common.container(
        job,
        name=Stage.train,
        image=config.worker_image_for(training, training.gpus),
        **_command_line(command),
        env=env,
        resource_spec=common.resources(training.resources, Stage.train, training.gpus),
        ports=ports,
    )
    return _job(
        job,
        name=name,
        stage=Stage.train,
        runtime=training,
        container=container,
        config=config,
        job_spec=_training_job_spec(job),
    )


def build_training_job(job: DistillationJob, config: common.BuildConfig) -> dict[str, Any]:
    """The training Job: one pod, or with `training.nodes` > 1 an Indexed Job of that many pods whose
    torchrun meet at pod 0 through the headless Service `build_training_service`."""
    several = job.spec.training.nodes > 1
    name = common.names(job).train
    manifest = training_job(job, config, name=name, endpoint=rendezvous_endpoint(job) if several else None)
    if several:
        manifest["spec"]["template"]["spec"]["subdomain"] = name
    return manifest


def build_training_service(
    job: DistillationJob, config: common.BuildConfig | None = None
) -> dict[str, Any] | None:
    """The headless Service that gives each training pod a DNS name (pod 0's is the rendezvous); None
    for training on one node, which needs no name, and for a JobSet, which makes its own."""
    if job.spec.training.nodes == 1 or training_launcher(job, config or common.BuildConfig()) == "jobset":
        return None
    name = common.names(job).train
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(job, name, Stage.train),
        "spec": {
            "clusterIP": "None",
            # The pods find each other before any is ready (training pods have no readiness probe).
            "publishNotReadyAddresses": True,
            "selector": common.selector_labels(job, Stage.train),
            "ports": [
                {
                    "name": "rendezvous",
                    "port": RENDEZVOUS_PORT,
                    "targetPort": RENDEZVOUS_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_evaluation_job(job: DistillationJob, config: common.BuildConfig) -> dict[str, Any]:
    evaluation = job.spec.evaluation
    # A failed gate is a verdict the operator reads from the summary; exiting non-zero would
    # make the Job retry an evaluation whose answer cannot change.
    # What the job cost before evaluation (status.cost when the Job is made), for the report.
    spent = job.status.cost if job.status is not None else None
    command = EvaluateCommand(
        job=job,
        storage=job.spec.storage.mount_path,
        gate_exit_code=0,
        metrics_port=METRICS_PORT,
        spent=spent,
        gpu_hour_prices=config.gpu_hour_prices or None,
        currency=config.currency if config.gpu_hour_prices else None,
    )
    container = common.container(
        job,
        name=Stage.evaluate,
        image=config.worker_image_for(evaluation, evaluation.gpus),
        **_command_line(command),
        env=common.object_store_env(job),  # validation by URI, and the export to spec.output
        resource_spec=common.resources(evaluation.resources, Stage.evaluate, evaluation.gpus),
        ports=_metrics_port(),
    )
    return _job(
        job,
        name=common.names(job).evaluate,
        stage=Stage.evaluate,
        runtime=evaluation,
        container=container,
        config=config,
        job_spec={"completions": 1, "parallelism": 1, "backoffLimit": evaluation.backoff_limit},
    )


def build_pvc(job: DistillationJob) -> dict[str, Any] | None:
    """The claim the operator creates when the spec gives a size; None when it names an existing one.

    Owned by the job (and deleted with it) only with `reclaimPolicy: Delete`.
    """
    pvc = job.spec.storage.pvc
    if pvc is None or pvc.size is None:
        return None
    spec: dict[str, Any] = {
        "accessModes": list(pvc.access_modes),
        "resources": {"requests": {"storage": str(pvc.size)}},
    }
    if pvc.storage_class_name:
        spec["storageClassName"] = pvc.storage_class_name
    meta = common.metadata(job, common.names(job).pvc, "storage")
    if pvc.reclaim_policy == "Retain":
        # Not owned by the job: deleting the job (or its TTL) keeps the data, the student and the report.
        del meta["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}
