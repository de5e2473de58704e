"""Sweeps: one YAML that expands into one resolved, validated training config per run.

This is the project's one way of composing a run config. A sweep lists ``base`` YAML layers (the base
training config, the data list, ...), and axes; a run's config is the base layers merged in order, then its
model-size file, its tasks and schedule, its seed, the sweep's ``overrides``, then its name, wandb group and
save folder. The base layers' ``${...}`` interpolations (``${oc.env:DOLMA_ROOT,...}`` in the data list) are
resolved at expansion (model files and overrides hold plain values), so the written run YAML is
self-contained and is exactly what ``olmo-inject train`` loads.

A sweep file::

    sweep:
      name: gap                        # prefix of run names and wandb groups
      base: [../base/olmo_7b_0724.yaml, ../base/dolma_v1_7.yaml]   # relative to this file
      models: [4M, 20M]                # <model_dir>/<name>.yaml (model_dir defaults to ../models)
      tasks: [cmp]                     # a kind, a TaskConfig mapping, or a list of those injected together
      frequencies: [2.44140625e-4]     # frequency-mode schedules, instances per token
      gaps: [1, 10, {n: 100, gap: 100}]  # gap-mode schedules: N means n = gap = N (offset: O allowed)
      seeds: [6198]                    # sets ``seed`` and ``injection.seed``; data order stays on data.seed
      overrides: {max_duration: 50000} # dotted keys applied to every run
    slurm: {...}                       # read by the launcher (launch/), not here

Runs are the product models x tasks x (frequencies + gaps) x seeds, in that nesting order; an axis that is
left out keeps what the base layers say. A plain training config (no ``sweep:`` key) is a sweep of one run.
Names are deterministic, ``<name>[-<model>][-<tasks>][-<schedule>][-s<seed>]``; the wandb group is the name
without the seed part, so the seeds of one setting plot together.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from olmo.exceptions import OLMoConfigurationError
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import InjectionTrainConfig, ScheduleConfig, register_config_resolvers, validate_config
from .task_kinds import task_kind

SWEEP_KEYS = ("name", "base", "model_dir", "models", "tasks", "frequencies", "gaps", "seeds", "overrides")
AXES = ("models", "tasks", "frequencies", "gaps", "seeds")
TOP_LEVEL_KEYS = ("sweep", "slurm")
RUN_CONFIG_FILE = "run.yaml"
CHECKPOINT_DIR = "checkpoints"
_NAME_OK = re.compile(r"^[A-Za-z0-9._+-]+$")


@dataclass
class SweepConfig:
    """A parsed sweep file; paths are absolute."""

    name: str
    """Prefix of every run name and wandb group; also the sweep's folder under the runs root."""

    base: List[Path]
    """YAML layers merged in order (later wins, lists are replaced)."""

    model_dir: Path
    """Folder of the model-size files: ``models: [1B]`` reads ``<model_dir>/1B.yaml``."""

    models: Optional[List[str]] = None
    """Model sizes; None keeps the model of the base layers."""

    tasks: Optional[List[List[Dict[str, Any]]]] = None
    """Task sets, each a list of ``TaskConfig`` mappings injected together; None keeps the base's tasks."""

    schedules: Optional[List[ScheduleConfig]] = None
    """Frequencies then gap settings; None keeps the schedules written in the tasks."""

    seeds: Optional[List[int]] = None
    """Values of ``seed`` and ``injection.seed``; None keeps the base's."""

    overrides: Dict[str, Any] = field(default_factory=dict)
    """Dotted keys set on every run after the axes."""

    slurm: Dict[str, Any] = field(default_factory=dict)
    """The file's ``slurm:`` section, uninterpreted here (the launcher reads it)."""


@dataclass(frozen=True)
class RunSpec:
    """One expanded run."""

    index: int
    """Position in the sweep (the SLURM array index)."""

    name: str
    """Run name: OLMo's ``run_name``, the wandb name and the run's folder name."""

    group: str
    """wandb group: the name without its seed part."""

    axes: Dict[str, str]
    """The axis values that made this run, as printed by ``olmo-inject sweep list``."""

    run_dir: Path
    """``<runs_root>/<sweep name>/<run name>``: holds ``run.yaml``, ``logs/`` and ``checkpoints/``."""

    config: Dict[str, Any]
    """The fully resolved training config (plain containers), validated."""

    @property
    def config_path(self) -> Path:
        return self.run_dir / RUN_CONFIG_FILE


