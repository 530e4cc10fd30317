"""Quality benchmark v3's pure parts (hack/quality_public.py, hack/bench_quality_v3_report.py, the job that
hack/bench_quality_v3.py writes): Gauntlet documents into qa records scored by the project's own matcher,
the split, the decontamination through the project's own n-gram code, the budget, and the tables read from
a report the evaluation's own model writes. Every document is written here; nothing is fetched."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

import bench_quality as v2
import bench_quality_v3 as v3
import bench_quality_v3_report as report
import quality_public as qp

pytestmark = pytest.mark.unit

# The two Gauntlet shapes: CommonsenseQA keeps lettered choices in the query, OpenBookQA the texts.
LETTERED = {
    "query": "Question: Where would you keep a revolving door?\nChoices:\nA. bank\nB. mall\nC. zoo\nAnswer:",
    "choices": ["A", "B", "C"],
    "gold": 0,
}
PLAIN = {
    "query": "There is most likely going to be fog around:",
    "choices": ["a marsh", "a desert"],
    "gold": 0,
}


def test_a_lettered_document_becomes_its_question_and_choice_texts():
    question = qp.parse_doc(LETTERED)
    assert question.question == "Where would you keep a revolving door?"
    assert question.choices == ["bank", "mall", "zoo"] and question.answer == "bank"
    assert question.prompt() == "Where would you keep a revolving door?\nChoices:\n- bank\n- mall\n- zoo"


def test_a_plain_document_keeps_its_stem_and_choices():
    question = qp.parse_doc(PLAIN)
    assert (question.question, question.answer) == ("There is most likely going to be fog around:", "a marsh")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"query": "q", "choices": ["a"]}, "no 'gold' field"),
        ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold is 2; expected an index into its 2 choices"),
        ({**LETTERED, "choices": ["A", "D"]}, r"choices \['D'\] are not listed"),
        ({"query": "Question: \nAnswer:", "choices": ["a"], "gold": 0}, "empty question"),
    ],
)
def test_a_malformed_document_is_refused_naming_where_and_what(doc, message):
    with pytest.raises(ValueError, match=message):
        qp.parse_doc(doc, "csqa line 3")


def test_records_are_scored_by_the_projects_qa_matcher():
    from distillery.api import TaskType
    from distillery.tasks import answers_match

    lines = [json.dumps(LETTERED), "", json.dumps(PLAIN)]
    records = qp.records("csqa", lines)
    assert [r["id"] for r in records] == ["csqa-00001", "csqa-00003"]  # numbered by line, blanks skipped
    first = records[0]
    # What evaluation and generation do with a record: the reference is named in the answer's first line.
    assert answers_match(TaskType.qa, "The answer is bank.", first["answer"], [])
    assert not answers_match(TaskType.qa, "A mall.\nNot a bank.", first["answer"], [])
    assert "{prompt}" in qp.PROMPT_TEMPLATE


def test_split_is_seeded_disjoint_and_checked():
    pool = [{"id": str(i), "prompt": f"p{i % 40}"} for i in range(50)]  # ten prompt texts repeat
    train, validation = qp.split(pool, 10, seed=3)
    assert (train, validation) == qp.split(pool, 10, seed=3)
    assert len(validation) == 10
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in validation}
    assert len(train) + len(validation) <= 50
    with pytest.raises(ValueError, match="validation must be between 1 and 49"):
        qp.split(pool, 50, seed=3)


def test_decontamination_removes_prompts_sharing_an_ngram_with_a_benchmark_document():
    arc = qp.benchmark_references(
        [
            json.dumps(
                {
                    "query": "Question: Which gas do plants take in from the air?",
                    "choices": ["oxygen", "carbon dioxide"],
                    "gold": 1,
                }
            )
        ]
    )
    piqa = qp.benchmark_references(
        [
            json.dumps(
                {
                    "query": "Question: How do I dry wet shoes quickly at home?\n",
                    "choices": ["stuff them with newspaper overnight", "x"],
                    "gold": 0,
                }
            )
        ]
    )
    train = [
        {"prompt": "Which gas do plants take in from the air during the day?"},  # 8 words of ARC's question
        {"prompt": "You can stuff them with newspaper overnight to dry them"},  # 5 words of a PIQA choice
        {"prompt": "What colour is the sky on a clear day?"},
    ]
    kept, removed = qp.decontaminate(train, {"arc": arc, "piqa": piqa}, ngram_size=8)
    assert kept == train[1:] and removed == {"arc": 1, "piqa": 0, "total": 1}
    kept, removed = qp.decontaminate(train, {"arc": arc, "piqa": piqa}, ngram_size=5)
    assert kept == train[2:] and removed == {"arc": 1, "piqa": 1, "total": 2}
    assert qp.decontaminate(train, {"arc": arc, "piqa": piqa}, ngram_size=13)[1]["total"] == 0


def test_prompts_for_leaves_a_margin_and_refuses_a_small_pool():
    assert qp.prompts_for(512, 10_000) == int(512 * 1.15) + 32
    assert qp.prompts_for(512, 600) == 600
    with pytest.raises(ValueError, match="500 training prompts after decontamination; the budget needs 512"):
        qp.prompts_for(512, 500)


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        updates=64,
        batch_size=16,
        learning_rate=1e-3,
        records_offline=512,
        records_on_policy=256,
        on_policy_fraction=0.25,
    )
    return argparse.Namespace(**{**values, **overrides})


def test_every_job_of_the_task_is_a_valid_distillation_job_with_the_benchmarks():
    from distillery.api import DistillationJob

    task = v3.PublicTask("public", ("arc_easy_local", "piqa_local"))
    assert v2.budgets(_args()) == {"offline": 2, "onPolicy": 4}  # the same 64 updates for every method
    for method in ("sft", "kd", "onPolicy"):
        document = v2.job_document(_args(), task, f"public-{method.lower()}-s1", method=method, epochs=2)
        job = DistillationJob.model_validate(document)
        assert [b.task for b in job.spec.evaluation.benchmarks] == ["arc_easy_local", "piqa_local"]
        assert job.spec.evaluation.benchmark_tasks == v3.TASKS_DIR
        assert job.spec.generation.filters.verify is False and job.spec.data.task_type.value == "qa"
        assert job.spec.data.decontamination.enabled  # generation still checks the task's own validation
    with pytest.raises(SystemExit, match="teacher budgets differ"):
        v2.budgets(_args(records_offline=500))


def _entry(score: float, arc: float, piqa: float) -> dict:
    """A model entry as the evaluation stage writes it (its own report model, dumped by alias)."""
    from distillery.contract.report import ModelEntry

    metrics = {"arc_easy_local": ("acc", arc), "piqa_local": ("acc_norm", piqa)}
    benchmarks = {
        task: {"samples": 100, "metrics": {metric: {"value": value, "stderr": 0.05}}}
        for task, (metric, value) in metrics.items()
    }
    return ModelEntry.model_validate({"score": score, "benchmarks": benchmarks}).model_dump(by_alias=True)


METRICS = {"arc_easy_local": "acc", "piqa_local": "acc_norm"}


def test_rows_give_each_benchmark_with_its_stderr_and_retention():
    teacher = _entry(0.40, 0.50, 0.64)
    run = {
        "method": "sft",
        "seed": 1,
        "teacher_tokens": 1234,
        "train_seconds": 90.0,
        "train_cpu_seconds": 170.0,
    }
    run["summary"] = {"trainLoss": 1.5, "step": 64}
    row = report.model_row("public-sft-s1", _entry(0.20, 0.40, 0.48), teacher, METRICS, run)
    assert row["task_retention"] == pytest.approx(0.5)
    assert row["benchmarks"]["arc_easy_local"] == {
        "metric": "acc",
        "value": 0.40,
        "stderr": 0.05,
        "n": 100,
        "retention": pytest.approx(0.8),
    }
    assert row["benchmarks"]["piqa_local"]["retention"] == pytest.approx(0.75)
    lines = report.table([report.model_row("teacher", teacher, teacher, METRICS, {}), row], METRICS)
    assert lines[0].startswith("| model | seed | task score (ret.) | arc_easy_local acc ± se (ret.)")
    assert "| teacher | - | 0.400 (1.00) | 0.500 ± 0.050 (1.00) |" in lines[2]
    assert (
        "| sft | 1 | 0.200 (0.50) | 0.400 ± 0.050 (0.80) | 0.480 ± 0.050 (0.75) | 1.500 | 1,234 |" in lines[3]
    )


def test_a_missing_benchmark_or_a_zero_teacher_gives_no_retention():
    assert report.benchmark_score({"benchmarks": {}}, "arc_easy_local", "acc") == (None, None, None)
    assert report.retention(0.3, 0.0) is None and report.retention(None, 0.5) is None


def test_method_summary_spreads_retention_over_seeds():
    teacher = _entry(0.40, 0.50, 0.50)
    rows = [report.model_row("teacher", teacher, teacher, METRICS, {})]
    for seed, arc in ((1, 0.40), (2, 0.30)):
        rows.append(
            report.model_row(
                f"kd{seed}", _entry(0.2, arc, 0.5), teacher, METRICS, {"method": "kd", "seed": seed}
            )
        )
    (line,) = report.method_summary(rows, METRICS)
    assert line.startswith("kd (n=2) retention: task 0.500 ± 0.000 (0.500-0.500)")
    assert "arc_easy_local 0.700 ± 0.141 (0.600-0.800)" in line and line.endswith("public mean 0.850")


def test_stage_costs_total_wall_and_cpu_hours():
    lines = report.stage_costs(
        {
            "generate": {"wall_s": 100, "cpu_s": 180, "load": "load 2.0"},
            "train": {"wall_s": 60, "cpu_s": 3420},
        }
    )
    assert "| generate | 100 | 180 | 0.050 | load 2.0 |" in lines
    assert lines[-1] == "| total | 160 | 3600 | 1.000 | |"
    nested = {
        "teacher served (incl. generate) 0": {"wall_s": 500, "cpu_s": 900},
        "generate": {"wall_s": 100, "cpu_s": 180},
    }
    assert (
        report.stage_costs(nested)[-1] == "| total | 100 | 180 | 0.050 | |"
    )  # the span is not counted twice


def test_sample_answers_show_every_model_cut_to_width():
    rows = [{"prompt": "Q one?\nChoices:", "reference": "a", "teacher": "a " * 50, "sft s1": None}]
    lines = report.sample_answers(rows, ["teacher", "sft s1", "kd s1"], count=5, width=20)
    assert lines == [
        "- Q one? (reference: a)",
        "  - teacher: a a a a a a a a a...",
        "  - sft s1: (no answer)",
    ]


def test_costs_measure_a_stage_once(tmp_path):
    costs = v3.Costs(tmp_path / "costs.json")
    with costs.measure("generate"):
        pass
    first = json.loads((tmp_path / "costs.json").read_text())["generate"]
    assert set(first) == {"wall_s", "cpu_s", "load"} and first["cpu_s"] >= 0
    again = v3.Costs(tmp_path / "costs.json")
    with again.measure("generate"):  # a rerun that reuses the cached stage keeps the first measurement
        pass
    assert again.stages["generate"] == first


def test_v2s_zoo_task_is_labelled_leaky_because_its_validation_animals_are_trained_on():
    import quality_tasks

    zoo = quality_tasks.CANDIDATES["zoo"]
    validation = zoo.records(2, 100, prefix="val")  # v2's split: seed 2 validation, seed 1 training
    train = zoo.records(1, 800, exclude={r["prompt"] for r in validation}, prefix="train", fewer=True)
    animal = lambda prompt: prompt.split()[-1]  # noqa: E731  # "a wild goose" -> "goose"
    assert {animal(r["prompt"]) for r in validation} <= {animal(r["prompt"]) for r in train}
    assert "training prompts" in zoo.leak
    assert not quality_tasks.SENTIMENT.leak  # its reviews differ; the label marks only the known leak
