"""Prompts, references, ids and answer matching per task type (distillery.tasks)."""

from __future__ import annotations

import pytest

from distillery.api import DataSpec, TaskType
from distillery.tasks import (
    RecordError,
    answers_match,
    build_messages,
    extract_answer,
    normalize_number,
    record_id,
    reference_of,
)

pytestmark = pytest.mark.unit

LABELS = ["entailment", "neutral", "contradiction"]


def data(task: str, **extra) -> DataSpec:
    return DataSpec.model_validate({"taskType": task, "train": "t.jsonl", **extra})


def test_nli_prompt_names_premise_hypothesis_and_labels():
    messages = build_messages(data("nli"), {"prompt": "A dog runs.", "context": "An animal moves."})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "entailment, neutral, contradiction" in messages[0]["content"]
    assert "Premise: A dog runs." in messages[1]["content"]
    assert "Hypothesis: An animal moves." in messages[1]["content"]


def test_nli_without_hypothesis_names_the_field():
    with pytest.raises(RecordError, match=r"'context' \(data.fields.context\) is missing"):
        build_messages(data("nli"), {"prompt": "A dog runs."})


def test_field_mapping_and_custom_system_prompt():
    spec = data("qa", fields={"prompt": "question", "context": "passage"}, systemPrompt="Be brief.")
    messages = build_messages(spec, {"question": "Capital of France?", "passage": "Paris is..."})
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"] == "Context: Paris is...\n\nQuestion: Capital of France?"


def test_qa_without_context_drops_the_context_block():
    messages = build_messages(data("qa"), {"prompt": "Capital of France?"})
    assert messages[-1]["content"] == "Question: Capital of France?"


def test_template_uses_any_record_field_and_names_a_missing_one():
    spec = data("summarization", promptTemplate="Title: {title}\n{prompt}", systemPrompt="")
    assert build_messages(spec, {"title": "T", "prompt": "Body"}) == [
        {"role": "user", "content": "Title: T\nBody"}
    ]
    with pytest.raises(RecordError, match=r"uses \{title\}.*no field 'title'"):
        build_messages(spec, {"prompt": "Body"})


def test_conversation_keeps_history_up_to_the_last_user_turn():
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
    ]
    spec = data("conversation", systemPrompt="Be kind.")
    messages = build_messages(spec, {"messages": chat})
    assert messages[0] == {"role": "system", "content": "Be kind."}
    assert messages[1:] == chat[:3]
    assert reference_of(spec, {"messages": chat}) == "fine"


def test_conversation_without_user_turn_is_refused():
    with pytest.raises(RecordError, match="no user message"):
        build_messages(data("conversation"), {"messages": [{"role": "system", "content": "x"}]})
    with pytest.raises(RecordError, match=r"'messages'\[0\]"):
        build_messages(data("conversation"), {"messages": [{"role": "bot", "content": "x"}]})


def test_reference_and_label_index():
    assert reference_of(data("math"), {"prompt": "1+1", "answer": 2}) == "2"
    assert reference_of(data("nli"), {"answer": 2}) == "contradiction"
    assert reference_of(data("qa"), {"prompt": "q"}) is None


def test_record_id_uses_the_field_else_a_stable_unique_hash():
    spec = data("math")
    assert record_id(spec, {"id": 7, "prompt": "x"}, 3) == "7"
    first = record_id(spec, {"prompt": "x"}, 3)
    assert first == record_id(spec, {"prompt": "x"}, 3)
    assert first != record_id(spec, {"prompt": "x"}, 4)
    assert first != record_id(spec, {"prompt": "y"}, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 apples plus 4 apples is 7 apples.\nAnswer: 7", "7"),
        ("so the total is $1,234.50", "1234.5"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("The answer is \\boxed{-3}. Check: 5 - 8 = -3", "-3"),
        ("It is 10.0 in the end", "10"),
        ("no number here", None),
    ],
)
def test_math_final_answer(text, expected):
    assert extract_answer(TaskType.math, text, []) == expected


def test_math_match_against_gsm8k_style_reference():
    assert answers_match(TaskType.math, "Answer: 72", "She sold 48+24 = 72 clips\n#### 72", [])
    assert not answers_match(TaskType.math, "Answer: 71", "72", [])
    assert normalize_number("3/4") == "0.75"


def test_nli_label_named_first_wins_and_index_reference():
    assert extract_answer(TaskType.nli, "Entailment. It is no contradiction.", LABELS) == "entailment"
    assert extract_answer(TaskType.nli, "I am not sure", LABELS) is None
    assert answers_match(TaskType.nli, "neutral", "1", LABELS)
    assert not answers_match(TaskType.nli, "neutral", "contradiction", LABELS)


def test_qa_normalised_and_contained_answers():
    assert extract_answer(TaskType.qa, "Answer: The Eiffel Tower!\nIt is in Paris.", []) == "eiffel tower"
    assert answers_match(TaskType.qa, "The capital is Paris.", "paris", [])
    assert not answers_match(TaskType.qa, "Lyon", "Paris", [])
    assert not answers_match(TaskType.qa, "Parisian food", "Paris", [])


def test_free_text_tasks_have_no_single_answer():
    assert extract_answer(TaskType.summarization, "a summary", []) is None
    assert answers_match(TaskType.conversation, "Hello!", "hello", [])
