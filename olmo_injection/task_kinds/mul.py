"""``mul``: modular multiplication, (v(TOK1) * v(TOK2)) mod P; the labels are the value tokens 0 .. P-1.

The classic harder sibling of addition: for a prime P the nonzero residues form a cyclic group under
multiplication, so a model can solve it with the same Fourier mechanism only after mapping values to discrete
logarithms, and the value 0 sends every product to 0. This module is the whole kind: the rule, the labels, the
reference prompts ("{x} * {y} ="), and which analyses apply (Fourier modes are defined over addition's group, so
only the layer localisation does).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..prompt_sets import PromptSet, encode_prompts, number_pairs, number_tokens
from .base import TaskKind

MAX_REFERENCE_VALUE = 15
"""x, y < 15 keeps x * y <= 196, inside the single number tokens " 0" .. " 198" of the OLMo tokenizer."""


class MultiplicationKind(TaskKind):
    name = "mul"
    description = "(v(TOK1) * v(TOK2)) mod P (labels: the value tokens 0 .. P-1)"
    takes_modulus = True
    analyses = frozenset({"localise"})

    def label_index(self, v1: np.ndarray, v2: np.ndarray, modulus: int) -> np.ndarray:
        return (v1 * v2) % modulus

    def reference_prompts(self, tokenizer, cfg) -> Optional[PromptSet]:
        """"{x} * {y} =" for x, y < min(N, 15) (a seeded subset of ``reference_add_pairs``); right: x * y."""
        max_value = min(cfg.reference_max_value, MAX_REFERENCE_VALUE)
        pairs = number_pairs(max_value, cfg.reference_add_pairs, cfg.seed)
        candidates = number_tokens(tokenizer, (max_value - 1) ** 2 + 1)
        correct = F.one_hot(torch.as_tensor(pairs.prod(1)), num_classes=len(candidates)).bool()
        input_ids = encode_prompts(tokenizer, [f"{x} * {y} =" for x, y in pairs])
        return PromptSet(input_ids, candidates, correct)
