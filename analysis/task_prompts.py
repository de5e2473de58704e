"""Task instances as model inputs, and the task loss read from the logits.

A task prompt is ``TOK1 TOK2`` at positions 0 and 1 (as injected at the start of a training row); the LABEL is
predicted by the logits at position 1. Causal attention makes the two-token prompt give the same position-1
logits as the full injected ``TOK1 TOK2 LABEL EOS``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from olmo.model import OLMo

from olmo_injection.tasks import Task

LABEL_POSITION = 1
"""Position whose logits predict the LABEL token."""

TOKEN_POSITIONS = (0, 1)
"""Positions of TOK1 and TOK2."""


def prompt_ids(task: Task, ids: Sequence[int]) -> torch.Tensor:
    """[n, 2] LongTensor of ``TOK1 TOK2`` for the given instance ids."""
    return torch.as_tensor(task.instances[np.asarray(ids, dtype=np.int64)][:, :2], dtype=torch.long)


def label_targets(task: Task, ids: Sequence[int]) -> torch.Tensor:
    """[n] LongTensor: the LABEL token id of each instance (a target over the full vocabulary)."""
    return torch.as_tensor(task.instances[np.asarray(ids, dtype=np.int64)][:, 2], dtype=torch.long)


def label_position_logits(model: OLMo, input_ids: torch.Tensor) -> torch.Tensor:
    """[n, vocab] logits at the LABEL-predicting position of ``input_ids`` [n, seq], as ``OLMo.forward`` computes
    them, with the output head applied to that one position only (the head dominates the cost of a 2-token
    forward). Forward hooks on the blocks' modules still fire. A test pins equality with ``model(input_ids)``.
    """
    assert not hasattr(model.transformer, "block_groups"), "block groups are not supported"
    x = model.transformer.emb_drop(model.transformer.wte(input_ids))
    for block in model.transformer.blocks:
        x, _ = block(x)  # attention_bias=None: causal attention, as OLMo.forward without a mask
    h = model.transformer.ln_f(x[:, LABEL_POSITION])
    head = model.transformer.wte.weight if model.config.weight_tying else model.transformer.ff_out.weight
    logits = F.linear(h, head)
    if model.config.scale_logits:
        logits = logits * (1 / math.sqrt(model.config.d_model))
    return logits


def task_loss_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of the LABEL tokens given their position's ``logits`` [n, vocab]."""
    return F.cross_entropy(logits.float(), targets)


def cmp_label_index(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Index into a cmp task's ``label_tokens`` ([true, false]) of the statement ``v1 < v2``."""
    return np.where(np.asarray(v1) < np.asarray(v2), 0, 1)
