"""The optional guard a cluster admin turns on: what a DistillationJob may make its pods do.

Creating a DistillationJob lets a namespace user choose the images the operator's pods run,
have those pods read the Secrets the spec names, and tolerate taints (GPU nodes, dedicated
pools). The guard narrows that (chart: `operator.guard`; operator: the guard_* settings,
controller/settings.py):

- images: only under the allowed prefixes (`registry.corp/ml/`), compared in the form a
  container runtime resolves (`vllm/vllm-openai` is `docker.io/vllm/vllm-openai`);
- Secrets: only those carrying an opt-in label (`distillery.dev/usable=true`), so a job cannot
  mount a namespace's other Secrets (its service-account tokens, a database password);
- tolerations: only of the allowed taint keys (a toleration without a key tolerates every taint).

Checked before anything of the job runs (its check Job is a pod too); a denial fails the job
with the fields named. Pure, except for the Secrets' labels, which the caller reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from distillery.api import DistillationJobSpec
from distillery.manifests.common import BuildConfig


@dataclass(frozen=True)
class Guard:
    image_prefixes: tuple[str, ...] = ()  # empty: any image
    secret_label: str = ""  # "key=value" or "key" (present with any value); empty: any Secret
    toleration_keys: tuple[str, ...] | None = None  # None: any toleration; (): none

    @property
    def enabled(self) -> bool:
        return bool(self.image_prefixes or self.secret_label) or self.toleration_keys is not None

    def describe(self) -> str:
        """One line for the operator's start-up log."""
        if not self.enabled:
            return "guard off: jobs may use any image, Secret and toleration"
        parts = [
            f"images under {', '.join(self.image_prefixes)}" if self.image_prefixes else "any image",
            f"Secrets labelled {self.secret_label}" if self.secret_label else "any Secret",
            "any toleration"
            if self.toleration_keys is None
            else f"tolerations of {', '.join(self.toleration_keys) or 'no taint'}",
        ]
        return "guard on: " + "; ".join(parts)


# ---------------------------------------------------------------- what a spec makes pods use


def images(spec: DistillationJobSpec, config: BuildConfig) -> list[tuple[str, str]]:
    """(field, image) of every image the job's pods would run; the operator's own defaults are
    named by the field that would override them."""
    out = []
    if spec.teacher.model is not None:
        out.append(("spec.teacher.image", spec.teacher.image))
    for section in ("generation", "training", "evaluation"):
        runtime = getattr(spec, section)
        gpus = getattr(runtime, "gpus", 0)
        if runtime.image:  # the operator's configured worker images are the admin's own choice
            out.append((f"spec.{section}.image", config.worker_image_for(runtime, gpus)))
    return out


def secrets(spec: DistillationJobSpec) -> list[tuple[str, str]]:
    """(field, Secret name) of every Secret the job's pods would read."""
    out = []
    if spec.teacher.hf_token_secret is not None and spec.teacher.model is not None:
        out.append(("spec.teacher.hfTokenSecret.name", spec.teacher.hf_token_secret.name))
    endpoint = spec.teacher.endpoint
    if endpoint is not None and endpoint.api_key_secret is not None:
        out.append(("spec.teacher.endpoint.apiKeySecret.name", endpoint.api_key_secret.name))
    store = spec.storage.object_store
    if store is not None and store.credentials_secret is not None:
        out.append(("spec.storage.objectStore.credentialsSecret.name", store.credentials_secret.name))
    return out


def tolerations(spec: DistillationJobSpec) -> list[tuple[str, str | None]]:
    """(field, taint key) of every toleration the job's pods would carry (None: every taint)."""
    out = []
    if spec.teacher.model is not None:
        out += [(f"spec.teacher.tolerations[{i}]", t.key) for i, t in enumerate(spec.teacher.tolerations)]
    for section in ("generation", "training", "evaluation"):
        runtime = getattr(spec, section)
        out += [(f"spec.{section}.tolerations[{i}]", t.key) for i, t in enumerate(runtime.tolerations)]
    return out


# ---------------------------------------------------------------- the verdict


def normalize_image(reference: str) -> str:
    """An image reference as a container runtime resolves it: registry host and path in full."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return reference
    if not rest:
        return f"docker.io/library/{reference}"
    return f"docker.io/{reference}"


def resolve_prefix(prefix: str) -> str:
    """A prefix in resolved form: a registry host (with an optional path) as written, anything
    else a Docker Hub namespace or repository (`vllm` is `docker.io/vllm`)."""
    path = prefix.rstrip("/")
    first = path.partition("/")[0]
    if "." in first or ":" in first or first == "localhost":
        return path
    return f"docker.io/{path}"


def image_allowed(image: str, prefixes: tuple[str, ...]) -> bool:
    """Under one of the prefixes, at a boundary: `registry.corp/ml` allows `registry.corp/ml/x`
    and `registry.corp/ml:1`, never `registry.corp/mlevil/x`."""
    resolved = normalize_image(image)
    for prefix in prefixes:
        wanted = resolve_prefix(prefix)
        if resolved == wanted or (resolved.startswith(wanted) and resolved[len(wanted)] in "/:@"):
            return True
    return False


def label_matches(labels: Mapping[str, str], selector: str) -> bool:
    key, sep, value = selector.partition("=")
    return key in labels and (not sep or labels[key] == value)


def denials(
    spec: DistillationJobSpec,
    guard: Guard,
    config: BuildConfig,
    secret_labels: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """What the guard refuses in `spec`, one "field: why" each. `secret_labels` holds the labels of
    each named Secret that exists (a missing one is the caller's to wait for)."""
    out = []
    if guard.image_prefixes:
        allowed = ", ".join(guard.image_prefixes)
        for field, image in images(spec, config):
            if not image_allowed(image, guard.image_prefixes):
                out.append(f"{field}: image {image!r} is not under an allowed prefix ({allowed})")
    if guard.secret_label:
        for field, name in secrets(spec):
            labels = secret_labels.get(name)
            if labels is not None and not label_matches(labels, guard.secret_label):
                out.append(
                    f"{field}: Secret {name!r} lacks the label {guard.secret_label} that lets jobs use it"
                )
    if guard.toleration_keys is not None:
        allowed = ", ".join(guard.toleration_keys) or "none"
        for field, key in tolerations(spec):
            if key is None:
                out.append(
                    f"{field}: a toleration without a key tolerates every taint (allowed keys: {allowed})"
                )
            elif key not in guard.toleration_keys:
                out.append(f"{field}: toleration of taint {key!r} is not allowed (allowed keys: {allowed})")
    return out
