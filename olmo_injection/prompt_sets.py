"""Evaluation prompts with their candidate continuations (``PromptSet``), and the number tokens they use.

A prompt set is what a task evaluation scores (``olmo_injection.hooks.task_metrics``): prompts of one length
and, per prompt, which candidate tokens are right continuations. The injected tasks' own prompts and each task
kind's natural-text reference prompts (``olmo_injection.task_kinds``) are built as prompt sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class PromptSet:
    """Prompts of equal length with, per prompt, which candidate tokens are right continuations."""

    input_ids: torch.Tensor  # [n, prompt_len]
    candidates: torch.Tensor  # [C] token ids the ``acc`` argmax is taken over
    correct: torch.Tensor  # [n, C] bool: candidate c is a right continuation of prompt i


def number_tokens(tokenizer, count: int) -> torch.Tensor:
    """[count] ids of the single tokens ``" 0" .. " {count-1}"``; ``ValueError`` if one is not a single token."""
    ids = []
    for n in range(count):
        encoded = tokenizer.encode(f" {n}", add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"reference prompts: ' {n}' is {len(encoded)} tokens in this tokenizer, must be 1")
        ids.append(encoded[0])
    return torch.tensor(ids, dtype=torch.long)


def number_pairs(max_value: int, num_pairs: Optional[int], seed: int) -> np.ndarray:
    """[n, 2] pairs (x, y) with x, y < ``max_value``: all of them, or a seeded subset of ``num_pairs``."""
    pairs = np.stack(np.meshgrid(np.arange(max_value), np.arange(max_value), indexing="ij"), -1).reshape(-1, 2)
    if num_pairs is not None and num_pairs < len(pairs):
        rng = np.random.Generator(np.random.PCG64([seed, 1]))
        pairs = pairs[np.sort(rng.choice(len(pairs), size=num_pairs, replace=False))]
    return pairs


def encode_prompts(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """[n, length] token ids of ``texts``, which must all tokenize to the same length (``ValueError`` if not)."""
    encoded = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    lengths = {len(e) for e in encoded}
    if len(lengths) != 1:
        raise ValueError(f"reference prompts tokenize to different lengths {sorted(lengths)}: {texts[:3]} ...")
    return torch.tensor(encoded, dtype=torch.long)
