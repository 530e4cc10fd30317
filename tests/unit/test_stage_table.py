"""The stage table (contract/stages.py) is the one list of stages: every consumer's stages are the table's,
and a stage added to the table is picked up by observe, the phase walk, cost, metrics, progress, the CLI
and `distillery run` without touching them. Also the typed progress the phase walk carries to status."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from distillery import cli, fingerprints
from distillery.api import ConditionType, Phase, Progress
from distillery.contract import cost, stages
from distillery.contract.commands import STAGE_COMMANDS, CheckCommand
from distillery.contract.stages import Stage, StageFacts
from distillery.contract.summaries import SUMMARY_TYPES, TrainSummary
from distillery.controller import costs, metrics, progress
from distillery.controller.observe import JobState, Observed, from_children, settled
from distillery.controller.phases import decide
from distillery.controller.status import next_status
from distillery.controller.steps import WALK, Step, Walk, stop_everything, with_progress
from distillery.local import runner
from distillery.manifests import CHILDREN, JOB_BUILDERS
from distillery.manifests.common import STAGE_LABEL
from tests.support.phase_machine import NOW, job, spec, status

pytestmark = pytest.mark.unit

C = ConditionType


# ------------------------------------------------------------------ every consumer's stages are the table's


def test_the_table_lists_each_stage_once_in_run_order_with_its_own_types():
    assert stages.names() == tuple(Stage) == ("check", "generate", "train", "evaluate")
    for entry in stages.STAGES:
        assert entry.command.subcommand == entry.stage
        assert entry.summary.model_fields["stage"].default == entry.stage
        assert stages.facts(entry.stage.value) is entry
    assert len({e.condition for e in stages.STAGES}) == len({e.phase for e in stages.STAGES}) == len(Stage)


def test_every_consumers_stages_are_the_tables():
    table = set(Stage)
    assert set(STAGE_COMMANDS) == set(SUMMARY_TYPES) == table  # each command and summary defined has an entry
    assert set(JOB_BUILDERS) == set(WALK) == table
    assert {key for key, (_, kind, *_) in CHILDREN.items() if kind == "Job"} == table
    assert set(cli.subcommands()) >= table
    assert set(runner.STAGE_FUNCTIONS) == set(runner.CHANGED) == set(runner.local_stages())
    assert runner.local_stages() == tuple(e.stage for e in stages.STAGES if e.local)
    assert {e.stage for e in stages.STAGES if e.fingerprint} == {
        f.name for f in dataclasses.fields(fingerprints.Fingerprints)
    }
    for entry in stages.STAGES:
        assert importlib.util.find_spec(entry.cli) is not None, entry.cli
        assert set(entry.series) <= set(Progress.model_fields)
        assert set(entry.cost_counts) <= set(entry.summary.model_fields)


def test_the_teacher_is_held_by_generation_and_for_on_policy_by_training():
    def holding(**changes):
        return [e.stage for e in stages.STAGES if e.needs_teacher(spec(**changes))]

    assert holding() == [Stage.generate]
    assert holding(training={"method": "onPolicy"}) == [Stage.generate, Stage.train]


# ------------------------------------------------------------------ a stage added to the table


class Extra(str, enum.Enum):
    distil = "distil"

    def __str__(self) -> str:
        return self.value


DISTIL = StageFacts(
    Extra.distil,  # type: ignore[arg-type]
    CheckCommand,
    TrainSummary,
    C.student_trained,
    Phase.training,
    section="training",
    cost_counts={"tokens": "training_tokens"},
    series={"step": "distillery_distil_step"},
    cli="distillery.stages.check",
    help="a stage added in a test",
)


@pytest.fixture
def with_distil(monkeypatch):
    """The table with a `distil` stage between training and evaluation, and its walk function."""
    calls = []

    def walk_distil(walk: Walk) -> Step | None:
        calls.append(walk.observed.job(Extra.distil))
        if walk.observed.job(Extra.distil).complete:
            return None
        return walk.step(Phase.training, "distilling", summary="distil running", ensure=(Extra.distil,))

    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES[:3], DISTIL, stages.STAGES[3]))
    monkeypatch.setitem(WALK, Extra.distil, walk_distil)
    return calls


def test_an_added_stage_is_observed_walked_and_stopped(with_distil):
    body = {"metadata": {"labels": {STAGE_LABEL: "distil"}}, "status": {"active": 1}}
    observed = from_children({"Job": [body]})
    assert observed.job(Extra.distil).exists and observed.job(Extra.distil).active == 1
    assert Observed(distil=JobState(exists=True)).job(Extra.distil).exists  # by keyword, like the others
    assert stop_everything(observed) == (Extra.distil,)  # a job that ends stops its running Job

    done_before = status(Phase.training, C.inputs_ready, C.data_generated, C.student_trained)
    step = decide(spec(), [], done_before, observed, NOW, "j")
    assert (step.phase, step.message, step.ensure) == (Phase.training, "distilling", ("pvc", Extra.distil))
    assert with_distil == [observed.job(Extra.distil)]

    finished = Observed(distil=job(complete=True, succeeded=0))
    assert decide(spec(), [], done_before, finished, NOW, "j").phase is Phase.evaluating  # then evaluation


def test_an_added_stage_counts_in_cost_metrics_progress_the_cli_and_distillery_run(with_distil, monkeypatch):
    summary = TrainSummary(gpus=1, gpu_seconds=36.0, duration_seconds=36.0, tokens=5)
    observed = Observed(distil=job(summaries=(summary,), start_time="2026-11-28T11:59:00Z"))
    assert costs.stage_costs(status(), observed, NOW)["distil"].gpu_seconds == 36.0
    assert cost.counts({Extra.distil: [summary]})["training_tokens"] == 5
    on_h100 = spec(training={"nodeSelector": {cost.GPU_PRODUCT_LABEL: "H100"}})
    assert cost.gpu_type(on_h100, Extra.distil) == "H100"  # its section places it
    assert settled(Observed(distil=job(complete=True, succeeded=1)), NOW)[1] is None

    metrics.JOB_GPU_SECONDS.labels("table-ns", "table-job", "distil").set(1)
    metrics.forget_job("table-ns", "table-job")
    assert b'distillery_job="table-job"' not in generate_latest(
        metrics.REGISTRY
    )  # its series go with the job

    assert progress.live_progress(Extra.distil, [{"distillery_distil_step": 3.0}]) == {"step": 3}

    parsed = cli.build_parser().parse_args(["distil", "--job", "{}"])
    assert parsed.command == "distil" and parsed.func.__module__ == "distillery.stages.check"

    assert Extra.distil in runner.local_stages()
    monkeypatch.setattr(
        stages, "STAGES", tuple(dataclasses.replace(e, local=e.stage != "distil") for e in stages.STAGES)
    )
    assert Extra.distil not in runner.local_stages()


# ------------------------------------------------------------------ typed progress


def test_progress_is_typed_through_the_walk_and_merged_into_status():
    with pytest.raises(ValidationError):
        with_progress(Progress(), shard_done=3)  # misspelt: shards_done
    step = Step(
        Phase.generating, "generating", progress=with_progress(Progress(), shards_done=2, summary="gen")
    )
    old = status(Phase.generating, progress={"shardsTotal": 4, "shardsDone": 1, "records": 7})
    new = next_status(old, step, NOW, 1)
    assert new.progress == Progress(
        summary="gen", shards_total=4, shards_done=2, records=7
    )  # unset fields kept
    assert Progress.model_validate(new.model_dump(by_alias=True)["progress"]) == new.progress  # round trip
    assert next_status(old, Step(Phase.generating, "x"), NOW, 1).progress == old.progress  # set nothing
