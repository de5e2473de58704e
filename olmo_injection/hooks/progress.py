"""Console progress of a training run on rank 0: a tqdm bar with step, tokens/s, task losses and ETA.

OLMo's own console log (every ``console_log_interval`` steps) keeps printing every metric; the bar is the
at-a-glance view. In a non-interactive log (SLURM) it refreshes at most every ``NONINTERACTIVE_SECONDS``.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Optional, Sequence

from tqdm import tqdm

from .. import metric_names as mn
from .base import Batch, Metrics, TrainingHook

if TYPE_CHECKING:
    from ..trainer import InjectionTrainer

NONINTERACTIVE_SECONDS = 60.0


class ProgressHook(TrainingHook):
    """Put it after the hooks whose metrics it shows (it reads ``trainer.step_metrics``)."""

    def __init__(self, task_names: Sequence[str], rank: int):
        self.task_names = list(task_names)
        self.enabled = rank == 0
        self.bar: Optional[tqdm] = None
        self._last_time = 0.0
        self._task_losses: dict = {}

    def on_train_start(self, trainer: "InjectionTrainer") -> None:
        if not self.enabled:
            return
        self.close(trainer)  # a second ``fit`` on the same trainer starts a fresh bar
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=trainer.max_steps,
            initial=trainer.global_step,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if interactive else NONINTERACTIVE_SECONDS,
            file=sys.stderr,
        )
        self._last_time = time.monotonic()

    def post_step(self, trainer: "InjectionTrainer", batch: Batch) -> Metrics:
        if self.bar is None:
            return {}
        now = time.monotonic()
        tokens_per_second = trainer.tokens_per_batch / max(now - self._last_time, 1e-9)
        self._last_time = now
        for name in self.task_names:
            loss = trainer.step_metrics.get(mn.task_key(name, mn.TRAIN_STEP, mn.LOSS))
            if loss is not None:
                self._task_losses[name] = loss
        postfix = {"loss": f"{trainer.cur_train_loss:.3f}", "tok/s": f"{tokens_per_second:,.0f}"}
        postfix.update({f"{name}": f"{loss:.3f}" for name, loss in self._task_losses.items()})
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        return {}

    def close(self, trainer: "InjectionTrainer") -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
