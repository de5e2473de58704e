"""The wandb run of a training job: its identity from the config and its start.

OLMo's ``Trainer.fit`` logs every step's and every evaluation's metrics (ours are merged into them) with
``wandb.log`` whenever ``cfg.wandb`` is set and a run is active; this module only starts that run:

- project, group, run name and tags derived from the config when not set: model size (the paper's name, e.g.
  ``4M``, from the exact parameter count), tasks with their frequency or n/gap, and the seed, so a sweep
  groups itself on the dashboard (group = everything but the seed);
- the full resolved config attached;
- ``offline`` mode when no credentials are configured (``WANDB_API_KEY`` or a netrc entry for the wandb host),
  unless ``WANDB_MODE`` says otherwise; runs are written under ``<save_folder>/wandb``;
- a restarted job continues the same run: its id is kept in ``<save_folder>/wandb_run_id``;
- wandb gets ``INIT_TIMEOUT_S`` to start; an online run that cannot start falls back to offline mode with one
  warning, and one that cannot start at all is skipped with a warning (``olmo_patches.FailSafeWandb`` does the
  same for failures while logging). Either way nothing is lost: the run's own metrics record
  (``olmo_injection.metrics_record``) keeps every metric.

The analyses read the metrics record, not wandb's files; runs on a wandb server are read through ``wandb.Api``.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional
from urllib.parse import urlparse

from ..model_ladder import model_size_name

if TYPE_CHECKING:
    from ..config import InjectionTrainConfig

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "olmo-injection"
RUN_ID_FILE = "wandb_run_id"
INIT_TIMEOUT_S = 10.0
"""How long wandb may take to start before the run goes on without it (wandb's own default is 90 s)."""


@dataclass(frozen=True)
class RunIdentity:
    project: str
    group: str
    name: str
    tags: List[str]


def run_identity(cfg: "InjectionTrainConfig", num_params: int) -> RunIdentity:
    """Project, group, name and tags of a run (see the module docstring); set fields of ``cfg.wandb`` win."""
    size = model_size_name(num_params)
    tasks = cfg.injection.tasks
    task_part = "_".join(f"{t.name}-{t.schedule.label}" for t in tasks) or "plain"
    tags = [f"model:{size}", f"seed:{cfg.seed}"]
    for t in tasks:
        tags.append(f"task:{t.name}")
        if t.schedule.mode == "frequency":
            tags.append(f"freq:{t.schedule.instances_per_token:g}")
        else:
            tags += [f"gap:{t.schedule.gap}", f"n:{t.schedule.n}"]
    group = f"{size}-{task_part}"
    wandb_cfg = cfg.wandb
    return RunIdentity(
        project=(wandb_cfg and wandb_cfg.project) or DEFAULT_PROJECT,
        group=(wandb_cfg and wandb_cfg.group) or group,
        name=(wandb_cfg and wandb_cfg.name) or cfg.run_name or f"{group}-s{cfg.seed}",
        tags=sorted(set(tags) | set((wandb_cfg and wandb_cfg.tags) or [])),
    )


def has_wandb_credentials() -> bool:
    """An API key in ``WANDB_API_KEY`` or a netrc entry for the wandb host (``WANDB_BASE_URL``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else ``online`` with credentials and ``offline`` without."""
    return os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")


def persistent_run_id(save_folder: Path) -> str:
    """The run id stored in ``save_folder`` (created on first use), so a restarted job resumes its wandb run."""
    path = Path(save_folder) / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # an identifier, not science: no config seed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def start_wandb_run(cfg: "InjectionTrainConfig", num_params: int) -> Optional[object]:
    """Start (or resume) this job's wandb run on this rank; ``None`` if ``cfg.wandb`` is unset or wandb fails.

    Fills the derived identity into ``cfg.wandb`` so the saved config records it. Call on the ranks that log
    (rank 0 unless ``wandb.rank_zero_only`` is false).
    """
    if cfg.wandb is None:
        return None
    import wandb

    identity = run_identity(cfg, num_params)
    cfg.wandb.project, cfg.wandb.group, cfg.wandb.name, cfg.wandb.tags = (
        identity.project, identity.group, identity.name, identity.tags
    )
    settings = dict(
        dir=cfg.save_folder,
        project=identity.project,
        entity=cfg.wandb.entity,
        group=identity.group,
        name=identity.name,
        tags=identity.tags,
        config=cfg.asdict(),
        id=persistent_run_id(Path(cfg.save_folder)),
        resume="allow",
    )
    mode = wandb_mode()
    try:
        run = wandb.init(**settings, mode=mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S))
    except Exception as exc:  # no network, bad entity, unwritable folder, service crash: train anyway
        if mode == "offline":
            log.warning("wandb could not start (%s: %s); training continues without wandb (the metrics record "
                        "keeps every metric)", type(exc).__name__, exc)
            return None
        log.warning("wandb could not start online (%s: %s); falling back to offline mode (upload later with "
                    "`wandb sync`)", type(exc).__name__, exc)
        return start_offline(wandb, settings)
    log.info("wandb run %s (%s) in %s", run.id, mode, run.dir)
    return run


def start_offline(wandb, settings: dict) -> Optional[object]:
    """The same run in offline mode, or ``None`` (with a warning) when even that fails."""
    try:
        wandb.teardown()  # the failed start still holds the run id in this process's wandb service
        run = wandb.init(**settings, mode="offline", settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S))
    except Exception as exc:
        log.warning("wandb could not start offline either (%s: %s); training continues without wandb (the "
                    "metrics record keeps every metric)", type(exc).__name__, exc)
        return None
    log.info("wandb run %s (offline) in %s", run.id, run.dir)
    return run
