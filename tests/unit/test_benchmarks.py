"""The pure helpers of the benchmark scripts in hack/: the API stand-in's patch and path logic,
the histogram quantile, and the quality benchmark's tasks, budgets and tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

import bench_process
import bench_quality
import bench_quality_report
import bench_train
import flat_apiserver
import operator_stand
import quality_tasks

pytestmark = pytest.mark.unit


def test_merge_patch_sets_replaces_and_removes():
    target = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}}
    patched = flat_apiserver.merge_patch(
        target, {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"x": 2}}
    )
    assert patched == {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"x": 2}}
    assert target["metadata"]["labels"] == {"a": "1", "b": "2"}  # the stored object is not changed in place


def test_json_patch_add_remove_and_failed_test():
    target = {"metadata": {"finalizers": ["a", "b"], "annotations": {"k/x": "1"}}}
    patched = flat_apiserver.json_patch(
        target,
        [
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "c"},
            {"op": "replace", "path": "/metadata/annotations/k~1x", "value": "2"},
        ],
    )
    assert patched == {"metadata": {"finalizers": ["b", "c"], "annotations": {"k/x": "2"}}}
    with pytest.raises(ValueError, match="test failed"):
        flat_apiserver.json_patch(target, [{"op": "test", "path": "/metadata/finalizers/0", "value": "z"}])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/namespaces/ml/pods", (("v1", "pods"), "ml", None, None)),
        ("/api/v1/namespaces/ml", (("v1", "namespaces"), None, "ml", None)),
        (
            "/apis/distillery.dev/v1alpha1/namespaces/ml/distillationjobs/j/status",
            (("distillery.dev/v1alpha1", "distillationjobs"), "ml", "j", "status"),
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            (("apiextensions.k8s.io/v1", "customresourcedefinitions"), None, None, None),
        ),
        ("/apis/example.com/v1/namespaces/ml/widgets", None),
    ],
)
def test_parse_path(path, expected):
    assert flat_apiserver.parse_path(path) == expected


def test_label_selector_equality_terms():
    labels = {"distillery.dev/job": "a", "distillery.dev/stage": "teacher"}
    assert flat_apiserver.selector_matches("distillery.dev/job=a", labels)
    assert flat_apiserver.selector_matches("distillery.dev/job==a,distillery.dev/stage=teacher", labels)
    assert not flat_apiserver.selector_matches("distillery.dev/job=b", labels)


def test_the_stand_ins_completed_check_job_is_what_the_operator_reads_as_a_done_check():
    """The flat API server plays the check pod and the Job controller: the operator's reader, fed the
    Job the real builder makes and the pod the stand-in makes from it, sees a Complete check with its
    summary (no wait for a missing summary), from the summary the bench takes from the stage's writer."""
    from datetime import datetime, timezone

    from distillery.api import DistillationJob
    from distillery.controller.cache import Cache
    from distillery.controller.observe import from_children, settled
    from distillery.manifests import BuildConfig, build

    job = DistillationJob.model_validate(operator_stand.job_body(7))
    job.metadata.uid = "u-7"
    check = build("check", job, BuildConfig())
    check["metadata"].update(uid="j-1", resourceVersion="1")
    pod = flat_apiserver.succeeded_pod(check, operator_stand.check_summary())
    check["status"] = {
        "succeeded": 1,
        "completionTime": flat_apiserver.now_rfc3339(),
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    cache = Cache()
    cache.put_job({"metadata": {"namespace": "bench", "name": job.metadata.name, "uid": "u-7"}})
    for kind, body in (("Job", check), ("Pod", pod)):
        cache.put_child(kind, {**body, "metadata": {**body["metadata"], "namespace": "bench"}})
    observed = from_children(cache.children(("bench", job.metadata.name)))
    check_job = observed.job("check")
    assert check_job.complete and check_job.summaries and not check_job.summaries_missing
    _, wait = settled(observed, datetime.now(timezone.utc))
    assert wait is None
    without_pod = from_children({"Job": [check]})
    assert without_pod.job("check").summaries_missing  # what the stand-in left before it played the pod


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    # rank 20 of 40 falls halfway into (0.1, 0.5]: 0.1 + 0.4 * (20 - 10) / (30 - 10)
    assert bench_process.histogram_quantile(0.5, buckets) == pytest.approx(0.3)
    assert bench_process.histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 8 / 10)
    assert bench_process.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


@pytest.mark.parametrize("name", sorted(quality_tasks.CANDIDATES))
def test_quality_tasks_are_labelled_distinct_and_disjoint(name):
    task = quality_tasks.CANDIDATES[name]
    validation = task.records(2, 20, prefix="val", fewer=True)
    train = task.records(1, 60, exclude={r["prompt"] for r in validation}, prefix="train", fewer=True)
    assert len({r["prompt"] for r in train}) == len(train) and not {r["prompt"] for r in train} & {
        r["prompt"] for r in validation
    }
    for record in train:
        if task.labels:
            assert record["answer"] in task.labels
        if name == "next":  # the answer is the number after the one asked about
            assert int(record["answer"]) == int(record["prompt"].rstrip("?").split()[-1]) + 1
        if name == "sentiment":
            words = quality_tasks.POSITIVE if record["answer"] == "positive" else quality_tasks.NEGATIVE
            assert any(word in record["prompt"] for word in words), record


