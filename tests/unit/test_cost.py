"""Cost accounting: what the stages report, what the operator adds up, what a price table turns into money."""

from __future__ import annotations

from datetime import timedelta

import pytest

from distillery.api import ConditionType, CostStatus, DistillationJobSpec, Phase, StageCost
from distillery.contract.cost import (
    cost_lines,
    cost_markdown,
    evaluation_cost,
    job_cost,
    parse_prices,
    priced,
    process_cpu_seconds,
    stage_cost,
    with_usage,
)
from distillery.contract.summaries import (
    EvaluateSummary,
    Failure,
    FailureReason,
    GenerateSummary,
    TrainSummary,
    parse_summary,
    termination_message,
)
from distillery.controller.costs import observed_cost, teacher_cost
from distillery.controller.observe import Observed
from distillery.controller.phases import decide
from distillery.controller.status import next_status
from tests.support.phase_machine import BASE, NOW, TEACHER_UP, job, spec, status

pytestmark = pytest.mark.unit
C = ConditionType


def test_a_stage_reports_gpus_times_its_seconds_and_its_cpu_through_the_termination_message():
    summary = with_usage(TrainSummary(train_loss=1.0), seconds=100.0, gpus=4, cpu_seconds=12.5)
    back = parse_summary(termination_message(summary))
    assert (back.gpus, back.gpu_seconds, back.cpu_seconds, back.duration_seconds) == (4, 400.0, 12.5, 100.0)
    assert process_cpu_seconds() > 0


def test_stage_cost_sums_every_pod_failed_attempts_included():
    shards = [with_usage(GenerateSummary(shard=k), 60.0, 0, 5.0) for k in range(3)]
    failed = with_usage(TrainSummary(failure=Failure.of(FailureReason.crashed, "oom")), 30.0, 2, 1.0)
    won = with_usage(TrainSummary(), 90.0, 2, 3.0)
    assert stage_cost(shards, wall_seconds=61) == StageCost(
        gpus=0, wall_seconds=61, pod_seconds=180, gpu_seconds=0, cpu_seconds=15
    )
    assert stage_cost([won, failed]).gpu_seconds == 240.0
    assert stage_cost([TrainSummary()]).cpu_seconds is None  # an older stage that reports no CPU


def test_job_totals_tokens_requests_and_retention_per_gpu_hour():
    stages = {
        "teacher": StageCost(gpus=8, gpu_seconds=8 * 1800),
        "train": StageCost(gpus=1, gpu_seconds=3600, cpu_seconds=7200),
    }
    generated = [
        GenerateSummary(prompt_tokens=100, output_tokens=400),
        GenerateSummary(prompt_tokens=50, output_tokens=5),
    ]
    cost = job_cost(stages, generated, TrainSummary(tokens=1234), EvaluateSummary(requests=64), retention=0.9)
    assert cost.gpu_hours == 5.0 and cost.cpu_hours == 2.0
    assert (cost.teacher_prompt_tokens, cost.teacher_output_tokens) == (150, 405)
    assert (cost.training_tokens, cost.evaluation_requests) == (1234, 64)
    assert cost.retention_per_gpu_hour == 0.18
    assert job_cost({"generate": StageCost()}, retention=0.9).retention_per_gpu_hour is None  # no GPU used


def test_prices_by_gpu_type_from_the_node_selector_or_the_default():
    gpu_spec = DistillationJobSpec.model_validate(
        {
            **BASE,
            "teacher": {
                **BASE["teacher"],
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            },
        }
    )
    cost = job_cost(
        {"teacher": StageCost(gpus=1, gpu_seconds=7200), "train": StageCost(gpus=1, gpu_seconds=3600)}
    )
    table = parse_prices("default=1.5, NVIDIA-H100-80GB-HBM3=4")
    assert priced(cost, gpu_spec, table, "EUR").price == 2 * 4 + 1 * 1.5
    assert priced(cost, gpu_spec, table, "EUR").currency == "EUR"
    # A GPU type the table does not price: resources only, never a partial sum.
    assert priced(cost, gpu_spec, {"default": 1.5}, "EUR").price == 2 * 1.5 + 1.5
    assert priced(cost, gpu_spec, {"NVIDIA-A100": 2.0}, "EUR").price is None
    assert priced(cost, gpu_spec, {}, "EUR").price is None


@pytest.mark.parametrize("bad", ["2.5", "default=", "default=-1", "=3", "default=cheap"])
def test_a_price_table_that_cannot_be_read_is_refused_naming_the_item(bad):
    with pytest.raises(ValueError, match="expected TYPE=PRICE"):
        parse_prices(bad)


def test_the_teacher_holds_its_gpus_from_ready_until_now_or_until_the_job_ended():
    ready = status(Phase.generating, C.teacher_ready)  # TeacherReady True since 11:00 (test_phases.status)
    ready.conditions[0].reason = "Ready"
    cost = teacher_cost(spec(), ready, NOW)
    assert cost.gpu_seconds == 3600 and cost.gpus == 1
    ended = ready.model_copy(update={"phase": Phase.failed, "completion_time": "2026-11-28T11:30:00Z"})
    assert teacher_cost(spec(), ended, NOW + timedelta(hours=5)).gpu_seconds == 1800
    endpoint = spec(teacher={"endpoint": {"url": "https://llm.example.com/v1", "model": "big"}})
    assert teacher_cost(endpoint, ready, NOW) is None  # someone else's GPUs


