"""What each task type means for a record: the chat sent to a model, the reference, the answer.

Pure functions shared by generation (build the teacher's prompt, verify its answer) and
evaluation (the same prompt for every compared model, the same answer matching). A record
is one parsed line of the input JSONL; which of its fields are read is set by
`data.fields` (see `FieldMapping` in `distillery.api`).

Task types:
- nli            premise (`prompt`) + hypothesis (`context`) -> one of `data.labels`
- qa             question (`prompt`) + optional passage (`context`) -> a short answer
- math           problem (`prompt`) -> a final number
- summarization  document (`prompt`) -> a summary
- conversation   chat `messages` -> the next assistant turn
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from decimal import Decimal, InvalidOperation
from typing import Any

from distillery.api import DataSpec, TaskType

# Built-in system prompts; `data.systemPrompt` replaces them. Short and explicit about the
# answer format, so that `extract_answer` can find the answer in the teacher's text.
DEFAULT_SYSTEM_PROMPTS: dict[TaskType, str | None] = {
    TaskType.nli: "You judge whether a premise entails a hypothesis. Answer with exactly one word: {labels}.",
    TaskType.qa: "Answer the question. If a context is given, answer from it. Give a short answer.",
    TaskType.math: "Solve the problem step by step. End with a final line of the form 'Answer: <number>'.",
    TaskType.summarization: "Summarize the text faithfully in a few sentences.",
    TaskType.conversation: None,  # a chat carries its own system message, if any
}

# Built-in user-message templates; `data.promptTemplate` replaces them. `{prompt}` and
# `{context}` are the mapped fields; `{labels}` is the nli label list.
DEFAULT_TEMPLATES: dict[TaskType, str] = {
    TaskType.nli: "Premise: {prompt}\nHypothesis: {context}\nAnswer with one of: {labels}.",
    TaskType.qa: "Context: {context}\n\nQuestion: {prompt}",
    TaskType.math: "{prompt}",
    TaskType.summarization: "Summarize the following text.\n\n{prompt}",
}
QA_TEMPLATE_WITHOUT_CONTEXT = "Question: {prompt}"

# Tasks whose answers can be checked against a reference.
VERIFIABLE = (TaskType.nli, TaskType.qa, TaskType.math)


class RecordError(ValueError):
    """An input record that cannot be turned into a prompt; the message names the field."""


def _text_field(data: DataSpec, record: dict, attribute: str, required: bool) -> str | None:
    name = getattr(data.fields, attribute)
    value = record.get(name)
    if value is None or value == "":
        if required:
            raise RecordError(
                f"field {name!r} (data.fields.{attribute}) is missing; a {data.task_type.value} record needs it"
            )
        return None
    if isinstance(value, (dict, list)):
        raise RecordError(
            f"field {name!r} (data.fields.{attribute}) is a {type(value).__name__}; expected text"
        )
    return str(value)


class _Fields(dict):
    """format_map() source that names the missing field instead of raising a bare KeyError."""

    def __missing__(self, key: str) -> Any:
        raise RecordError(f"data.promptTemplate uses {{{key}}}, but the record has no field {key!r}")


def _template_values(data: DataSpec, record: dict, prompt: str | None, context: str | None) -> _Fields:
    values = _Fields(record)
    values["prompt"] = prompt if prompt is not None else record.get("prompt", "")
    values["context"] = context if context is not None else record.get("context", "")
    values["labels"] = ", ".join(data.labels)
    return values


def system_prompt(data: DataSpec) -> str | None:
    """The system message for this data: `data.systemPrompt`, else the task type's default."""
    text = data.system_prompt if data.system_prompt is not None else DEFAULT_SYSTEM_PROMPTS[data.task_type]
    return text.replace("{labels}", ", ".join(data.labels)) if text else None


def _conversation(data: DataSpec, record: dict) -> list[dict]:
    name = data.fields.messages
    messages = record.get(name)
    if not isinstance(messages, list) or not messages:
        raise RecordError(
            f"field {name!r} (data.fields.messages) must be a non-empty list of {{role, content}} messages"
        )
    for position, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("content"), str)
            or message.get("role") not in ("system", "user", "assistant")
        ):
            raise RecordError(
                f"field {name!r}[{position}] must be {{'role': system|user|assistant, 'content': text}}"
            )
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise RecordError(f"field {name!r} has no user message to answer")
    history = [{"role": m["role"], "content": m["content"]} for m in messages[: last_user + 1]]
    system = system_prompt(data)
    if system and history[0]["role"] != "system":
        history.insert(0, {"role": "system", "content": system})
    return history


