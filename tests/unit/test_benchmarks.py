"""The pure helpers of the benchmark scripts in hack/: the API stand-in's patch and path logic,
the histogram quantile, the stage-time parser and the quality task's data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

import bench_operator_scale
import bench_quality
import flat_apiserver

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


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    # rank 20 of 40 falls halfway into (0.1, 0.5]: 0.1 + 0.4 * (20 - 10) / (30 - 10)
    assert bench_operator_scale.histogram_quantile(0.5, buckets) == pytest.approx(0.3)
    assert bench_operator_scale.histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 8 / 10)
    assert bench_operator_scale.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def test_stage_times_reads_the_runners_lines():
    log = "[1/3] generate: starting\n[1/3] generate: done in 290s\n[2/3] train: done in 1777s\n"
    assert bench_quality.stage_times(log) == {"generate": 290, "train": 1777}


def test_quality_task_is_labelled_distinct_and_disjoint():
    train = bench_quality.task_records(1, 200, prefix="train")
    validation = bench_quality.task_records(2, 50, exclude={r["prompt"] for r in train}, prefix="val")
    assert len({r["prompt"] for r in train}) == 200
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in validation}
    for record in train + validation:
        words = bench_quality.POSITIVE if record["answer"] == "positive" else bench_quality.NEGATIVE
        assert any(word in record["prompt"] for word in words), record
    assert {r["answer"] for r in train} == {"positive", "negative"}