def load_sweep(path: Union[str, Path]) -> SweepConfig:
    """Parse a sweep file, or wrap a plain training config as a sweep of one run (named after the file).

    Raises ``ValueError`` (naming the key) for unknown keys, empty axes and malformed axis values.
    """
    path = Path(path).resolve()
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(raw, dict) or "sweep" not in raw:
        return SweepConfig(name=path.stem, base=[path], model_dir=path.parent.parent / "models")
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; a sweep file has {list(TOP_LEVEL_KEYS)}")
    spec = raw["sweep"] or {}
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys sweep.{unknown}; allowed: {list(SWEEP_KEYS)}")
    for axis in AXES:
        if axis in spec and not spec[axis]:
            raise ValueError(f"{path}: sweep.{axis}={spec[axis]!r} has no values; give at least one or leave it out")
    name = str(spec.get("name") or path.stem)
    if not _NAME_OK.match(name):
        raise ValueError(f"{path}: sweep.name={name!r}: use letters, digits and . _ + - only")
    base = spec.get("base") or []
    if isinstance(base, str):
        base = [base]
    if not base:
        raise ValueError(f"{path}: sweep.base is empty; list at least the base training config")
    here = path.parent
    schedules = None
    if "frequencies" in spec or "gaps" in spec:
        schedules = [_frequency(f, path) for f in spec.get("frequencies") or []]
        schedules += [_gap(g, path) for g in spec.get("gaps") or []]
    return SweepConfig(
        name=name,
        base=[(here / b).resolve() for b in base],
        model_dir=(here / spec.get("model_dir", "../models")).resolve(),
        models=[str(m) for m in spec["models"]] if "models" in spec else None,
        tasks=[_task_set(t, path) for t in spec["tasks"]] if "tasks" in spec else None,
        schedules=schedules,
        seeds=[_int(s, "seeds", path) for s in spec["seeds"]] if "seeds" in spec else None,
        overrides=dict(spec.get("overrides") or {}),
        slurm=dict(raw.get("slurm") or {}),
    )


def available_models(model_dir: Path) -> List[str]:
    """Model sizes that have a file in ``model_dir``, sorted by name."""
    return sorted(p.stem for p in Path(model_dir).glob("*.yaml"))


def compose(layers: Sequence[Path]) -> Dict[str, Any]:
    """Merge YAML files in order (later keys win, lists are replaced) and resolve every ``${...}``; plain dicts."""
    for layer in layers:
        if not Path(layer).is_file():
            raise ValueError(f"config layer {str(layer)!r}: no such file")
    register_config_resolvers()
    merged = OmegaConf.merge(*(OmegaConf.load(layer) for layer in layers))
    try:
        return OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ValueError(f"config layers {[str(x) for x in layers]}: cannot resolve: {exc}") from exc


def expand_sweep(sweep: SweepConfig, runs_root: Union[str, Path]) -> List[RunSpec]:
    """All runs of a sweep, resolved and validated, in array order.

    ``runs_root`` is where run folders go; run configs' ``save_folder`` is ``<run_dir>/checkpoints``.
    Interpolations are resolved in the base layers, once (resolving Dolma's 1,033 paths per run is slow);
    model files and overrides hold plain values. Raises ``ValueError`` for an unknown model size, a schedule
    axis without tasks, seeds without a fixed ``data.seed``, colliding run names, and anything
    ``validate_config`` rejects (infeasible frequency, missing data files, ...), naming the run.
    """
    runs_root = Path(runs_root).resolve()
    if sweep.models is not None:
        known = available_models(sweep.model_dir)
        for model in sweep.models:
            if model not in known:
                raise ValueError(f"sweep.models: unknown model size {model!r}; known in {sweep.model_dir}: {known}")
    _reject_interpolations(sweep.overrides, "sweep.overrides")
    base = compose(sweep.base)
    runs: List[RunSpec] = []
    checked_data: set = set()
    for model in sweep.models or [None]:
        layered = base
        if model is not None:
            model_file = sweep.model_dir / f"{model}.yaml"
            model_layer = OmegaConf.to_container(OmegaConf.load(model_file), resolve=False)
            _reject_interpolations(model_layer, str(model_file))
            layered = _deep_merge(base, model_layer)
        for tasks in sweep.tasks or [None]:
            for schedule in sweep.schedules or [None]:
                for seed in sweep.seeds or [None]:
                    run = _make_run(sweep, layered, len(runs), runs_root, model, tasks, schedule, seed)
                    _validate(run, checked_data)
                    runs.append(run)
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"sweep {sweep.name!r}: axis values give identical run names {duplicates}")
    return runs


