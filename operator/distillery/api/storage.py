"""The parts of a DistillationJob's spec about data in and artifacts out: object stores, the export, decontamination,
and the job's own storage (a PVC, or a local directory for `distillery run`).

Re-exported by `distillery.api`, which is where the rest of the code imports them from.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from distillery.api.base import NAME_MAX, PATH_MAX, Model, Rule
from distillery.api.kube_types import AbsolutePath, DnsSubdomain, PositiveQuantity, SecretKey

# A location that starts like a URI (`scheme:`) is read as one, so a mistyped `s3:/b/k` or an unsupported `gs://b/k`
# is refused rather than taken as a path on the storage. One regex for Python and CEL (RE2 subset).
LOOKS_LIKE_URI = r"^[A-Za-z][A-Za-z0-9+.-]+:"
# s3://bucket/key; the bucket as S3 names them: 3-63 lowercase letters, digits, dots and hyphens.
# s3 is the one scheme (S3 and S3-compatible stores: MinIO, Ceph RGW, ...).
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$"
_S3_URI_PY = re.compile(S3_URI[:-1] + r"\Z")  # Python's `$` also matches before a final newline; RE2's not


def is_uri(value: str | None) -> bool:
    """Whether a location is an object-store URI (`s3://bucket/key`) rather than a path on the storage."""
    return bool(value) and "://" in value  # type: ignore[operator]


def uri_rule(field: str, optional: bool) -> Rule:
    """A location that starts like a URI must be `s3://bucket/key`; anything else is a path on the storage."""
    cel = f"!self.{field}.matches('{LOOKS_LIKE_URI}') || self.{field}.matches('{S3_URI}')"
    if optional:
        cel = f"!has(self.{field}) || {cel}"

    def holds(model: Model) -> bool:
        value = getattr(model, _snake(field))
        return value is None or not re.match(LOOKS_LIKE_URI, value) or bool(_S3_URI_PY.match(value))

    message = (
        "expected a path on the job's storage or an s3://bucket/key URI "
        "(s3 is the one scheme; a bucket is 3-63 lowercase letters, digits, dots and hyphens)"
    )
    return Rule(field, message, cel, holds)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class Decontamination(Model):
    """Training prompts too close to a validation prompt are dropped before generation."""

    enabled: bool = Field(True, description="Drop training prompts that overlap the validation prompts.")
    ngram_size: int = Field(
        13,
        ge=1,
        le=64,
        description="Words per n-gram (lowercased, punctuation dropped); a prompt shorter than this is "
        "one n-gram of all its words, so it matches an identical short prompt.",
    )
    max_overlap: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="A training prompt is dropped when more than this fraction of its n-grams occur in "
        "any validation prompt. 0 drops a prompt that shares a single n-gram (the 13-gram rule of "
        "GPT-3's contamination study).",
    )


class ObjectStoreCredentials(Model):
    name: DnsSubdomain = Field(description="Secret in the job's namespace holding the access keys.")
    access_key_id_key: SecretKey = Field(
        "AWS_ACCESS_KEY_ID", description="Key of the access key id in that Secret."
    )
    secret_access_key_key: SecretKey = Field(
        "AWS_SECRET_ACCESS_KEY", description="Key of the secret access key in that Secret."
    )


class ObjectStoreSpec(Model):
    """How stage pods reach the object store that `s3://` locations name."""

    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://",
        max_length=PATH_MAX,
        description="Endpoint of an S3-compatible store (MinIO, Ceph RGW), e.g. `http://minio.storage:9000`; "
        "empty uses AWS S3.",
    )
    region: str | None = Field(
        None, max_length=NAME_MAX, description="Region of the bucket(s), e.g. `us-east-1`."
    )
    credentials_secret: ObjectStoreCredentials | None = Field(
        None,
        description="Secret whose keys become AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in every stage pod that "
        "reads or writes the store, by reference (never copied into the job, its status or its report). "
        "Empty: the pods' own credentials (e.g. IRSA, a node role).",
    )


class OutputSpec(Model):
    RULES = (uri_rule("uri", optional=False),)

    uri: str = Field(
        min_length=1,
        max_length=PATH_MAX,
        description="Where the distilled student (safetensors, tokenizer, config, chat template), the "
        "evaluation report (JSON, Markdown, PNG) and a model card (README.md) are written: an "
        "`s3://bucket/prefix` URI or a path on the job's storage.",
    )
    when: Literal["gatePassed", "always"] = Field(
        "gatePassed",
        description="`gatePassed`: only when the quality gate passes; `always`: whatever the verdict.",
    )


# ---------------------------------------------------------------- the job's storage


class PvcSpec(Model):
    RULES = (
        Rule(
            "claimName",
            "set exactly one of claimName (existing) or size (create one)",
            "has(self.claimName) != has(self.size)",
            lambda p: (p.claim_name is None) != (p.size is None),
        ),
        Rule(
            "accessModes",
            "expected ReadWriteOncePod alone (Kubernetes refuses it with other modes)",
            "!('ReadWriteOncePod' in self.accessModes) || size(self.accessModes) == 1",
            lambda p: "ReadWriteOncePod" not in p.access_modes or len(p.access_modes) == 1,
        ),
    )

    claim_name: DnsSubdomain | None = Field(None, description="Use this existing PersistentVolumeClaim.")
    size: PositiveQuantity | None = Field(None, description="Create a claim of this size, e.g. `100Gi`.")
    storage_class_name: DnsSubdomain | None = Field(None, description="Storage class of a created claim.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"],
        min_length=1,
        max_length=3,
        description="Access modes of a created claim; shards on several nodes need ReadWriteMany.",
    )
    reclaim_policy: Literal["Retain", "Delete"] = Field(
        "Retain",
        description="What happens to a created claim when the job is deleted (or its TTL passes): `Retain` "
        "keeps it and its data (the student, the report, the generated records); `Delete` removes it with "
        "the job. An existing claim (`claimName`) is never deleted.",
    )


class StorageSpec(Model):
    RULES = (
        Rule(
            "mountPath",
            "expected a path outside /dev/shm (every pod mounts its shared memory there)",
            "self.mountPath != '/dev/shm' && !self.mountPath.startsWith('/dev/shm/')",
            lambda s: s.mount_path != "/dev/shm" and not s.mount_path.startswith("/dev/shm/"),
        ),
    )

    pvc: PvcSpec | None = Field(None, description="The volume mounted at `mountPath` in every pod.")
    mount_path: AbsolutePath = Field("/data", description="Where the storage is mounted in pods.")
    path: str | None = Field(
        None,
        max_length=PATH_MAX,
        description="Local directory used by `distillery run` (no cluster); relative to the spec file.",
    )
    object_store: ObjectStoreSpec | None = Field(
        None, description="Endpoint and credentials for the `s3://` locations in `data` and `output`."
    )
