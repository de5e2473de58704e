"""Config of the per-task metrics hook (``olmo_injection.hooks.task_metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TaskEvalConfig:
    """The ``task_eval:`` section: what the injected tasks are evaluated on at OLMo's ``eval_interval``.

    Task evaluation runs with OLMo's own evaluators (``eval_interval``, and at the last step), so task
    metrics and the validation LM loss always share a step.
    """

    enabled: bool = True
    """Evaluate the tasks' splits and the reference prompts at every evaluation; per-step metrics always run."""

    batch_size: int = 256
    """Prompts per forward pass during evaluation."""

    max_instances_per_split: Optional[int] = None
    """Evaluate at most this many instances of each split (a seeded subset, the same at every evaluation);
    ``None`` evaluates all of them (5,000 per split for the paper's tasks)."""

    reference: bool = True
    """Also score the natural-text reference prompts ("it has increased from {x} to", "{x} + {y} =")."""

    reference_max_value: int = 100
    """Reference prompts use numbers x, y in ``0 .. reference_max_value-1`` (the paper: x, y < 100)."""

    reference_add_pairs: Optional[int] = 1000
    """Score this many (x, y) pairs of "{x} + {y} =" (a seeded subset); ``None`` scores all of them."""

    seed: int = 0
    """Seeds the instance and pair subsets."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field if a value is out of range."""
        if self.batch_size < 1:
            raise ValueError(f"task_eval.batch_size={self.batch_size}: must be >= 1")
        if self.max_instances_per_split is not None and self.max_instances_per_split < 1:
            raise ValueError(
                f"task_eval.max_instances_per_split={self.max_instances_per_split}: must be >= 1 or null (all)"
            )
        if not 2 <= self.reference_max_value <= 100:
            # " 0" .. " 198" are single tokens of the OLMo tokenizer; sums of larger numbers are not.
            raise ValueError(f"task_eval.reference_max_value={self.reference_max_value}: must be in [2, 100]")
        if self.reference_add_pairs is not None and self.reference_add_pairs < 1:
            raise ValueError(f"task_eval.reference_add_pairs={self.reference_add_pairs}: must be >= 1 or null (all)")
