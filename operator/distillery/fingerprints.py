"""Stage fingerprints: a hash of everything that decides a stage's output, so a stale result is never reused.

Each stage's fingerprint covers the spec sections it reads (not where or how its pods run), the
identity of the input data (`datasource.identity`: an object's ETag, size and time, a local
file's sha256), the fingerprint of the stage before it, and the job's uid on a cluster (a new
DistillationJob under an old name never inherits the old one's results). So a change anywhere
upstream changes every fingerprint after it.

    generate   teacher (what answers: model or endpoint, image, dtype, ...), data, generation
               (sampling, filters, shards), the inputs, the uid
    train      student (model, tokenizer), training (hyperparameters, gpus), generate's
    evaluate   evaluation without its gate, data, the validation input, train's

The gate is left out of evaluate's fingerprint on purpose: a changed gate re-judges the stored
scores (`evaluation.evaluate.rejudge`) instead of serving every model again. `verdict` covers
the gate and `output` for `distillery run`'s bookkeeping. Everything here is pure but `inputs`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.api import POD_SETTINGS_FIELDS, DistillationJob, Model, StageRuntime

# Where and how a stage's pods run: never part of what it produces.
_PLACEMENT = set(StageRuntime.model_fields)
_TEACHER_PLACEMENT = {
    "resources",
    "node_selector",
    "tolerations",
    "startup_timeout_seconds",
    "hf_token_secret",
    "served_model_name",
    *POD_SETTINGS_FIELDS,
}
# How fast or how stubbornly generation works, not what it keeps.
_GENERATION_PACE = {
    "parallelism",
    "concurrency",
    "request_timeout_seconds",
    "max_retries",
    "smoke_test_prompts",
    "min_success_ratio",
}
_ENDPOINT_SECRET = {"api_key_secret"}


def _dump(model: Model | None, exclude: set[str] = frozenset()) -> Any:  # type: ignore[assignment]
    if model is None:
        return None
    return model.model_dump(mode="json", by_alias=True, exclude=exclude)


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def uid(job: DistillationJob) -> str | None:
    """The job's uid on a cluster (the API server sets it); None for `distillery run`."""
    return (job.metadata.model_extra or {}).get("uid")


def inputs(job: DistillationJob, root: Path | str | None) -> dict[str, Any]:
    """The identity of each input (`data.train`, `data.validation`); raises datasource.InputError."""
    from distillery.datasource import identity

    data, store = job.spec.data, job.spec.storage.object_store
    found = {"train": identity(data.train, root=root, store=store, field="data.train")}
    if data.validation:
        found["validation"] = identity(data.validation, root=root, store=store, field="data.validation")
    return found


@dataclass(frozen=True)
class Fingerprints:
    generate: str
    train: str
    evaluate: str

    def of(self, stage: str) -> str:
        return getattr(self, stage)

    def as_dict(self) -> dict[str, str]:
        return {"generate": self.generate, "train": self.train, "evaluate": self.evaluate}


def generation(job: DistillationJob, identities: dict[str, Any]) -> str:
    spec = job.spec
    teacher = _dump(spec.teacher, _TEACHER_PLACEMENT | {"endpoint"})
    teacher["endpoint"] = _dump(spec.teacher.endpoint, _ENDPOINT_SECRET)
    return digest(
        {
            "teacher": teacher,
            "data": _dump(spec.data),
            "generation": _dump(spec.generation, _PLACEMENT | _GENERATION_PACE),
            "inputs": identities,
            "uid": uid(job),
        }
    )


def training(job: DistillationJob, upstream: str) -> str:
    spec = job.spec
    return digest(
        {
            "student": _dump(spec.student, {"served_model_name"}),
            "training": _dump(spec.training, _PLACEMENT | {"checkpoint_every_steps"}),
            "upstream": upstream,
        }
    )


def evaluation(job: DistillationJob, identities: dict[str, Any], upstream: str) -> str:
    spec = job.spec
    return digest(
        {
            "evaluation": _dump(spec.evaluation, _PLACEMENT | {"gate"}),
            "data": _dump(spec.data),
            "validation": identities.get("validation"),
            "upstream": upstream,
        }
    )


def verdict(job: DistillationJob, evaluate: str) -> str:
    """What decides the verdict and the export once the scores are known: the gate and `output`."""
    return digest(
        {"evaluate": evaluate, "gate": _dump(job.spec.evaluation.gate), "output": _dump(job.spec.output)}
    )


def chain(job: DistillationJob, identities: dict[str, Any]) -> Fingerprints:
    """Every stage's fingerprint, each covering the one before it."""
    generate = generation(job, identities)
    train = training(job, generate)
    return Fingerprints(generate, train, evaluation(job, identities, train))


def for_job(job: DistillationJob, root: Path | str | None) -> Fingerprints:
    """The chain for a job whose inputs are looked at now (I/O: a stat per URI, a hash per local file)."""
    return chain(job, inputs(job, root))
