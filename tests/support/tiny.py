"""examples/tiny.yaml as a cluster runs it, its claim, and what tests read back from the job.

The e2e and containers tiers run the same job on a claim laid out as hack/prepare_tiny.py lays
out build/tiny; these are the pieces both read: the job's status, the generation shards'
progress on the claim, and whether every input record was answered exactly once.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny.yaml"
NAMESPACE = "e2e"
CLAIM = "tiny-data"  # the PVC the job names; the harness maps it to the prepared directory

# The image's environment (what images/worker-cpu.Dockerfile and a CPU node would give the
# pods): a small KV cache, no hub access, no usage reporting.
POD_ENV = {
    "PYTHONUNBUFFERED": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# The objects the operator creates for the tiny job, as (resource, name).
CHILDREN = [
    ("apps/v1/deployments", "tiny-teacher"),
    ("v1/services", "tiny-teacher"),
    ("batch/v1/jobs", "tiny-check"),
    ("batch/v1/jobs", "tiny-generate"),
    ("batch/v1/jobs", "tiny-train"),
    ("batch/v1/jobs", "tiny-evaluate"),
]


def tiny_job() -> dict[str, Any]:
    """examples/tiny.yaml, in the test's namespace, with the storage claim a cluster needs."""
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["namespace"] = NAMESPACE
    storage = job["spec"].setdefault("storage", {})
    # tiny.yaml's storage.path serves `distillery run`; in a cluster the job names a claim.
    storage.setdefault("pvc", {"claimName": CLAIM})
    return job


def claim_object() -> dict[str, Any]:
    """The claim the job names, bound, as an administrator (or hack/kind-e2e.sh) made it beforehand."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound"},
    }


def prepare_claim(root: Path, tiny_models: dict[str, Path], *, copy_models: bool) -> Path:
    """The claim's contents, laid out as hack/prepare_tiny.py lays out build/tiny.

    The models are the session's tiny models (tests/fixtures_models.py: the same make_tiny_models
    call, seed and pretraining prepare_tiny.py uses), linked rather than trained a second time,
    or copied (`copy_models`: a link would point outside a container); the data is written by
    prepare_tiny.py's own writer.
    """
    import prepare_tiny  # hack/ is on sys.path (tests/conftest.py)

    (root / "models").mkdir(parents=True, exist_ok=True)
    for name in ("teacher", "student"):
        if copy_models:
            shutil.copytree(tiny_models[name], root / "models" / name, symlinks=False)
        else:
            (root / "models" / name).symlink_to(tiny_models[name], target_is_directory=True)
    prepare_tiny.write_data(root)
    return root


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_each_input_answered_once(job: dict[str, Any], storage: Path) -> None:
    """Every input record answered exactly once: accepted or rejected, never both, never twice."""
    generated = storage / "jobs" / job["metadata"]["name"] / "generated"
    for split in ("train", "validation"):
        ids = [
            r["id"] for path in sorted((generated / split).glob("shard-*.jsonl")) for r in read_jsonl(path)
        ]
        assert len(ids) == len(set(ids)), f"{split}: duplicated records"
        assert sorted(ids) == sorted(input_ids(job, storage, split)), f"{split}: records lost or invented"
        assert not list((generated / split).glob("*.partial")), f"{split}: partial files left behind"


def input_ids(job: dict[str, Any], storage: Path, split: str) -> list[str]:
    """Ids of the input records generation had to answer, as the generate stage names them."""
    from distillery.errors import parse_job
    from distillery.tasks import record_id

    spec = parse_job(copy.deepcopy(job)).spec
    path = storage / getattr(spec.data, split)
    limit = spec.data.max_train_samples if split == "train" else spec.data.max_validation_samples
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and (limit is None or len(ids) < limit):
            ids.append(record_id(spec.data, json.loads(line), number))
    return ids


def shard_size(job: dict[str, Any], storage: Path, index: int) -> int:
    """Input records shard `index` of 2 answers (record K belongs to shard K mod 2)."""
    return sum(len(input_ids(job, storage, split)[index::2]) for split in ("train", "validation"))


def partial_records(storage: Path) -> dict[int, int]:
    """Lines written so far by each running shard (index -> lines in its .partial files)."""
    counts: dict[int, int] = {}
    for path in (storage / "jobs" / "tiny" / "generated").glob("*/shard-*.partial"):
        index = int(path.name.split("-")[1])
        counts[index] = counts.get(index, 0) + sum(1 for _ in path.open())
    return counts
