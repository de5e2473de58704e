"""Scoring of task and reference prompts (pure functions), with the real OLMo tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from olmo_injection import metric_names as mn
from olmo_injection.hooks.task_eval_config import TaskEvalConfig
from olmo_injection.hooks.task_metrics import score_next_token
from olmo_injection.prompt_sets import PromptSet, number_tokens
from olmo_injection.task_kinds import task_kind
from olmo_injection.tasks import olmo_tokenizer

VOCAB = 20


def test_score_next_token_matches_hand_computation():
    # Two prompts, candidates are tokens 3 and 7; prompt 0's right answer is 3, prompt 1's is 7.
    logits = torch.zeros(2, VOCAB)
    logits[0, 3], logits[0, 7] = 2.0, 1.0  # argmax over candidates and over the vocabulary: 3 (right)
    logits[1, 3], logits[1, 7], logits[1, 11] = 2.0, 1.0, 5.0  # candidates pick 3 (wrong); vocab picks 11 (wrong)
    prompts = PromptSet(torch.zeros(2, 2, dtype=torch.long), torch.tensor([3, 7]), torch.tensor([[True, False], [False, True]]))
    scores = score_next_token(logits, prompts)
    expected_loss = [-torch.log_softmax(logits[0], -1)[3], -torch.log_softmax(logits[1], -1)[7]]
    assert torch.allclose(scores[mn.LOSS], torch.stack(expected_loss))
    assert scores[mn.ACC_LABELS].tolist() == [1.0, 0.0]
    assert scores[mn.ACC_VOCAB].tolist() == [1.0, 0.0]


def test_score_with_several_right_candidates_sums_their_probability():
    logits = torch.zeros(1, VOCAB)
    logits[0, 5] = 3.0
    prompts = PromptSet(torch.zeros(1, 2, dtype=torch.long), torch.tensor([4, 5, 6]), torch.tensor([[False, True, True]]))
    scores = score_next_token(logits, prompts)
    p = torch.softmax(logits[0], -1)
    assert scores[mn.LOSS].item() == pytest.approx(-math.log(p[5] + p[6]), rel=1e-6)
    assert scores[mn.ACC_LABELS].item() == 1.0 and scores[mn.ACC_VOCAB].item() == 1.0


def test_number_tokens_are_single_tokens_that_decode_to_the_number():
    tokenizer = olmo_tokenizer()
    ids = number_tokens(tokenizer, 199)
    assert len(set(ids.tolist())) == 199
    assert [tokenizer.decode([i]) for i in ids[[0, 42, 198]].tolist()] == [" 0", " 42", " 198"]


def test_increase_prompts_right_continuations_are_the_larger_numbers():
    tokenizer = olmo_tokenizer()
    prompts = task_kind("cmp").reference_prompts(tokenizer, TaskEvalConfig(reference_max_value=100))
    assert prompts.input_ids.shape[0] == 99
    assert tokenizer.decode(prompts.input_ids[17].tolist()) == "it has increased from 17 to"
    assert prompts.correct[17].nonzero().squeeze(1).tolist() == list(range(18, 100))


def test_addition_prompts_subset_is_seeded_and_right_answer_is_the_sum():
    tokenizer = olmo_tokenizer()
    add = task_kind("add")
    a = add.reference_prompts(tokenizer, TaskEvalConfig(reference_max_value=100, reference_add_pairs=50, seed=3))
    b = add.reference_prompts(tokenizer, TaskEvalConfig(reference_max_value=100, reference_add_pairs=50, seed=3))
    assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.shape[0] == 50
    for row in range(5):
        x, y = [int(s) for s in tokenizer.decode(a.input_ids[row].tolist()).rstrip(" =").split(" + ")]
        assert tokenizer.decode([a.candidates[a.correct[row]].item()]) == f" {x + y}"
    every_pair = TaskEvalConfig(reference_max_value=10, reference_add_pairs=None)
    assert add.reference_prompts(tokenizer, every_pair).input_ids.shape[0] == 100


@pytest.mark.parametrize(
    "field,value",
    [("batch_size", 0), ("max_instances_per_split", 0), ("reference_max_value", 101), ("reference_add_pairs", 0)],
)
def test_task_eval_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"task_eval.{field}={value}"):
        TaskEvalConfig(**{field: value}).validate()
