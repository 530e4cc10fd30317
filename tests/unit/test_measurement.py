"""Every compared model is measured the same way: one path from the answers to the report's latency figures.

The tiny run's report once compared a teacher latency read from its generation records (many
requests in flight, another load) with baseline and student latencies served one by one; these
tests pin that teacher, baseline and student now go through the same rounds, one server at a
time, and that the report's figures for each come from the one function, `serving_figures`.
"""

from __future__ import annotations

import contextlib

import pytest

from distillery.api import DistillationJob
from distillery.contract.report import TEACHER_FROM_RECORDS, EvaluationReport
from distillery.evaluation import evaluate, measure, scoring
from distillery.evaluation.answers import Answer, ModelRun
from distillery.evaluation.report import summary_lines
from distillery.storage import Layout

pytestmark = pytest.mark.unit

PROMPTS = 4


def make_job() -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "fair"},
            "spec": {
                "teacher": {"model": "models/teacher"},
                "student": {"model": "models/student"},
                "data": {
                    "taskType": "qa",
                    "train": "data/train.jsonl",
                    "validation": "data/validation.jsonl",
                },
                "generation": {"maxTokens": 8},
                "evaluation": {
                    "gpus": 0,
                    "concurrency": 3,
                    "extraArgs": ["-O0"],
                    "gate": {"minRetention": 0.5},
                },
            },
        }
    )


class Prompt:
    def __init__(self, number: int):
        self.id, self.line, self.reference = f"p{number}", number, str(number)
        self.messages = [{"role": "user", "content": f"What is {number}?"}]


def measured(monkeypatch, latency_by_model: dict[str, float]) -> tuple[dict[str, ModelRun], list[tuple]]:
    """`measure_models` with every model served by a stub server whose answers take the given latency;
    returns the runs and every (model, prompts, concurrency, servers open) it asked."""
    job = make_job()
    asked: list[tuple] = []
    open_servers: list[str] = []

    @contextlib.contextmanager
    def serve(job_, layout, name, model):
        open_servers.append(name)
        try:
            yield (name, 1000 + len(name))
        finally:
            open_servers.remove(name)

    def ask_round(name, connection, pid, prompts, job_, say):
        asked.append((name, len(prompts), job_.spec.evaluation.concurrency, tuple(open_servers)))
        tokens = 2 if name == "teacher" else 3
        answers = [Answer(p.reference, latency_by_model[name], tokens) for p in prompts]
        seconds = latency_by_model[name] * len(prompts) / 1000
        return answers, seconds, 1 << 20, seconds / 2  # the server busy half the wall time

    monkeypatch.setattr(measure, "_ask_round", ask_round)
    models = {name: f"models/{name}" for name in latency_by_model}
    prompts = [Prompt(n) for n in range(PROMPTS)]
    runs = measure.measure_models(job, Layout.of(job, "/nowhere"), serve, models, {}, prompts, lambda m: None)
    return runs, asked


def test_every_model_is_asked_the_same_prompts_the_same_way_one_server_at_a_time(monkeypatch):
    runs, asked = measured(monkeypatch, {"teacher": 20.0, "baseline": 10.0, "student": 5.0})
    assert list(runs) == ["teacher", "baseline", "student"]
    for name in runs:
        calls = [call for call in asked if call[0] == name]
        # one untimed warm-up round, then timed rounds of every prompt, at the evaluation's concurrency
        assert [c[1] for c in calls] == [PROMPTS] * (1 + measure.timed_rounds(PROMPTS))
        assert {c[2] for c in calls} == {3}
        assert {c[3] for c in calls} == {(name,)}  # only its own server was up while it was measured
        run = runs[name]
        assert (run.source, run.rounds, len(run.answers)) == (
            "served",
            measure.timed_rounds(PROMPTS),
            PROMPTS,
        )
        assert len(run.timed) == PROMPTS * measure.timed_rounds(PROMPTS)


@pytest.mark.parametrize("prompts", [0, 1, 4, 40, 99, 100, 133, 134, 400, 5000])
def test_small_validation_sets_get_more_timed_rounds_so_every_model_is_timed_on_enough_requests(prompts):
    rounds = measure.timed_rounds(prompts)
    assert measure.MEASURE_ROUNDS <= rounds <= measure.MAX_ROUNDS
    # enough requests timed, unless the cap stops it; and no round more than that needs
    assert rounds * prompts >= measure.MIN_TIMED_REQUESTS or rounds == measure.MAX_ROUNDS
    assert rounds == measure.MEASURE_ROUNDS or (rounds - 1) * prompts < measure.MIN_TIMED_REQUESTS


def test_the_reports_figures_for_every_model_come_from_its_measured_rounds(monkeypatch, tmp_path):
    runs, _ = measured(monkeypatch, {"teacher": 20.0, "baseline": 10.0, "student": 5.0})
    job = make_job()
    prompts = [Prompt(n) for n in range(PROMPTS)]
    models = {name: None for name in runs}
    report = EvaluationReport.of(evaluate.build_report(job, Layout.of(job, tmp_path), prompts, runs, models))
    for name, run in runs.items():
        entry = report.models[name]
        latencies = [a.latency_ms for a in run.timed]
        expected = scoring.serving_metrics(
            latencies, sum(a.output_tokens for a in run.timed), run.wall_seconds
        )
        assert (
            entry.latency_p50_ms == expected["latencyP50Ms"] == measure.serving_figures(run)["latencyP50Ms"]
        )
        assert entry.output_tokens_per_second == pytest.approx(expected["outputTokensPerSecond"])
        cpu_ms = run.cpu_seconds * 1000 / sum(a.output_tokens for a in run.timed)
        assert entry.cpu_ms_per_output_token == pytest.approx(cpu_ms)
    # The faster stub really shows as faster: figures follow the measurement, not the model's name.
    assert report.models["student"].latency_p50_ms < report.models["teacher"].latency_p50_ms
    assert (
        report.models["student"].output_tokens_per_second > report.models["teacher"].output_tokens_per_second
    )
    measurement = report.measurement
    assert measurement is not None and measurement.comparable
    assert measurement.sources == {"teacher": "served", "baseline": "served", "student": "served"}
    rounds = measure.timed_rounds(PROMPTS)
    assert (measurement.rounds, measurement.concurrency, measurement.server_args) == (rounds, 3, ["-O0"])
    lines = summary_lines(report)
    assert any(
        line.startswith(f"  measured: every model answered the same 4 prompts {rounds} time(s)")
        for line in lines
    )
    assert any("tok/s" in line and line.strip().startswith("student") for line in lines)


def test_a_teacher_scored_from_its_records_is_reported_as_not_comparable(monkeypatch, tmp_path):
    runs, _ = measured(monkeypatch, {"baseline": 10.0, "student": 5.0})
    records = ModelRun(
        "teacher", [Answer(str(n), 1.0, 2) for n in range(PROMPTS)], None, None, TEACHER_FROM_RECORDS
    )
    runs = {"teacher": records, **runs}
    job = make_job()
    prompts = [Prompt(n) for n in range(PROMPTS)]
    built = evaluate.build_report(job, Layout.of(job, tmp_path), prompts, runs, {name: None for name in runs})
    report = EvaluationReport.of(built)
    assert report.measurement is not None and not report.measurement.comparable
    assert "NOT comparable: teacher (generation records)" in report.measurement.text
    assert report.models["teacher"].output_tokens_per_second is None  # no wall time from records
