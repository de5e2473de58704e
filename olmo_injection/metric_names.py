"""Metric keys, as constants, so the trainer, the hooks and the analysis read and write the same names.

Grouped by namespace so the wandb dashboard groups itself: ``task/<task>/...`` and ``grad/...``.
"""

from __future__ import annotations


def task_key(task: str, split: str, metric: str) -> str:
    """``task/<task>/<split>/<metric>``; split is ``train_step``, ``train``, ``test`` or ``ref``."""
    return f"task/{task}/{split}/{metric}"


# Per-step, from the training forward pass.
TRAIN_STEP = "train_step"
LOSS = "loss"
INSTANCES_SEEN = "instances_seen"
INJECTED_THIS_STEP = "injected"
# Eval cadence, on the task's splits.
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
ACC_LABELS = "acc"  # argmax over the task's possible labels
ACC_VOCAB = "acc_vocab"  # argmax over the whole vocabulary
# Reference prompts from natural text ("it has increased from {x} to", "{x} + {y} =").
REFERENCE = "ref"

# OLMo's own keys that analysis reads.
LM_TRAIN_LOSS = "train/CrossEntropyLoss"

TRAINING_NAMESPACES = ("train/", "task/", "grad/")
"""What training computes from the stream: OLMo's ``train/`` and the hooks' namespaces (a hook that adds one
adds it here). Two runs of the same stream and seed agree on these; ``eval/`` (OLMo's LM evaluators) and the
speed and system metrics are apart."""

# Gradient interference on task neurons (per step).
GRAD_COS_G_REF = "grad/cos_g_ref"
GRAD_COS_T_REF = "grad/cos_t_ref"
GRAD_COS_NT_REF = "grad/cos_nt_ref"
GRAD_NORM_G = "grad/norm_g"
GRAD_NORM_T = "grad/norm_t"
GRAD_NORM_NT = "grad/norm_nt"
GRAD_INJECTED = "grad/injected"