def test_the_operator_keeps_what_gone_pods_reported_and_adds_the_teacher_when_it_scales_down():
    shards = tuple(
        with_usage(GenerateSummary(shard=k, prompt_tokens=10, output_tokens=20), 60, 0, 2) for k in range(4)
    )
    generating = status(Phase.generating, C.teacher_ready)
    generating.conditions[0].reason = "Ready"
    done = Observed(
        teacher=TEACHER_UP,
        generate=job(
            complete=True,
            succeeded=4,
            summaries=shards,
            start_time="2026-11-28T11:10:00Z",
            completion_time="2026-11-28T11:50:00Z",
        ),
    )
    step = decide(spec(), [], generating, done, NOW, "j")
    assert "teacher" in step.delete
    assert step.cost.stages["teacher"].gpu_seconds == 3600  # ready at 11:00, removed now (12:00)
    assert step.cost.stages["generate"] == StageCost(
        gpus=0, wall_seconds=2400, pod_seconds=240, gpu_seconds=0, cpu_seconds=8
    )
    assert step.cost.teacher_output_tokens == 80 and step.cost.gpu_hours == 1.0
    after = next_status(generating, step, NOW, 1)
    later = observed_cost(spec(), after, Observed(), NOW + timedelta(hours=2))  # Jobs and pods gone
    assert later.stages == step.cost.stages and later.teacher_output_tokens == 80


def test_the_report_and_run_print_the_cost_and_the_evaluation_adds_its_own():
    spent = job_cost({"teacher": StageCost(gpus=2, gpu_seconds=7200)})
    cost = evaluation_cost(spent, seconds=1800, gpus=1, cpu_seconds=90, requests=128, retention=0.95)
    assert cost.stages["evaluate"].gpu_seconds == 1800 and cost.gpu_hours == 2.5
    assert cost.retention_per_gpu_hour == 0.38 and cost.evaluation_requests == 128
    text = "\n".join(cost_lines(priced(cost, spec(), {"default": 2.0}, "USD")))
    assert "2.500 GPU-hours (teacher 2.000, evaluate 0.500)" in text and "5.00 USD" in text
    assert "retention per GPU-hour: 0.380" in text
    table = "\n".join(cost_markdown(cost))
    assert "| teacher | 2 |" in table and "no price table" in table
    assert CostStatus.model_validate(cost.model_dump(by_alias=True)) == cost


def test_distillery_run_counts_the_teacher_and_the_stages_made_for_the_current_fingerprint(tmp_path):
    """`distillery run`'s side: the summaries the stage processes wrote and the teacher's served spans."""
    from distillery.api import DistillationJob
    from distillery.contract.commands import TERMINATION_LOG_ENV
    from distillery.contract.summaries import write_summary
    from distillery.local.cost import record_teacher, spent_before_evaluation
    from distillery.storage import Layout

    job = DistillationJob.model_validate(
        {
            "apiVersion": "distillery.dev/v1alpha1",
            "kind": "DistillationJob",
            "metadata": {"name": "c"},
            "spec": {
                "teacher": {"model": "t", "gpus": 2},
                "student": {"model": "s"},
                "data": {"taskType": "qa", "train": "a.jsonl", "validation": "b.jsonl"},
                "generation": {"shards": 2},
            },
        }
    )
    layout = Layout.of(job, tmp_path)
    keys = {"generate": "now", "train": "t", "evaluate": "e"}
    record_teacher(layout, "before", 2, 500.0)  # a teacher served for a spec since changed: not counted
    record_teacher(layout, "now", 2, 30.0)
    record_teacher(layout, "now", 2, 10.0)  # resumed: served again
    for index in range(2):
        shard = with_usage(
            GenerateSummary(shard=index, fingerprint="now", prompt_tokens=5, output_tokens=7), 4.0, 0, 1.5
        )
        write_summary(shard, {TERMINATION_LOG_ENV: str(layout.stage_summary("generate", index))})
    trained = with_usage(TrainSummary(tokens=1000), 60.0, 1, 55.0)
    write_summary(trained, {TERMINATION_LOG_ENV: str(layout.stage_summary("train"))})
    cost = spent_before_evaluation(job, layout, keys)
    assert cost.stages["teacher"] == StageCost(gpus=2, wall_seconds=40.0, pod_seconds=40.0, gpu_seconds=80.0)
    assert cost.stages["generate"].pod_seconds == 8.0 and cost.stages["generate"].cpu_seconds == 3.0
    assert cost.stages["train"].gpu_seconds == 60.0
    assert (cost.teacher_prompt_tokens, cost.teacher_output_tokens, cost.training_tokens) == (10, 14, 1000)
    assert cost.gpu_hours == round(140 / 3600, 4)


def test_distillery_run_refuses_a_price_table_it_cannot_read_before_starting(capsys):
    from distillery import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "job.yaml", "--gpu-hour-prices", "H100"])
    assert exit_info.value.code == 2
    assert "--gpu-hour-prices: GPU price 'H100': expected TYPE=PRICE" in capsys.readouterr().err
