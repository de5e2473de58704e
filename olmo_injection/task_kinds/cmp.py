"""``cmp``: T_CMP, is v(TOK1) < v(TOK2)? Two label tokens (true, false) drawn besides the words."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..prompt_sets import PromptSet, encode_prompts, number_tokens
from .base import TaskKind


class ComparisonKind(TaskKind):
    name = "cmp"
    description = "is v(TOK1) < v(TOK2)? (two label tokens, true then false)"
    own_label_tokens = 2
    analyses = frozenset({"das", "probe", "localise"})

    def label_index(self, v1: np.ndarray, v2: np.ndarray, modulus: int) -> np.ndarray:
        return np.where(v1 < v2, 0, 1)

    def reference_prompts(self, tokenizer, cfg) -> Optional[PromptSet]:
        """"it has increased from {x} to" for x < N - 1 (N = ``reference_max_value``); right: the numbers above x
        (below N)."""
        n = cfg.reference_max_value
        xs = np.arange(n - 1)
        correct = torch.as_tensor(np.arange(n)[None, :] > xs[:, None])
        input_ids = encode_prompts(tokenizer, [f"it has increased from {x} to" for x in xs])
        return PromptSet(input_ids, number_tokens(tokenizer, n), correct)
