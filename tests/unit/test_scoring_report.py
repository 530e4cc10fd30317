"""The evaluation report's pieces: lineage hashes, model size, and the JSON / Markdown / PNG output."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from distillery.api import DistillationJob
from distillery.evaluation import report
from distillery.storage import Layout

pytestmark = pytest.mark.unit


def make_job(**spec_overrides) -> DistillationJob:
    spec = {
        "teacher": {"model": "models/teacher"},
        "student": {"model": "models/student"},
        "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
        "evaluation": {"gate": {"minRetention": 0.5}},
    }
    spec.update(spec_overrides)
    return DistillationJob.model_validate({"metadata": {"name": "demo"}, "spec": spec})


def test_spec_hash_ignores_key_order_and_changes_with_any_value():
    a = make_job()
    b = DistillationJob.model_validate(json.loads(json.dumps(a.model_dump(mode="json", by_alias=True))))
    assert report.spec_hash(a) == report.spec_hash(b)
    assert report.spec_hash(a).startswith("sha256:")
    c = make_job(training={"learningRate": 0.5})
    assert report.spec_hash(c) != report.spec_hash(a)


def test_file_sha256_is_the_plain_sha256(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    assert report.file_sha256(path) == "sha256:" + hashlib.sha256(b"hello").hexdigest()


def test_tree_digest_changes_on_content_or_name_but_not_on_other_patterns(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('{"y": 2}\n')
    (tmp_path / "timing.json").write_text("{}")
    first = report.tree_digest(tmp_path, ["*.jsonl"])
    assert first["files"] == 2
    assert first["bytes"] == 18
    (tmp_path / "timing.json").write_text('{"seconds": 3}')  # not a record file
    assert report.tree_digest(tmp_path, ["*.jsonl"])["sha256"] == first["sha256"]
    (tmp_path / "a.jsonl").rename(tmp_path / "c.jsonl")
    renamed = report.tree_digest(tmp_path, ["*.jsonl"])
    assert renamed["sha256"] != first["sha256"]
    assert report.tree_digest(tmp_path / "absent")["missing"] is True


def test_lineage_hashes_inputs_generated_records_and_student_files(tmp_path):
    job = make_job()
    layout = Layout(tmp_path, "demo")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "q"}\n')
    layout.generated("train").mkdir(parents=True)
    layout.shard_records("train", 0, 1).write_text('{"id": "1"}\n')
    layout.student.mkdir(parents=True)
    (layout.student / "model.safetensors").write_bytes(b"weights")
    out = report.lineage(job, layout)
    assert out["specHash"] == report.spec_hash(job)
    assert out["teacher"]["model"] == "models/teacher"
    assert out["studentBase"]["model"] == "models/student"
    assert out["data"]["train"]["sha256"] == "sha256:" + hashlib.sha256(b'{"prompt": "q"}\n').hexdigest()
    assert out["data"]["validation"]["missing"] is True
    assert out["generated"]["train"]["files"] == 1
    assert out["generated"]["validation"]["missing"] is True
    assert out["student"]["files"] == [
        {
            "path": "model.safetensors",
            "bytes": 7,
            "sha256": "sha256:" + hashlib.sha256(b"weights").hexdigest(),
        }
    ]


def test_parameters_are_counted_from_safetensors_headers(tmp_path):
    from safetensors.numpy import save_file

    save_file(
        {"w": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)}, str(tmp_path / "a.safetensors")
    )
    save_file({"e": np.zeros((2, 2, 2), np.float16)}, str(tmp_path / "b.safetensors"))
    assert report.safetensors_parameters(tmp_path) == 3 * 4 + 5 + 8
    assert report.directory_bytes(tmp_path) == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert report.safetensors_parameters(tmp_path / "nothing") is None


def sample_report(passed: bool = True) -> dict:
    return {
        "job": "demo",
        "created": "2026-11-28T00:00:00Z",
        "taskType": "qa",
        "metric": "accuracy",
        "samples": 40,
        "maxTokens": 16,
        "concurrency": 8,
        "models": {
            "teacher": {
                "score": 0.9,
                "latencyP50Ms": 40.0,
                "latencyP95Ms": 80.0,
                "parameters": 2_000_000,
                "source": "generation records",
            },
            "baseline": {
                "score": 0.1,
                "latencyP50Ms": 20.0,
                "latencyP95Ms": 30.0,
                "parameters": 1_000_000,
                "source": "served",
            },
            "student": {
                "score": 0.72,
                "accuracy": 0.72,
                "teacherAgreement": 0.75,
                "latencyP50Ms": 21.0,
                "latencyP95Ms": 31.0,
                "peakMemoryBytes": 3 * 1024**3,
                "parameters": 1_000_000,
                "sizeBytes": 4 * 1024**2,
                "source": "served",
            },
        },
        "retention": 0.8,
        "improvement": {"absolute": 0.62, "relative": 6.2},
        "gate": {
            "passed": passed,
            "reason": "quality gate passed: retention 0.8 >= minRetention 0.5",
            "checks": [
                {
                    "name": "minRetention",
                    "threshold": 0.5,
                    "value": 0.8,
                    "passed": passed,
                    "text": "retention 0.8 >= minRetention 0.5",
                }
            ],
        },
        "notes": ["the teacher was scored from its generation records"],
        "lineage": {
            "specHash": "sha256:abc",
            "distilleryVersion": "0.1.0",
            "trainingMethod": "kd",
            "teacher": {"model": "models/teacher"},
            "studentBase": {"model": "models/student"},
            "data": {"train": {"path": "data/train.jsonl", "sha256": "sha256:t"}, "validation": None},
            "generated": {"train": {"files": 2, "sha256": "sha256:g"}},
            "student": {
                "path": "jobs/demo/student",
                "files": [{"path": "model.safetensors", "bytes": 10, "sha256": "sha256:s"}],
            },
        },
    }


def test_markdown_has_one_row_per_model_and_the_lineage():
    text = report.render_markdown(sample_report(), "evaluation.png")
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert [r.split("|")[1].strip() for r in rows] == ["**teacher**", "**baseline**", "**student**"]
    student = rows[2]
    assert "| 0.720 |" in student and "| 0.750 |" in student  # accuracy and agreement
    assert "3.0 GiB" in student and "1.0M" in student and "4.0 MiB" in student
    assert "**Quality gate passed**" in text
    assert "Retention** (student / teacher accuracy): 0.800" in text
    assert "+0.620 accuracy (+620.0%)" in text
    assert "![score versus p95 latency](evaluation.png)" in text
    assert "`sha256:abc`" in text and "`model.safetensors`" in text


def test_summary_lines_say_pass_or_fail_and_retention():
    lines = report.summary_lines(sample_report(passed=False))
    assert lines[0].startswith("evaluation of demo on 40 validation records")
    assert any(line.strip().startswith("student") and "accuracy 0.720" in line for line in lines)
    assert "retention 0.800" in "\n".join(lines)
    assert lines[-1].strip().startswith("FAILED:")


def test_write_report_writes_json_markdown_and_a_real_png(tmp_path):
    from matplotlib.image import imread

    paths = report.write_report(sample_report(), tmp_path / "reports" / "evaluation.json")
    assert json.loads(paths["json"].read_text())["retention"] == 0.8
    assert paths["markdown"].read_text().startswith("# Evaluation of `demo`")
    image = imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    # Some pixels carry the student's red marker: the picture is not blank.
    red = (image[..., 0] > 0.7) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 20


def test_no_png_when_no_model_has_a_latency(tmp_path):
    data = sample_report()
    for entry in data["models"].values():
        entry["latencyP95Ms"] = None
    paths = report.write_report(data, tmp_path / "evaluation.json")
    assert "png" not in paths
    assert not (tmp_path / "evaluation.png").exists()
    assert "![" not in paths["markdown"].read_text()
