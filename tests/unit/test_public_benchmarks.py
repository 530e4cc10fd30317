"""The pure parts of hack/bench_public_scores.py: the fixed subset, the offline lm-eval task config
(checked by lm-eval's own TaskManager reading it and rendering a document), and the result table."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

import public_benchmarks as pb

pytestmark = pytest.mark.unit


def test_subset_is_all_documents_when_n_is_zero_or_too_large():
    assert pb.subset_indices(5, 0, seed=1) == [0, 1, 2, 3, 4]
    assert pb.subset_indices(5, 9, seed=1) == [0, 1, 2, 3, 4]


def test_subset_is_a_seeded_sorted_sample_without_repeats():
    first = pb.subset_indices(1000, 50, seed=7)
    assert first == pb.subset_indices(1000, 50, seed=7)  # same seed, same documents
    assert first != pb.subset_indices(1000, 50, seed=8)
    assert len(set(first)) == 50 and first == sorted(first) and all(0 <= i < 1000 for i in first)


def test_subset_refuses_a_negative_total():
    with pytest.raises(ValueError, match="total"):
        pb.subset_indices(-1, 3, seed=0)


def test_pick_skips_blank_lines_and_keeps_file_order():
    lines = ['{"a": 0}', "", '{"a": 1}', '{"a": 2}', "  "]
    assert pb.pick(lines, 0, seed=0) == ['{"a": 0}', '{"a": 1}', '{"a": 2}']
    picked = pb.pick(lines, 2, seed=3)
    assert len(picked) == 2 and picked == sorted(picked, key=lines.index)


def test_binomial_stderr():
    assert pb.binomial_stderr(0.5, 100) == pytest.approx(0.05)
    assert pb.binomial_stderr(1.0, 10) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        pb.binomial_stderr(0.5, 0)
    with pytest.raises(ValueError, match="p must be"):
        pb.binomial_stderr(54.1, 10)  # a percentage, not a fraction


@pytest.mark.parametrize("upstream", sorted(pb.TASKS))
def test_task_config_is_read_by_lm_eval_and_renders_the_upstream_prompt(tmp_path, monkeypatch, upstream):
    from lm_eval.tasks import TaskManager

    task = pb.TASKS[upstream]
    query = "Question: Which is a mammal?" + ("\n" if upstream == "piqa" else "")
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"query": query, "choices": ["trout", "whale"], "gold": 1}) + "\n")
    (tmp_path / f"{task.name}.yaml").write_text(yaml.safe_dump(pb.task_config(task, data.name)))
    monkeypatch.chdir(tmp_path)  # a relative data path, read from the task directory (as the stage does)

    obj = TaskManager(include_path=str(tmp_path)).load([task.name])["tasks"][task.name]
    doc = next(iter(obj.test_docs()))
    # The upstream arc_* / piqa YAMLs render "Question: {{question}}\nAnswer:" and score " " + choice.
    assert obj.doc_to_text(doc) == "Question: Which is a mammal?\nAnswer:"
    assert obj.doc_to_choice(doc) == ["trout", "whale"]
    assert obj.doc_to_target(doc) == 1
    assert obj.config.num_fewshot in (None, 0)


def test_rows_take_the_published_metric_and_the_table_states_gap_and_stderr():
    results = {
        "arc_easy_local": {"acc,none": 0.55, "acc_norm,none": 0.40},
        "piqa_local": {"acc,none": 0.60, "acc_norm,none": 0.65},
    }
    rows = pb.rows_from_results("vllm", results, {"arc_easy": 400, "piqa": 100})
    assert [(r.task, r.metric, r.ours) for r in rows] == [
        ("arc_easy", "acc", 0.55),
        ("piqa", "acc_norm", 0.65),
    ]
    assert rows[0].gap == pytest.approx(55.0 - pb.TASKS["arc_easy"].published)
    text = pb.table(rows)
    lines = text.splitlines()
    assert lines[0].split("|")[1:-1] == [
        f" {h} " for h in ("backend", "task", "metric", "N", "ours", "stderr", "published", "gap")
    ]
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    se = 100 * math.sqrt(0.65 * 0.35 / 100)
    assert cells == ["vllm", "piqa", "acc_norm", "100", "65.00", f"{se:.2f}", "66.92", f"{65.0 - 66.92:+.2f}"]


def test_rows_name_the_missing_metric():
    with pytest.raises(KeyError, match=r"acc_norm,none.*arc_challenge_local"):
        pb.rows_from_results("hf", {"arc_challenge_local": {"acc,none": 0.3}}, {"arc_challenge": 10})


def test_q4_1_roundtrip_keeps_16_levels_per_block_and_is_idempotent_on_its_grid():
    torch = pytest.importorskip("torch")
    import requant_q4_1

    weight = torch.randn(3, 80, generator=torch.Generator().manual_seed(0))
    once = requant_q4_1.q4_1_roundtrip(weight)
    for block in once[:, :64].reshape(3, 2, 32).unbind(1):
        assert all(len(torch.unique(row)) <= 16 for row in block)
    assert (once - weight).abs().max() < (weight.max() - weight.min()) / 15  # within one step of a level
    assert torch.equal(requant_q4_1.q4_1_roundtrip(once), once)  # the same blocks: nothing moves
    assert not torch.equal(requant_q4_1.q4_1_roundtrip(once, offset=16), once)  # straddling blocks: new noise


def test_q4_1_roundtrip_names_a_bad_offset_or_shape():
    torch = pytest.importorskip("torch")
    import requant_q4_1

    with pytest.raises(ValueError, match="offset"):
        requant_q4_1.q4_1_roundtrip(torch.zeros(2, 32), offset=32)
    with pytest.raises(ValueError, match="2-D"):
        requant_q4_1.q4_1_roundtrip(torch.zeros(32))
