"""Config of the per-task evaluation hook (owned by the task-metrics hook)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TaskEvalConfig:
    """The ``task_eval:`` section: how often and on what the injected tasks are evaluated."""

    interval: int = 100
    """Steps between task evaluations (train split, test split, reference prompts); 0 turns them off."""

    batch_size: int = 256
    """Task instances per forward pass during evaluation."""

    def validate(self) -> None:
        if self.interval < 0:
            raise ValueError(f"task_eval.interval={self.interval}: must be >= 0 (0 turns task evaluation off)")
        if self.batch_size < 1:
            raise ValueError(f"task_eval.batch_size={self.batch_size}: must be >= 1")
