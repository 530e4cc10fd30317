"""The student's and the teacher's tokenizers: loading one, the chat template a base model falls back to,
and the check that two tokenizers map text to the same ids. No torch.

Training renders the teacher's records with the student's tokenizer, evaluation prompts the
baseline with the same template, and `distillery run` checks the tokenizers before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery.api import DistillationJob, Problem, TrainingMethod
from distillery.errors import InvalidJob, one_line
from distillery.storage import resolve_model

# Used when the student's tokenizer has none (base models): ChatML, what most
# instruct models and vLLM expect. It is saved with the student so serving matches.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What each method that compares token ids is called in a refusal.
TOKEN_ID_METHODS = {
    TrainingMethod.kd: "logit KD",
    TrainingMethod.on_policy: "on-policy distillation (the teacher grades the student's token ids)",
}


def refuse(field: str, message: str) -> InvalidJob:
    return InvalidJob([Problem(field, message)])


def load_tokenizer(reference: str, field: str) -> Any:
    """A Hugging Face tokenizer from a directory or a hub id; InvalidJob naming `field` when it cannot load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(reference)
    except (OSError, ValueError) as error:
        raise refuse(field, f"cannot load a tokenizer from {reference!r}: {one_line(error)}") from None


def student_tokenizer(job: DistillationJob, root: Path) -> Any:
    """The student's tokenizer (`student.tokenizer`, else the student's model), as training loads it."""
    student = job.spec.student
    field = "spec.student.tokenizer" if student.tokenizer else "spec.student.model"
    return load_tokenizer(resolve_model(root, student.tokenizer or student.model), field)


def has_chat_template(model_dir: Path) -> bool:
    """Whether a model directory's tokenizer files carry a chat template."""
    import json

    if (model_dir / "chat_template.jinja").exists() or (model_dir / "chat_template.json").exists():
        return True
    config = model_dir / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def tokenizer_differences(student: Any, teacher: Any) -> list[str]:
    """What differs between two Hugging Face tokenizers for logit KD (empty: they match).

    Logit KD compares distributions token id by token id, so both must map the same text
    to the same ids: same vocabulary (added tokens included) and the same special tokens.
    """
    problems = []
    student_vocab, teacher_vocab = student.get_vocab(), teacher.get_vocab()
    if len(student_vocab) != len(teacher_vocab):
        problems.append(f"vocabulary size {len(student_vocab)} (student) vs {len(teacher_vocab)} (teacher)")
    else:
        differing = [token for token, index in student_vocab.items() if teacher_vocab.get(token) != index]
        if differing:
            shown = ", ".join(repr(t) for t in sorted(differing)[:3])
            problems.append(f"{len(differing)} tokens have different ids (e.g. {shown})")
    for name in ("eos_token", "bos_token", "unk_token"):
        mine, theirs = getattr(student, name, None), getattr(teacher, name, None)
        if mine != theirs:
            problems.append(f"{name} {mine!r} (student) vs {theirs!r} (teacher)")
    return problems


def check_same_tokenizer(job: DistillationJob, root: Path, student_tokenizer: Any) -> None:
    """`kd` and `onPolicy` compare token ids, so the teacher's tokenizer must equal the student's.

    An endpoint teacher's tokenizer cannot be loaded: `kd` is refused; `onPolicy` is checked
    when training starts, through the teacher's own answers (`onpolicy.probe_teacher`)."""
    teacher, method = job.spec.teacher, job.spec.training.method
    if method not in TOKEN_ID_METHODS or (teacher.model is None and method is TrainingMethod.on_policy):
        return
    if teacher.model is None:
        raise refuse(
            "spec.training.method",
            "is 'kd' but the teacher is an endpoint, whose tokenizer cannot be checked against the "
            "student's; use training.method: sft (sequence-level KD), which needs only the teacher's text",
        )
    teacher_tokenizer = load_tokenizer(resolve_model(root, teacher.model), "spec.teacher.model")
    differences = tokenizer_differences(student_tokenizer, teacher_tokenizer)
    if differences:
        raise refuse(
            "spec.training.method",
            f"is '{method.value}' but the student's and the teacher's tokenizers differ ("
            + "; ".join(differences)
            + f"); {TOKEN_ID_METHODS[method]} needs the same tokenizer. "
            "Use training.method: sft (sequence-level KD) instead",
        )
