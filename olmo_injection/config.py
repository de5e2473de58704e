"""The one config tree: OLMo's ``TrainConfig`` plus our namespaced sections.

``InjectionTrainConfig.load(path, overrides)`` goes through OLMo's own loader, so every OLMo option and its
dotted command-line overrides (``--injection.tasks.0.schedule.instances_per_token=1e-4``) keep working.
``validate()`` is the single place where user input is checked; it raises ``ValueError`` naming the field,
its value and what is allowed, before any long work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from olmo.config import TrainConfig

from .hooks.grad_interference_config import GradInterferenceConfig
from .hooks.task_eval_config import TaskEvalConfig

TASK_KINDS = ("cmp", "add")
SCHEDULE_MODES = ("frequency", "gap")


@dataclass
class ScheduleConfig:
    """When a task's instances enter the training stream."""

    mode: str = "frequency"
    """``frequency`` (instances per token, spread evenly) or ``gap`` (``n`` instances every ``gap`` batches)."""

    instances_per_token: float = 1e-4
    """Frequency mode: injected instances per training token (the paper spans 7.8e-3 down to 2.4e-8)."""

    n: int = 1
    """Gap mode: instances injected in each injection batch."""

    gap: int = 1
    """Gap mode: batches between two injection batches (1 = every batch)."""

    offset: int = 0
    """Gap mode: global batch index of the first injection batch."""


@dataclass
class TaskConfig:
    """One injected task: its vocabulary, its instances and its schedule."""

    name: str = "cmp"
    """Short name used in metric keys (``task/<name>/...``) and file names."""

    kind: str = "cmp"
    """``cmp`` (is v(TOK1) < v(TOK2)?, two label tokens) or ``add`` ((v(TOK1) + v(TOK2)) mod modulus)."""

    num_values: int = 100
    """Number of word tokens; their values are 0..num_values-1, giving num_values**2 instances."""

    modulus: Optional[int] = None
    """``add`` only: the modulus; defaults to ``num_values`` and may not exceed it (labels are value tokens)."""

    seed: int = 0
    """Seeds the word choice, the bijection to values, the label tokens and the train/test split."""

    train_fraction: float = 0.5
    """Fraction of the instances in the train split; the rest are the test split."""

    tokens: Optional[List[int]] = None
    """Explicit word token ids (length ``num_values``, in value order) instead of a seeded choice."""

    label_tokens: Optional[List[int]] = None
    """``cmp`` only: explicit [true, false] label token ids instead of a seeded choice."""

    file: Optional[str] = None
    """Load the task from this task file (as written by ``olmo-inject tasks``) instead of building it."""

    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class InjectionConfig:
    """The ``injection:`` section next to OLMo's training config."""

    seed: int = 0
    """Seeds which rows receive instances and which train instances they receive."""

    tasks: List[TaskConfig] = field(default_factory=list)
    """Tasks injected into the training stream; an empty list trains plain OLMo."""

    task_dir: Optional[str] = None
    """Where task files are written and read; defaults to ``<save_folder>/tasks``."""


@dataclass
class InjectionTrainConfig(TrainConfig):
    """OLMo's ``TrainConfig`` with the project's sections added (the DoReMi pattern)."""

    injection: InjectionConfig = field(default_factory=InjectionConfig)
    task_eval: TaskEvalConfig = field(default_factory=TaskEvalConfig)
    grad_interference: GradInterferenceConfig = field(default_factory=GradInterferenceConfig)
