"""The hook interface the injection trainer calls around OLMo's own training step.

OLMo 0.6.0's ``Trainer`` has no callback system; ``olmo_injection.trainer.InjectionTrainer`` calls these
methods, in list order, on every rank. A hook returns metrics as a flat ``{key: float}`` dict (keys from
``olmo_injection.metric_names``); the trainer merges them into the step's metrics, which go to the console
and to wandb. Every method has a do-nothing default, so a hook overrides only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

import torch

if TYPE_CHECKING:
    from ..trainer import InjectionTrainer

Batch = Dict[str, Any]
Metrics = Dict[str, float]


class TrainingHook:
    def on_train_start(self, trainer: "InjectionTrainer") -> None:
        """Once, after the model, optimizer and (restored) trainer state exist, before the first step."""

    def pre_step(self, trainer: "InjectionTrainer", batch: Batch) -> None:
        """Before the forward pass of a training step; ``batch`` is this rank's whole device batch."""

    def on_micro_batch_forward(self, trainer: "InjectionTrainer", micro_batch: Batch, logits: torch.Tensor) -> None:
        """After each training micro-batch's forward pass, with its logits ([rows, seq, vocab], still in graph)."""

    def post_step(self, trainer: "InjectionTrainer", batch: Batch) -> Metrics:
        """After the optimizer step; returns metrics for this step (reduced across ranks by the hook)."""
        return {}

    def on_eval(self, trainer: "InjectionTrainer") -> Metrics:
        """At the eval cadence, after OLMo's own evaluators; returns metrics."""
        return {}

    def close(self, trainer: "InjectionTrainer") -> None:
        """At the end of training (normal or interrupted); release files and handles."""
