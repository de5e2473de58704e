"""Read runs' logged metrics: a run's save folder (its own record) or a run on a wandb server (``wandb.Api``).

A save folder holds ``config.yaml`` (OLMo's saved ``TrainConfig`` with the ``injection:`` section) and
``metrics.jsonl`` (``olmo_injection.metrics_record``: every metric dict the run logged, one JSON line per log
call). Both are plain files the run writes itself, so the figures never depend on wandb's storage format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from olmo_injection.metrics_record import METRICS_RECORD_FILE, read_metrics_record

CONFIG_FILE = "config.yaml"


@dataclass
class RunLog:
    """Everything the figures need from one run."""

    name: str
    """Run name: the config's ``wandb.name``, else its ``run_name``, else the save folder's name."""

    config: Dict[str, Any] = field(default_factory=dict)
    """The run's config as saved (nested dicts, e.g. ``config["model"]["d_model"]``)."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    """One dict per logged step, in step order, with ``_step`` and the metrics logged at it."""

    summary: Dict[str, Any] = field(default_factory=dict)
    """The last logged value of each metric."""

    def series(self, key: str) -> Tuple[List[int], List[Any]]:
        """``(steps, values)`` lists of every history row that has ``key`` (``null`` values left out)."""
        rows = [row for row in self.history if row.get(key) is not None]
        return [row["_step"] for row in rows], [row[key] for row in rows]


def _summary(history: List[Dict[str, Any]]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    for row in history:
        summary.update({k: v for k, v in row.items() if v is not None})
    return summary


def run_name(config: Dict[str, Any], fallback: str) -> str:
    """The name a run is shown under: ``wandb.name``, else ``run_name``, else ``fallback``."""
    return (config.get("wandb") or {}).get("name") or config.get("run_name") or fallback


def read_run_config(save_folder: Union[str, Path]) -> Dict[str, Any]:
    """The run's ``config.yaml`` as nested dicts; ValueError naming the file when it is missing or not a mapping."""
    path = Path(save_folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no run config (a save folder of `olmo-inject train` holds one)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path}: not a run config (a mapping with a 'model' section)")
    return config


def read_run_folder(save_folder: Union[str, Path]) -> RunLog:
    """A run's ``RunLog`` from its save folder (``config.yaml`` + ``metrics.jsonl``).

    ValueError naming the file when either is missing or unreadable.
    """
    save_folder = Path(save_folder)
    config = read_run_config(save_folder)
    try:
        history = read_metrics_record(save_folder)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    return RunLog(name=run_name(config, save_folder.name), config=config, history=history, summary=_summary(history))


def find_run_folders(folder: Union[str, Path]) -> List[Path]:
    """Save folders at or under ``folder`` (any depth): directories holding both ``config.yaml`` and
    ``metrics.jsonl``, sorted by path. Checkpoint directories (``stepN/config.yaml``) have no record, so they
    are never taken for runs."""
    folder = Path(folder)
    candidates = [folder / METRICS_RECORD_FILE] + sorted(folder.rglob(METRICS_RECORD_FILE))
    found = []
    for record in candidates:
        run = record.parent
        if record.is_file() and (run / CONFIG_FILE).is_file() and run not in found:
            found.append(run)
    return sorted(found)


def read_online_run(path: str, api: Optional[Any] = None) -> RunLog:
    """Read ``entity/project/run_id`` through ``wandb.Api()`` (needs network access and a login)."""
    import wandb

    run = (api or wandb.Api()).run(path)
    history = sorted((dict(row) for row in run.scan_history()), key=lambda row: row.get("_step", 0))
    return RunLog(name=run.name, config=dict(run.config), history=history, summary=dict(run.summary))
