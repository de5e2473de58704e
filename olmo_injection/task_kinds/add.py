"""``add``: T_ADD, (v(TOK1) + v(TOK2)) mod P; the labels are the value tokens 0 .. P-1."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..prompt_sets import PromptSet, encode_prompts, number_pairs, number_tokens
from .base import TaskKind


class AdditionKind(TaskKind):
    name = "add"
    description = "(v(TOK1) + v(TOK2)) mod P (labels: the value tokens 0 .. P-1)"
    takes_modulus = True
    analyses = frozenset({"fourier", "localise"})

    def label_index(self, v1: np.ndarray, v2: np.ndarray, modulus: int) -> np.ndarray:
        return (v1 + v2) % modulus

    def reference_prompts(self, tokenizer, cfg) -> Optional[PromptSet]:
        """"{x} + {y} =" for x, y < N (a seeded subset of ``reference_add_pairs``); right: the number x + y."""
        pairs = number_pairs(cfg.reference_max_value, cfg.reference_add_pairs, cfg.seed)
        candidates = number_tokens(tokenizer, 2 * cfg.reference_max_value - 1)
        correct = F.one_hot(torch.as_tensor(pairs.sum(1)), num_classes=len(candidates)).bool()
        input_ids = encode_prompts(tokenizer, [f"{x} + {y} =" for x, y in pairs])
        return PromptSet(input_ids, candidates, correct)
