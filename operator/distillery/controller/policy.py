"""Verdicts outside the stage walk: the spec-change policy, the operator's guard, a child the API
server refuses. Each stops the job (or holds it) before or instead of the next stage. Pure."""

from __future__ import annotations

import hashlib
import json

from distillery.api import ConditionType, DistillationJobSpec, DistillationJobStatus, Phase, Reason
from distillery.contract import stages
from distillery.controller.observe import Admission, Observed
from distillery.controller.steps import Cond, Step, stop_everything, with_progress

C = ConditionType


def not_admitted(admission: Admission, observed: Observed) -> Step:
    """The operator's guard refuses the spec (Failed, naming each field), or waits for a Secret it must read."""
    if admission.denied:
        reasons = "; ".join(admission.denied)
        return Step(
            Phase.failed,
            "not allowed by this cluster's DistillationJob policy: " + reasons,
            (Cond(C.admitted, "False", Reason.policy_denied, reasons),),
            delete=stop_everything(observed),
        )
    waiting = ", ".join(admission.missing_secrets)
    message = f"waiting for Secret {waiting} to exist (the operator's guard checks its label)"
    return Step(Phase.pending, message, (Cond(C.admitted, "Unknown", Reason.waiting_for_secret, message),))


# Spec sections whose change after the start would leave children of an old spec running.
IMMUTABLE_SECTIONS = (
    "teacher",
    "student",
    "data",
    "generation",
    "training",
    "evaluation",
    "storage",
    "queue_name",
)


def spec_hashes(spec: DistillationJobSpec) -> dict[str, str]:
    """A short hash of each immutable section, as the job started with it (kept in status.specHashes).

    Asked on every reconcile, of the same spec object (`reconcile.parse` validates a spec once): its
    hashes are kept with it (a strong reference, so that its id is not reused), a bounded few thousand."""
    kept = _hashed.get(id(spec))
    if kept is not None and kept[0] is spec:
        return dict(kept[1])
    if len(_hashed) > 4096:
        _hashed.clear()
    out = _spec_hashes(spec)
    _hashed[id(spec)] = (spec, out)
    return dict(out)


_hashed: dict[int, tuple[DistillationJobSpec, dict[str, str]]] = {}


def _spec_hashes(spec: DistillationJobSpec) -> dict[str, str]:
    out = {}
    for section in IMMUTABLE_SECTIONS:
        value = getattr(spec, section)
        dumped = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        out[DistillationJobSpec.model_fields[section].alias or section] = hashlib.sha256(
            text.encode()
        ).hexdigest()[:12]
    return out


def changed_sections(spec: DistillationJobSpec, status: DistillationJobStatus) -> list[str]:
    """The spec sections that differ from those the job started with (none before it started)."""
    if not status.spec_hashes:
        return []
    now = spec_hashes(spec)
    return [f"spec.{name}" for name, value in now.items() if status.spec_hashes.get(name, value) != value]


def spec_changed(changed: list[str], observed: Observed) -> Step:
    """The spec changed under a running job (an API server without the CRD's transition rule let it)."""
    message = (
        f"spec changed after the job started ({', '.join(changed)}); a DistillationJob's spec is immutable "
        "except suspend and ttlSecondsAfterFinished, so the job stops rather than run children of two specs: "
        "delete it and create it again (a claim with reclaimPolicy Retain, or an existing claimName, keeps its data)"
    )
    return Step(Phase.failed, message, delete=stop_everything(observed))


# The condition a refused child other than a stage Job belongs to (a stage Job: its stage's).
CHILD_CONDITION = {
    "pvc": C.data_generated,
    "teacher": C.teacher_ready,
    "teacher-service": C.teacher_ready,
    "teacher-policy": C.teacher_ready,
    "train-service": C.student_trained,
}


def child_condition(child: str) -> ConditionType:
    if child in stages.names():
        return stages.facts(child).condition
    return CHILD_CONDITION.get(child, C.teacher_ready)


def child_refused(step: Step, child: str, detail: str, observed: Observed) -> Step:
    """The API server refused a child with a 4xx other than 409/429: trying again cannot help."""
    condition = Cond(child_condition(child), "False", Reason.child_refused, detail)
    return Step(
        Phase.failed,
        f"the API server refused {detail}",
        (*step.conditions, condition),
        delete=stop_everything(observed),
        progress=with_progress(step.progress, summary="failed"),
    )