def test_the_benchmarks_tasks_have_room_for_their_budgets():
    """The defaults: 100 validation prompts, and enough training prompts for 512 accepted answers when the
    teacher is right as often as it was measured to be (bench_quality.write_train_prompts)."""
    args = argparse.Namespace(records_offline=512)
    for name, teacher_score in (("sentiment", 0.94), ("zoo", 0.85)):
        task = quality_tasks.CANDIDATES[name]
        wanted = int(args.records_offline / teacher_score * 1.15) + 32
        assert len(task.records(1, 5000, fewer=True)) >= 100 + wanted, name


def test_methods_get_the_same_updates_and_teacher_budget():
    args = argparse.Namespace(
        records_offline=1200, records_on_policy=400, on_policy_fraction=1 / 3, updates=150, batch_size=16
    )
    assert bench_quality.budgets(args) == {"offline": 2, "onPolicy": 6}
    with pytest.raises(SystemExit, match="teacher budgets differ"):
        bench_quality.budgets(argparse.Namespace(**{**vars(args), "records_offline": 800}))
    with pytest.raises(SystemExit, match="not a whole number of epochs"):
        bench_quality.budgets(argparse.Namespace(**{**vars(args), "updates": 140}))


def test_a_run_gets_the_first_accepted_answers_and_pays_for_the_rejected_ones(tmp_path):
    from distillery.contract.records import read_records
    from distillery.storage import Layout
    from distillery.training.data import record_files

    source = Layout(tmp_path, "data").generated("train")
    source.mkdir(parents=True)

    def record(line: int, rejected: bool = False) -> str:
        fields = {
            "line": line,
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
            "response": "x",
            "messages": [],
        } | ({"reject_reason": "wrong_answer"} if rejected else {})
        return json.dumps(fields) + "\n"

    (source / "shard-00000-of-00002.jsonl").write_text(record(1) + record(5) + record(7))
    (source / "shard-00001-of-00002.jsonl").write_text(record(2) + record(6))
    (source / "shard-00001-of-00002.rejected.jsonl").write_text(record(4, True) + record(8, True))
    assert bench_quality.link_records(tmp_path, "data", "run", 4) == 5 * 12  # lines 1, 2, 4 (rejected), 5, 6
    # read as the training stage reads them: only the files of the jobs' shard set
    files = record_files(Layout(tmp_path, "run").generated("train"), bench_quality.SHARDS)
    assert [r.line for r in read_records(files)] == [1, 2, 5, 6]
    with pytest.raises(SystemExit, match="5 accepted answers, 9 needed"):
        bench_quality.link_records(tmp_path, "data", "run", 9)


def test_mean_and_spread_over_seeds():
    assert bench_quality_report.spread([0.5, 0.7]) == pytest.approx(
        {"mean": 0.6, "min": 0.5, "max": 0.7, "sd": 0.1414213, "n": 2}, rel=1e-5
    )
    rows = [{"method": "kd", "score": s, "retention": s / 0.8} for s in (0.6, 0.8)]
    assert bench_quality_report.aggregate(rows) == [
        "kd        n=2: score 0.700 ± 0.141 (0.600-0.800), retention 0.875 ± 0.177 (0.750-1.000)"
    ]


def test_bench_train_steady_rate_leaves_the_warm_up_out():
    points = [(100, 10.0), (100, 1.0), (300, 1.0), (100, 1.0)]  # a slow first update (compilation)
    assert bench_train.steady(points, warmup=1) == pytest.approx(500 / 3)
    assert bench_train.steady(points, warmup=9) == 100.0  # fewer updates than the warm-up: the last one


@pytest.mark.parametrize(("shape", "parameters"), [("360m", 361_821_120), ("0.5b", 494_005_120)])
def test_bench_train_gpu_shapes_count_a_tied_embedding_once(shape, parameters):
    """SmolLM2-360M's shape has 361.8M parameters; its state dict lists the tied embedding twice (409.0M)."""
    import torch

    with torch.device("meta"):
        model = bench_train.llama(shape, bench_train.SHAPES[shape]["vocab_size"])
    assert sum(p.numel() for p in model.parameters()) == parameters
    config = model.config
    expected = 6 * parameters + 12 * config.num_hidden_layers * config.hidden_size * 600
    assert bench_train.model_flops_per_token(model, 600) == expected


def test_the_operators_writes_leave_out_reads_watches_and_the_benchs_own_creates():
    stats = {
        "requests": {
            "create distillery.dev/v1alpha1/distillationjobs": 100,  # the bench's
            "create batch/v1/jobs": 100,
            "create v1/events": 400,
            "patch distillery.dev/v1alpha1/distillationjobs/status": 300,
            "delete apps/v1/deployments": 2,
            "list v1/pods": 1,
            "watch v1/pods": 1,
            "get v1/persistentvolumeclaims": 5,
        }
    }
    assert operator_stand.writes(stats) == 100 + 400 + 300 + 2


def test_bench_tiny_reads_stage_and_server_start_times_from_what_distillery_run_prints(capsys):
    import bench_tiny
    from distillery.local.runner import timed

    with timed("generate", 1):
        pass
    with timed("train", 2):
        pass
    printed = capsys.readouterr().err
    # The launcher's line as a run prints it (serving.vllm.local_vllm_server), between the stage lines.
    log = printed.replace("[2/3] train: starting", "vllm: 'teacher' ready in 18s\n[2/3] train: starting")
    log += "vllm: 'baseline' ready in 12s\n"
    times = bench_tiny.log_times(log)
    assert times == {"generate_s": 0.0, "train_s": 0.0, "vllm_ready_s": "18/12"}
