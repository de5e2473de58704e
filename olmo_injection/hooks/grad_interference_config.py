"""Config of the gradient-interference hook (owned by that hook)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REFERENCE_SPLITS = ("all", "train", "test")


@dataclass
class GradInterferenceConfig:
    """The ``grad_interference:`` section: cosines of g, g_t, g_nt against the task reference direction."""

    enabled: bool = False
    """Log the decomposition g = g_t + g_nt on the task neurons."""

    task: Optional[str] = None
    """Name of the task whose neurons and reference direction are used; defaults to the first task."""

    num_task_neurons: int = 32
    """K: how many first-block MLP neurons (of ``mlp_hidden_size / 2``) are task neurons. Not stated in the
    paper; 32 is our default."""

    selection_step: int = 1
    """Training step (OLMo's ``global_step``, from 1) at whose weights the task neurons are chosen, by their
    task-loss gradient norm, unless ``neurons_file`` is given. Nothing is logged before it. A resumed run reuses
    the neurons saved in ``<save_folder>/task_neurons/<task>.json``."""

    neurons_file: Optional[str] = None
    """Use the task neurons in this file (written by a run or by offline selection on a checkpoint) instead of
    choosing them during training."""

    reference_interval: int = 100
    """R: steps between recomputations of the task reference direction g_r, which drifts during training. Not
    stated in the paper; 100 matches the gap of its gradient runs."""

    reference_split: str = "all"
    """Which task instances define g_r: ``all`` (the paper: all 10,000), ``train`` or ``test``. The same set
    chooses the task neurons."""

    reference_batch_size: int = 1024
    """Task instances per forward/backward pass when computing g_r (each is two tokens long)."""

    log_interval: int = 1
    """Compute and log the cosines every this many steps, at steps OLMo logs (``console_log_interval`` or
    ``wandb.log_interval``); other steps run with no capture at all."""

    def validate(self, task_names: Optional[Sequence[str]] = None) -> None:
        """Raise ``ValueError`` naming the field, its value and what is allowed.

        With ``task_names`` (``injection.tasks`` names, in order) also check that the chosen task exists.
        """
        if not self.enabled:
            return
        if task_names is not None and not task_names:
            raise ValueError("grad_interference.enabled=True: needs at least one task in injection.tasks")
        if task_names is not None and self.task is not None and self.task not in task_names:
            raise ValueError(f"grad_interference.task={self.task!r}: not a task; allowed: {list(task_names)}")
        if self.neurons_file is not None and not Path(self.neurons_file).is_file():
            raise ValueError(f"grad_interference.neurons_file={self.neurons_file!r}: no such file")
        positive = ("num_task_neurons", "selection_step", "reference_interval", "reference_batch_size", "log_interval")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"grad_interference.{name}={value!r}: must be an integer >= 1")
        if self.reference_split not in REFERENCE_SPLITS:
            raise ValueError(
                f"grad_interference.reference_split={self.reference_split!r}: allowed: {list(REFERENCE_SPLITS)}"
            )

    def task_index(self, task_names: Sequence[str]) -> int:
        """Index of the chosen task in ``task_names`` (the first when ``task`` is unset)."""
        return 0 if self.task is None else list(task_names).index(self.task)
