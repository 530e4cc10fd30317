"""On-policy distillation's pure parts: the reverse KL on the teacher's top-k, which updates are on-policy,
the student's sampler, the teacher's grades as examples, and the refusals."""

from __future__ import annotations

import itertools

import pytest
import torch

from distillery.api import DistillationJob
from distillery.errors import InvalidJob
from distillery.serving.prompt_logprobs import TeacherCannotGrade, parse_prompt_logprobs
from distillery.training.data import collate
from distillery.training.kd import topk_kd_loss, topk_reverse_kl
from distillery.training.onpolicy import graded_example, is_on_policy, sample, tokens_disagreeing

pytestmark = pytest.mark.unit


def teacher_grades(logits: torch.Tensor, k: int, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What vLLM returns per position: the top-k ids and the sampled token, each once, with full-vocabulary
    log-probabilities; rows padded with -inf where the sampled token was already in the top-k."""
    logp = torch.log_softmax(logits, dim=-1)
    ids = torch.zeros(logits.shape[0], k + 1, dtype=torch.long)
    values = torch.full((logits.shape[0], k + 1), float("-inf"))
    for row in range(logits.shape[0]):
        listed = dict.fromkeys(logp[row].topk(k).indices.tolist())
        listed[int(sampled[row])] = None
        for column, token in enumerate(listed):
            ids[row, column], values[row, column] = token, logp[row, token]
    return ids, values


def full_reverse_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s, t = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    return (s.exp() * (s - t)).sum(-1).mean()


@pytest.fixture
def pair():
    torch.manual_seed(0)
    teacher = torch.randn(8, 50) * 2
    student = torch.randn(8, 50) * 2
    sampled = torch.distributions.Categorical(logits=student).sample()
    return teacher, student, sampled


def test_zero_when_the_student_is_the_teacher(pair):
    teacher, _, sampled = pair
    ids, values = teacher_grades(teacher, 5, sampled)
    assert topk_reverse_kl(teacher, ids, values).abs().item() < 1e-6
    assert topk_reverse_kl(teacher + 7.0, ids, values).abs().item() < 1e-6  # logits up to a constant


@pytest.mark.parametrize("k", [1, 5, 20])
def test_positive_when_they_differ_and_never_above_the_full_reverse_kl(pair, k):
    teacher, student, sampled = pair
    ids, values = teacher_grades(teacher, k, sampled)
    loss = topk_reverse_kl(student, ids, values)
    assert loss.item() > 1e-3
    # Binning is coarse-graining: the loss is a lower bound of the full-vocabulary reverse KL ...
    assert loss.item() <= full_reverse_kl(student, teacher).item() + 1e-5


def test_equal_to_the_full_reverse_kl_when_every_token_is_listed(pair):
    teacher, student, sampled = pair
    ids, values = teacher_grades(teacher, 50, sampled)
    assert topk_reverse_kl(student, ids, values).item() == pytest.approx(
        full_reverse_kl(student, teacher).item(), rel=1e-4
    )


def test_the_rest_bin_sees_student_mass_outside_the_teachers_top_k():
    """A student that agrees with the teacher on the listed tokens up to normalisation, but puts most of its
    mass elsewhere: renormalising on the top-k alone (as forward KD does) would call it perfect."""
    teacher = torch.tensor([[4.0, 3.0, 2.0] + [-6.0] * 7])
    student = teacher.clone()
    student[0, 3:] = 5.0  # the same ratios on tokens 0-2, but most mass on tokens the teacher rejects
    ids, values = teacher_grades(teacher, 3, torch.tensor([0]))
    assert topk_kd_loss(student, ids, values).item() < 1e-6  # renormalised: blind to it
    assert topk_reverse_kl(student, ids, values).item() > 1.0


def test_gradient_descent_on_the_loss_moves_the_student_to_the_teacher(pair):
    teacher, student, sampled = pair
    ids, values = teacher_grades(teacher, 5, sampled)
    student = student.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([student], lr=0.2)
    first = None
    for _ in range(400):
        loss = topk_reverse_kl(student, ids, values)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02 * first
    listed = torch.gather(torch.log_softmax(student.detach(), -1), 1, ids)
    valid = torch.isfinite(values)
    assert torch.allclose(listed[valid].exp(), values[valid].exp(), atol=0.02)


def test_padding_gives_finite_gradients_and_sum_is_mean_times_rows(pair):
    teacher, student, sampled = pair
    sampled = sampled.clone()
    sampled[0] = teacher[0].argmax()  # already in the top-k: that row is padded
    ids, values = teacher_grades(teacher, 3, sampled)
    assert (~torch.isfinite(values)).any()
    student = student.clone().requires_grad_(True)
    topk_reverse_kl(student, ids, values).backward()
    assert torch.isfinite(student.grad).all()
    mean, total = topk_reverse_kl(student, ids, values), topk_reverse_kl(student, ids, values, "sum")
    assert total.item() == pytest.approx(mean.item() * 8, rel=1e-5)
    assert topk_reverse_kl(student[:0], ids[:0], values[:0]).item() == 0.0


def test_a_teacher_top_k_holding_all_the_mass_is_not_infinite():
    teacher = torch.tensor([[30.0, 0.0, -30.0, -30.0]])  # token 0 has all of the mass, to float precision
    ids, values = teacher_grades(teacher, 1, torch.tensor([0]))
    loss = topk_reverse_kl(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), ids, values)
    assert torch.isfinite(loss) and loss.item() > 1.0


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.3, 0.29, 0.1])
def test_on_policy_updates_are_the_fraction_spread_evenly_and_decided_by_number(fraction):
    chosen = [step for step in range(100) if is_on_policy(step, fraction)]
    assert len(chosen) == round(100 * fraction)
    gaps = {b - a for a, b in itertools.pairwise(chosen)}
    assert max(gaps, default=1) - min(gaps, default=1) <= 1  # evenly spread
    assert chosen == [step for step in range(100) if is_on_policy(step, fraction)]  # no state: resume-safe


# ---------------------------------------------------------------- the sampler


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_sampling_is_repeatable_from_its_seed_and_stops_at_a_stop_token(tiny_lm):
    prompts = [[1, 5, 6, 7], [1, 8], [1, 9, 9]]

    def draw(seed: int, stops: set[int], n: int = 12) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return sample(
            tiny_lm, prompts, max_new_tokens=n, temperature=1.0, stop_ids=stops, pad_id=0, generator=generator
        )

    first = draw(1, set())
    assert first == draw(1, set()) and first != draw(2, set())
    assert [len(c) for c in first] == [12, 12, 12]
    stop = first[0][3]
    stopped = draw(1, {stop})
    assert stopped[0] == first[0][: first[0].index(stop) + 1]  # up to and including the stop token
    assert all(len(c) <= 12 and (c[-1] == stop or stop not in c) for c in stopped)


def test_left_padded_batches_sample_what_each_prompt_alone_would(tiny_lm):
    """Near-greedy sampling of a batch of different lengths equals each prompt's own greedy completion:
    the padding and the positions are right."""
    prompts = [[1, 5, 6, 7, 8, 9], [1, 8], [1, 9, 9]]

    def greedy(batch):
        return sample(
            tiny_lm,
            batch,
            max_new_tokens=6,
            temperature=1e-4,
            stop_ids=set(),
            pad_id=0,
            generator=torch.Generator().manual_seed(0),
        )

    assert greedy(prompts) == [greedy([p])[0] for p in prompts]


def test_the_sampler_leaves_the_model_in_training_mode(tiny_lm):
    tiny_lm.train()
    sample(
        tiny_lm,
        [[1, 2]],
        max_new_tokens=2,
        temperature=1.0,
        stop_ids=set(),
        pad_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    assert tiny_lm.training
    tiny_lm.eval()


# ---------------------------------------------------------------- the teacher's grades


def vllm_choice(sequence: list[int], top: int = 2) -> dict:
    """A /v1/completions choice as vLLM 0.32 writes it: None first, then {id: {logprob, rank, decoded_token}}."""
    entries = [None]
    for position in range(1, len(sequence)):
        entry = {
            str(100 + j): {"logprob": -1.0 - j, "rank": j + 1, "decoded_token": f"t{100 + j}"}
            for j in range(top)
        }
        entry[str(sequence[position])] = {
            "logprob": -3.5,
            "rank": 9,
            "decoded_token": f"t{sequence[position]}",
        }
        entries.append(entry)
    return {"index": 0, "text": "x", "prompt_logprobs": entries}


def test_grades_are_read_for_the_completion_only():
    sequence = [1, 2, 3, 4, 5]
    graded = parse_prompt_logprobs(vllm_choice(sequence), sequence, 3)
    assert graded.positions == [{100: -1.0, 101: -2.0, 4: -3.5}, {100: -1.0, 101: -2.0, 5: -3.5}]
    assert graded.decoded == ["t4", "t5"]


@pytest.mark.parametrize("broken", ["absent", "short", "token missing"])
def test_a_teacher_without_prompt_logprobs_cannot_grade(broken):
    sequence = [1, 2, 3]
    choice = vllm_choice(sequence)
    if broken == "absent":
        del choice["prompt_logprobs"]
    elif broken == "short":
        choice["prompt_logprobs"] = choice["prompt_logprobs"][:2]
    else:
        del choice["prompt_logprobs"][2]["3"]
    with pytest.raises(TeacherCannotGrade):
        parse_prompt_logprobs(choice, sequence, 1)


def test_graded_examples_line_up_with_the_tokens_they_grade():
    prompt, completion = [1, 2, 3], [7, 8]
    grades = [{7: -0.1, 9: -2.5}, {8: -0.2, 4: -1.9}]
    example = graded_example(prompt, completion, grades)
    assert (example.input_ids, example.prompt_length) == ([1, 2, 3, 7, 8], 3)
    batch = collate([example, graded_example([1, 2], [7], grades[:1])], pad_id=0)
    targets = batch["labels"][:, 1:]
    slots = batch["kd_slot"][:, 1:]
    for row in range(2):
        for position in range(targets.shape[1]):
            slot = int(slots[row, position])
            if slot >= 0:  # the graded row's ids hold the token the position predicts
                assert int(targets[row, position]) in batch["top_ids"][slot].tolist()
    assert int((slots >= 0).sum()) == 3 == batch["loss_tokens"]


def test_tokens_the_teacher_reads_differently_are_named():
    from distillery.serving.prompt_logprobs import Graded

    class Student:
        def __len__(self):
            return 10

        def decode(self, ids):
            return {5: "cat", 6: " sat", 7: "\ufffd"}[ids[0]]

    def graded(decoded, extra=0):
        return Graded([{5: -0.1, 6 + extra: -2.0}] * len(decoded), decoded)

    assert tokens_disagreeing(Student(), [1, 5, 6, 7], 1, graded(["cat", " sat", "x"])) == []
    assert tokens_disagreeing(Student(), [1, 5, 6], 1, graded(["cat", " mat"])) == [
        "id 6 is ' sat' to the student, ' mat' to the teacher"
    ]
    assert tokens_disagreeing(Student(), [1, 5], 1, graded(["cat"], extra=20)) == [
        "it ranks ids the student's tokenizer (10 tokens) does not have, e.g. [26]"
    ]


def test_teacher_ids_the_student_cannot_write_stay_in_the_other_bin():
    example = graded_example([1, 2], [3], [{3: -0.5, 7: -1.0, 99: -2.0}], vocab=50)
    assert example.teacher_top == {2: [(3, -0.5), (7, -1.0)]}


# ---------------------------------------------------------------- refusals


def on_policy_job(**teacher) -> DistillationJob:
    return DistillationJob.model_validate(
        {
            "metadata": {"name": "op"},
            "spec": {
                "teacher": teacher or {"model": "models/teacher"},
                "student": {"model": "models/student"},
                "data": {"taskType": "qa", "train": "train.jsonl"},
                "training": {"method": "onPolicy", "onPolicy": {"fraction": 0.5, "samplesPerPrompt": 2}},
            },
        }
    )


def test_a_teacher_that_cannot_grade_is_refused_naming_the_field_and_the_alternative():
    from distillery.training.student import grading_failed

    endpoint = on_policy_job(endpoint={"url": "https://llm.example.com/v1", "model": "big"})
    error = grading_failed(TeacherCannotGrade("no prompt logprobs"), endpoint, "https://llm.example.com/v1")
    assert isinstance(error, InvalidJob)
    assert str(error).startswith(
        "spec.teacher.endpoint: cannot grade the student's samples: no prompt logprobs"
    )
    assert "training.method: sft" in str(error)
    served = grading_failed(TeacherCannotGrade("x"), on_policy_job(), "http://teacher:8000/v1")
    assert str(served).startswith("spec.teacher.model: ")


def test_on_policy_settings_reach_the_loop():
    from distillery.training.student import train_config

    config = train_config(on_policy_job()).on_policy
    assert (config.fraction, config.samples_per_prompt, config.temperature, config.top_logprobs) == (
        0.5,
        2,
        1.0,
        20,
    )
    assert config.max_new_tokens == 512  # generation.maxTokens when onPolicy.maxTokens is empty
    assert (
        train_config(
            DistillationJob.model_validate(
                {
                    "metadata": {"name": "s"},
                    "spec": {
                        "teacher": {"model": "t"},
                        "student": {"model": "s"},
                        "data": {"taskType": "qa", "train": "x"},
                    },
                }
            )
        ).on_policy
        is None
    )


def _vllm_refusal_of_token_ids(token_ids: list[int], vocabulary: int) -> tuple[int, bytes]:
    """The HTTP answer vLLM's server gives a completion whose prompt ids are out of the teacher's
    vocabulary, made by vLLM's own code: the engine's check (`BaseRenderer.validate_token_ids`, called
    without a parameter by vllm/v1/engine/input_processor.py) and the server's error response
    (`create_error_response`, sent as `JSONResponse(model_dump(), status_code=error.code)`)."""
    from types import SimpleNamespace

    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
    from vllm.renderers.base import BaseRenderer

    # Only the two sizes the check reads: the tokenizer's largest id and the model's vocabulary.
    renderer = SimpleNamespace(
        tokenizer=SimpleNamespace(max_token_id=vocabulary - 1),
        model_config=SimpleNamespace(get_vocab_size=lambda: vocabulary),
    )
    with pytest.raises(Exception) as refused:  # whatever vLLM raises is what its server answers
        BaseRenderer.validate_token_ids(renderer, token_ids)
    response = create_error_response(refused.value)
    return response.error.code, response.model_dump_json().encode()


def test_a_teacher_refusing_the_students_token_ids_is_a_tokenizer_mismatch():
    import httpx

    from distillery.serving.client import RequestFailed, TeacherConnection
    from distillery.serving.prompt_logprobs import PromptLogprobsClient
    from distillery.training.student import grading_failed

    code, body = _vllm_refusal_of_token_ids([1, 100000], vocabulary=49152)
    assert code == 400
    transport = httpx.MockTransport(lambda request: httpx.Response(code, content=body))
    with PromptLogprobsClient(
        TeacherConnection(base_url="http://teacher:8000/v1", model="teacher"), timeout=5, max_retries=0
    ) as client:
        client._http = httpx.Client(base_url="http://teacher:8000/v1", transport=transport)
        with pytest.raises(RequestFailed) as failed:
            client.grade([[1, 100000]], [1], 5)
    refusal = grading_failed(failed.value, on_policy_job(), "http://teacher:8000/v1")
    assert isinstance(refusal, InvalidJob)
    assert str(refusal).startswith(
        "spec.training.method: is 'onPolicy' but the teacher refuses the student's token ids"
    )
    unreachable = grading_failed(RequestFailed("connection", "refused", True), on_policy_job(), "http://t/v1")
    assert unreachable.reason.value == "TeacherUnreachable"
