"""Per-run facts the figures group by, read from a run's saved config: model size, task frequency, gap, tokens.

The parameter count is OLMo's own: the run's ``model`` section builds an ``OLMo`` on the meta device (no memory,
no initialisation) and ``num_params()`` counts it, so biases, affine norms and tied embeddings count exactly as
they do in training. The size name is the paper's (``4M`` = 6,963,200 parameters, Table 2) where the count is
one of its ladder, else the count itself (``0.404M``), as the run's wandb name gives it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, Optional

from omegaconf import OmegaConf
from olmo.config import ModelConfig
from olmo.model import OLMo

from olmo_injection.model_ladder import count_model_params, model_size_name

from .run_logs import RunLog


@lru_cache(maxsize=64)
def _count_params(model_yaml: str) -> int:
    fields = dict(OmegaConf.to_container(OmegaConf.create(model_yaml)), init_device="meta")
    try:
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), fields))
    except Exception as exc:  # omegaconf names the bad key or value
        raise ValueError(f"model config: {str(exc).splitlines()[0]}") from None
    return count_model_params(config)


def model_params(model: Dict[str, Any]) -> int:
    """Parameters of the OLMo model a run's ``model`` config section describes (OLMo's ``num_params()``)."""
    return _count_params(OmegaConf.to_yaml(OmegaConf.create(dict(model))))


def model_size(model: Dict[str, Any]) -> str:
    """The size name of a run's model: ``4M``, ``20M``... for the paper's ladder, else e.g. ``0.404M``."""
    return model_size_name(model_params(model))


def tokens_per_step(config: Dict[str, Any]) -> int:
    """Training tokens per optimiser step: global batch (sequences) x sequence length."""
    return int(config["global_train_batch_size"]) * int(config["model"]["max_sequence_length"])


def task_entry(config: Dict[str, Any], task: str) -> Dict[str, Any]:
    """The config entry of injected task ``task``; ValueError listing the run's tasks when there is none."""
    entries = (config.get("injection") or {}).get("tasks") or []
    for entry in entries:
        if entry.get("name") == task:
            return entry
    names = [entry.get("name") for entry in entries]
    raise ValueError(f"task={task!r}: the run's config has no injected task of that name (it has {names})")


def task_schedule(config: Dict[str, Any], task: str) -> Dict[str, Any]:
    """The saved ``schedule`` of task ``task``; ValueError when the run has no such task."""
    return task_entry(config, task).get("schedule", {})


def instances_per_token(config: Dict[str, Any], task: str) -> float:
    """The task's injection frequency in instances per token (gap mode: n / (gap x tokens per step))."""
    schedule = task_schedule(config, task)
    if schedule.get("mode", "frequency") == "gap":
        return schedule.get("n", 1) / (schedule.get("gap", 1) * tokens_per_step(config))
    return float(schedule.get("instances_per_token", 0.0))


def gap(config: Dict[str, Any], task: str) -> Optional[int]:
    """Batches between injections of a gap-mode task; None for frequency mode."""
    schedule = task_schedule(config, task)
    return int(schedule.get("gap", 1)) if schedule.get("mode") == "gap" else None


def schedule_label(config: Dict[str, Any], task: str) -> str:
    """How often the task is injected, for legends and tables: ``7.8e-03/token`` or ``n=1/gap=10``."""
    schedule = task_schedule(config, task)
    if schedule.get("mode", "frequency") == "gap":
        return f"n={schedule.get('n', 1)}/gap={schedule.get('gap', 1)}"
    return f"{float(schedule.get('instances_per_token', 0.0)):.1e}/token"


def run_facts(run: RunLog, task: str) -> Dict[str, Any]:
    """One row of facts about a run: name, model size (name and params), instances per token, gap, tokens."""
    return {
        "run": run.name,
        "model": model_size(run.config["model"]),
        "params": model_params(run.config["model"]),
        "instances_per_token": instances_per_token(run.config, task),
        "gap": gap(run.config, task),
        "tokens_per_step": tokens_per_step(run.config),
    }