def build_messages(data: DataSpec, record: dict) -> list[dict]:
    """The chat messages sent to a model for this record (system prompt + user message, or a chat).

    Raises RecordError naming the field when the record lacks what its task type needs.
    """
    if data.task_type is TaskType.conversation:
        return _conversation(data, record)
    prompt = _text_field(data, record, "prompt", required=data.prompt_template is None)
    context = _text_field(
        data, record, "context", required=data.prompt_template is None and data.task_type is TaskType.nli
    )
    template = data.prompt_template
    if template is None:
        template = DEFAULT_TEMPLATES[data.task_type]
        if data.task_type is TaskType.qa and context is None:
            template = QA_TEMPLATE_WITHOUT_CONTEXT
    try:
        user = template.format_map(_template_values(data, record, prompt, context))
    except (ValueError, IndexError, AttributeError) as error:
        raise RecordError(f"data.promptTemplate cannot be applied: {error}") from None
    system = system_prompt(data)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages


def reference_of(data: DataSpec, record: dict) -> str | None:
    """The record's reference answer or label as text; for a chat, the assistant turn after the last user turn."""
    value = record.get(data.fields.reference)
    if value is not None and value != "":
        if data.task_type is TaskType.nli and isinstance(value, int) and 0 <= value < len(data.labels):
            return data.labels[value]  # datasets such as MNLI store the label's index
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if data.task_type is TaskType.conversation:
        messages = record.get(data.fields.messages)
        if isinstance(messages, list) and messages:
            last = messages[-1]
            if (
                isinstance(last, dict)
                and last.get("role") == "assistant"
                and any(isinstance(m, dict) and m.get("role") == "user" for m in messages)
            ):
                return last.get("content")
    return None


def record_id(data: DataSpec, record: dict, line_number: int) -> str:
    """The record's id field when it has one; else its line number and a hash of its content."""
    value = record.get(data.fields.id)
    if value is not None and value != "":
        return str(value)
    digest = hashlib.sha1(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"L{line_number}-{digest[:10]}"


# ------------------------------------------------------------------ answers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
# Where a final answer is announced, most explicit first.
_MATH_MARKERS = (
    re.compile(r"\\boxed\{\s*\$?(" + _NUMBER + r")"),
    re.compile(r"####\s*\$?(" + _NUMBER + r")"),
    re.compile(r"answer\s*(?:is|:)?\s*[:=]?\s*\$?\s*(" + _NUMBER + r")", re.IGNORECASE),
)
_ANSWER_PREFIX = re.compile(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5'; '3/4' -> '0.75'; not a number -> None."""
    text = text.strip().replace(",", "").rstrip(".").lstrip("$")
    try:
        if "/" in text:
            numerator, denominator = text.split("/", 1)
            value = Decimal(numerator) / Decimal(denominator)
        else:
            value = Decimal(text)
    except (InvalidOperation, ZeroDivisionError, ValueError):
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _math_answer(text: str) -> str | None:
    for marker in _MATH_MARKERS:
        found = marker.findall(text)
        if found:
            return normalize_number(found[-1])
    numbers = re.findall(_NUMBER, text)
    return normalize_number(numbers[-1]) if numbers else None


def _nli_answer(text: str, labels: list[str]) -> str | None:
    # The label named first wins: "entailment, since it is no contradiction" is entailment.
    lowered = text.lower()
    best: tuple[int, str] | None = None
    for label in labels:
        match = re.search(r"\b" + re.escape(label.lower()) + r"\b", lowered)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


def _qa_answer(text: str) -> str | None:
    first = next((line for line in text.strip().splitlines() if line.strip()), "")
    answer = normalize_text(_ANSWER_PREFIX.sub("", first))
    return answer or None


def extract_answer(task: TaskType, text: str, labels: list[str]) -> str | None:
    """The answer a response gives: math: the final number, normalised; nli: the label it names;
    qa: its first line, normalised. None when none is found, or for free-text tasks
    (conversation, summarization), which have no single answer."""
    if task is TaskType.math:
        return _math_answer(text)
    if task is TaskType.nli:
        return _nli_answer(text, labels)
    if task is TaskType.qa:
        return _qa_answer(text)
    return None


def answers_match(task: TaskType, prediction: str, reference: str, labels: list[str]) -> bool:
    """Whether a response agrees with the reference answer.

    math: same final number. nli: same label (a reference may also be the label's index).
    qa: the normalised reference equals the answer, or appears in it as whole words
    ("Paris" matches "The capital is Paris."). Free-text tasks: normalised equality.
    """
    answer = extract_answer(task, prediction, labels)
    if task is TaskType.math:
        expected = normalize_number(reference)
        if expected is None:
            expected = _math_answer(reference)
        return answer is not None and answer == expected
    if task is TaskType.nli:
        expected = reference.strip()
        if expected.isdigit() and int(expected) < len(labels):
            expected = labels[int(expected)]
        return answer is not None and answer.lower() == expected.lower()
    if task is TaskType.qa:
        expected = normalize_text(reference)
        if not expected or answer is None:
            return False
        return answer == expected or f" {expected} " in f" {answer} "
    return normalize_text(prediction) == normalize_text(reference)