def write_run_config(run: RunSpec) -> Path:
    """Write the run's resolved config to ``<run_dir>/run.yaml`` (creating the folder); returns the path."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(run.config), run.config_path)
    return run.config_path


def _make_run(sweep, layered, index, runs_root, model, tasks, schedule, seed) -> RunSpec:
    cfg = copy.deepcopy(layered)
    parts, axes = [sweep.name], {}
    if model is not None:
        parts.append(model)
        axes["model"] = model
    injection = cfg.setdefault("injection", {})
    if tasks is not None:
        injection["tasks"] = copy.deepcopy(tasks)
        axes["tasks"] = "+".join(str(t["name"]) for t in tasks)
        parts.append(axes["tasks"])
    if schedule is not None:
        if not injection.get("tasks"):
            raise ValueError(f"sweep {sweep.name!r}: frequencies/gaps given but the run has no injection.tasks")
        for task in injection["tasks"]:
            task["schedule"] = schedule.as_mapping()
        axes["schedule"] = schedule.label
        parts.append(schedule.label)
    group = "-".join(parts)
    if seed is not None:
        if (cfg.get("data") or {}).get("seed") is None:
            raise ValueError(
                f"sweep {sweep.name!r}: sweep.seeds needs data.seed set in the base config, "
                "otherwise the data order would change with the seed"
            )
        cfg["seed"] = seed
        injection["seed"] = seed
        axes["seed"] = str(seed)
        parts.append(f"s{seed}")
    for key, value in sweep.overrides.items():
        _set_dotted(cfg, key, copy.deepcopy(value))
    name = "-".join(parts)
    run_dir = runs_root / sweep.name / name
    cfg["run_name"] = name
    cfg["save_folder"] = str(run_dir / CHECKPOINT_DIR)
    if cfg.get("wandb") is not None:  # a null wandb section means "no wandb"; keep it off
        cfg["wandb"].update(name=name, group=group, tags=[f"sweep:{sweep.name}"] + [f"{k}:{v}" for k, v in axes.items()])
    return RunSpec(index=index, name=name, group=group, axes=axes, run_dir=run_dir, config=cfg)


def _validate(run: RunSpec, checked_data: set) -> None:
    """OLMo's schema and ``validate_config`` on one run; each distinct data file list is checked once."""
    data = run.config.get("data") or {}
    paths = tuple(data.get("paths") or ())
    config = run.config
    if paths in checked_data:  # same list as an earlier run: skip re-checking (and re-typing) 1,033 paths
        config = {**config, "data": {**data, "paths": list(paths[:1])}}
    try:
        validate_config(InjectionTrainConfig.new(**config))
    except ValueError as exc:
        raise ValueError(f"run {run.name!r}: {exc}") from exc
    except (OLMoConfigurationError, OmegaConfBaseException) as exc:  # unknown key, wrong type
        raise ValueError(f"run {run.name!r}: invalid config: {exc}") from exc
    checked_data.add(paths)


def _deep_merge(base: Dict[str, Any], layer: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``layer`` merged in (mappings recursively, everything else replaced); inputs untouched."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(cfg: Dict[str, Any], key: str, value: Any) -> None:
    """``cfg[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings; list items by index (``tasks.0``)."""
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = _deep_merge(node[last], value)
    else:
        node[last] = value


def _reject_interpolations(value: Any, where: str) -> None:
    if isinstance(value, str) and "${" in value:
        raise ValueError(f"{where}: {value!r}: interpolations are resolved in the base layers only; write a value")
    if isinstance(value, dict):
        for v in value.values():
            _reject_interpolations(v, where)
    if isinstance(value, list):
        for v in value:
            _reject_interpolations(v, where)


def _frequency(value, path) -> ScheduleConfig:
    try:
        ipt = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: sweep.frequencies entry {value!r}: must be a number (instances per token)")
    if not ipt > 0:
        raise ValueError(f"{path}: sweep.frequencies entry {value!r}: must be > 0 instances per token")
    return ScheduleConfig(mode="frequency", instances_per_token=ipt)


def _gap(value, path) -> ScheduleConfig:
    offset = 0
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"n", "gap", "offset"})
        if unknown or "n" not in value or "gap" not in value:
            raise ValueError(
                f"{path}: sweep.gaps entry {value!r}: write N (n = gap = N) or {{n: N, gap: G[, offset: O]}}")
        n, gap = _int(value["n"], "gaps", path), _int(value["gap"], "gaps", path)
        offset = _int(value.get("offset", 0), "gaps", path)
    else:
        n = gap = _int(value, "gaps", path)
    if n < 1 or gap < 1 or offset < 0:
        raise ValueError(f"{path}: sweep.gaps entry {value!r}: n and gap must be >= 1, offset >= 0")
    return ScheduleConfig(mode="gap", n=n, gap=gap, offset=offset)


def _task_set(value, path) -> List[Dict[str, Any]]:
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise ValueError(f"{path}: sweep.tasks entry []: a task set needs at least one task")
    tasks = []
    for entry in entries:
        if isinstance(entry, str):
            tasks.append({"name": entry, "kind": entry})
        elif isinstance(entry, dict) and "kind" in entry:
            tasks.append({"name": entry["kind"], **entry})
        else:
            raise ValueError(f"{path}: sweep.tasks entry {entry!r}: write a kind ('cmp') or a mapping with 'kind'")
    for task in tasks:
        task_kind(str(task["kind"]), f"{path}: sweep.tasks kind")
        if not _NAME_OK.match(str(task["name"])):
            raise ValueError(f"{path}: sweep.tasks name {task['name']!r}: use letters, digits and . _ + - only")
    return tasks


def _int(value, axis, path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}: sweep.{axis} entry {value!r}: must be an integer")
    return value
