"""Public benchmarks in the evaluation: lm-evaluation-harness tasks, and the gate's floors on their scores.

`evaluation.benchmarks` lists lm-eval tasks; the evaluation stage runs each against every compared
model while vLLM serves it (`distillery.evaluation.benchmarks`). `evaluation.benchmarkTasks` is where
task definitions and their data come from when the hub is unreachable: a directory of lm-eval task
YAMLs and data files, on the job's storage or under an `s3://` prefix. `evaluation.gate.benchmarks`
names one score per entry with a floor.
"""

from __future__ import annotations

from pydantic import Field

from distillery.api.base import NAME_MAX, Model, Rule

__all__ = ["BenchmarkGate", "BenchmarkSpec"]

# Not blank: lm-eval task and metric names are identifiers such as `arc_easy` or `acc_norm`.
NOT_BLANK = r"^\S(.*\S)?$"


class BenchmarkSpec(Model):
    """One lm-eval task, run against every compared model."""

    task: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NOT_BLANK,
        description="lm-eval task name, e.g. `arc_easy`, or one defined by a YAML under `benchmarkTasks`.",
    )
    num_fewshot: int = Field(0, ge=0, le=64, description="Examples put before each question (0: zero-shot).")
    limit: int | None = Field(None, ge=1, description="Score only the task's first N documents.")


class BenchmarkGate(Model):
    """A floor on one benchmark score of the student: its own value, or its share of the teacher's."""

    RULES = (
        Rule(
            "minRetention",
            "set exactly one of minRetention and minScore",
            "has(self.minRetention) != has(self.minScore)",
            lambda g: (g.min_retention is None) != (g.min_score is None),
        ),
    )

    task: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NOT_BLANK,
        description="A task listed in `evaluation.benchmarks`.",
    )
    metric: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NOT_BLANK,
        description="The task's metric as lm-eval names it, e.g. `acc`, `acc_norm`, `exact_match`.",
    )
    min_retention: float | None = Field(
        None, ge=0.0, le=10.0, description="Least student score / teacher score on this metric, e.g. 0.9."
    )
    min_score: float | None = Field(None, ge=0.0, description="Least student score on this metric.")
