"""The stages, in the order they run, and each one's facts: the one place "a stage" is defined.

    check -> generate -> train -> evaluate

The operator (observe, the phase walk, cost, metrics, progress), the manifests, `distillery run`
and the CLI iterate over `STAGES` rather than keep their own lists, so a new stage is one entry
here plus its library, its command and summary beside the others in `contract/`, its CLI in
`stages/`, its builder in `manifests/` and its function in `controller/phases.py` (and, to run
under `distillery run`, in `local/runner.py`). Consumers read `STAGES` when they run (not a copy
made at import), so a test can add an entry and see every consumer pick it up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from distillery.api import ConditionType, DistillationJobSpec, Phase, teacher_needed_for_training
from distillery.contract import series
from distillery.contract.commands import (
    CheckCommand,
    EvaluateCommand,
    GenerateCommand,
    StageCommand,
    TrainCommand,
)
from distillery.contract.summaries import (
    CheckSummary,
    EvaluateSummary,
    GenerateSummary,
    StageSummary,
    TrainSummary,
)


class Stage(str, enum.Enum):
    """A stage's name: its subcommand, its Job's stage label, its key in status.cost.stages."""

    check = "check"
    generate = "generate"
    train = "train"
    evaluate = "evaluate"

    def __str__(self) -> str:  # "check", not "Stage.check", in messages, labels and file names
        return self.value


def _never(spec: DistillationJobSpec) -> bool:
    return False


def _always(spec: DistillationJobSpec) -> bool:
    return True


@dataclass(frozen=True)
class StageFacts:
    stage: Stage
    command: type[StageCommand]  # its command line (contract.commands)
    summary: type[StageSummary]  # what it reports when it ends (contract.summaries)
    condition: ConditionType  # True once it is done
    phase: Phase  # the job's phase while it runs
    # The spec section whose runtime (nodeSelector, image) places its pods; the check runs on
    # generation's nodes, which are the ones that reach the data. Prices its GPUs (contract.cost).
    section: str
    # Whether a served teacher must be up while it runs (generation always; training for onPolicy).
    holds_teacher: Callable[[DistillationJobSpec], bool] = _never
    # Whether its Job is Indexed, one summary per shard (its counts are summed over them).
    sharded: bool = False
    # What its fingerprint covers (`distillery.fingerprints`); () for a stage without one.
    fingerprint: tuple[str, ...] = ()
    # Summary field -> status.cost field it counts into (contract.cost.job_cost).
    cost_counts: Mapping[str, str] = field(default_factory=dict)
    # Progress field -> the series its running pods serve on /metrics (controller.progress).
    series: Mapping[str, str] = field(default_factory=dict)
    # Whether `distillery run` runs it (as a subprocess, the pod's command line); the check runs
    # in-process there, before anything starts (`local.preflight.preflight`).
    local: bool = True
    cli: str = ""  # the module of `distillery <stage>`
    help: str = ""  # its one line in `distillery --help`

    def needs_teacher(self, spec: DistillationJobSpec) -> bool:
        return self.holds_teacher(spec)


STAGES: tuple[StageFacts, ...] = (
    StageFacts(
        Stage.check,
        CheckCommand,
        CheckSummary,
        ConditionType.inputs_ready,
        Phase.pending,
        section="generation",
        local=False,
        cli="distillery.stages.check",
        help="check that the inputs exist and are readable (before the teacher starts)",
    ),
    StageFacts(
        Stage.generate,
        GenerateCommand,
        GenerateSummary,
        ConditionType.data_generated,
        Phase.generating,
        section="generation",
        holds_teacher=_always,
        sharded=True,
        fingerprint=("teacher", "data", "generation", "inputs", "uid"),
        cost_counts={"prompt_tokens": "teacher_prompt_tokens", "output_tokens": "teacher_output_tokens"},
        series={  # summed over the running shards (a sharded stage's)
            "prompts_done": series.GENERATION_PROMPTS_DONE,
            "prompts_total": series.GENERATION_PROMPTS,
            "records": series.GENERATION_RECORDS_ACCEPTED,
            "tokens_per_second": series.GENERATION_OUTPUT_TOKENS_PER_SECOND,
        },
        cli="distillery.stages.generate",
        help="phase 1: one shard of teacher generation",
    ),
    StageFacts(
        Stage.train,
        TrainCommand,
        TrainSummary,
        ConditionType.student_trained,
        Phase.training,
        section="training",
        holds_teacher=teacher_needed_for_training,
        fingerprint=("student", "training", "generate"),
        cost_counts={"tokens": "training_tokens"},
        series={
            "step": series.TRAIN_STEP,
            "steps_total": series.TRAIN_STEPS,
            "tokens_per_second": series.TRAIN_TOKENS_PER_SECOND,
            "epoch": series.TRAIN_EPOCH,
            "train_loss": series.TRAIN_LOSS,
            "on_policy_loss": series.TRAIN_ON_POLICY_LOSS,  # kept for training.method onPolicy only
        },
        cli="distillery.stages.train",
        help="phase 2: fine-tune the student on the teacher's data",
    ),
    StageFacts(
        Stage.evaluate,
        EvaluateCommand,
        EvaluateSummary,
        ConditionType.evaluated,
        Phase.evaluating,
        section="evaluation",
        fingerprint=("evaluation", "data", "validation", "train"),
        cost_counts={"requests": "evaluation_requests"},
        series={
            "models_done": series.EVAL_MODELS_DONE,
            "models_total": series.EVAL_MODELS_COMPARED,
        },
        cli="distillery.stages.evaluate",
        help="score student vs baseline vs teacher; apply the gate",
    ),
)


def facts(stage: str) -> StageFacts:
    """The facts of a stage by its name (a `Stage` or its value); KeyError for one the table lacks."""
    for entry in STAGES:
        if entry.stage == stage:
            return entry
    raise KeyError(stage)


def names() -> tuple[Stage, ...]:
    """The stages in run order."""
    return tuple(entry.stage for entry in STAGES)
