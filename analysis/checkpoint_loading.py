"""Load OLMo checkpoints, as OLMo's checkpointers write them, into a plain (un-wrapped) OLMo model on the CPU.

Layouts understood (``<save_folder>/stepN[-unsharded]/``):

* unsharded: ``model.pt`` (or ``model.safetensors``) + ``config.yaml`` (``FullCheckpointer``);
* sharded, torch new-style: ``model_and_optim/`` (``torch.distributed.checkpoint``) + ``config.yaml``;
* other sharded kinds (legacy, local, olmo_core): unsharded through the checkpointer named by the config's
  ``sharded_checkpointer``.

The config comes from the checkpoint's own ``config.yaml`` loaded as ``InjectionTrainConfig``, so the run's
``injection:`` section (its tasks) is available to the analyses.

Files are read as training reads them (``olmo_injection.olmo_patches``): OLMo's loaders, with only the objects
OLMo's checkpoints hold allowed to unpickle (``olmo_injection.checkpoint_safety``); anything else is refused
with ``UntrustedCheckpointError`` unless the caller passes ``trust_checkpoint_code=True``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import olmo.checkpoint
from olmo.checkpoint import MODEL_AND_OPTIM_FOLDER, build_sharded_checkpointer
from olmo.model import OLMo

from olmo_injection.checkpoint_safety import trusting_checkpoints
from olmo_injection.config import InjectionTrainConfig
from olmo_injection.olmo_patches import apply_olmo_patches

PathLike = Union[str, Path]

_STEP_DIR = re.compile(r"^step(\d+)(-unsharded)?$")


@dataclass
class LoadedCheckpoint:
    """An OLMo model restored from one checkpoint, in eval mode on the CPU, float32."""

    path: Path
    """The checkpoint directory (``stepN`` or ``stepN-unsharded``)."""

    step: int
    """Training step the checkpoint was saved at (from the directory name)."""

    config: InjectionTrainConfig
    """The run's config as saved in the checkpoint."""

    model: OLMo
    """The restored model."""


def checkpoint_step(path: PathLike) -> int:
    """The step of a checkpoint directory named ``stepN`` or ``stepN-unsharded``; ValueError otherwise."""
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise ValueError(f"checkpoint directory {str(path)!r} is not named stepN or stepN-unsharded")
    return int(match.group(1))


def find_checkpoints(folder: PathLike) -> List[Path]:
    """Checkpoint directories under ``folder`` (itself one, or a run's save folder), sorted by step.

    When a step has both a sharded and an unsharded copy, the unsharded one is kept (it loads without
    ``torch.distributed``). Raises ValueError when none is found.
    """
    folder = Path(folder)
    if _STEP_DIR.match(folder.name) and (folder / "config.yaml").is_file():
        return [folder]
    by_step = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _STEP_DIR.match(child.name)
        if match is None or not (child / "config.yaml").is_file():
            continue
        step = int(match.group(1))
        if step not in by_step or match.group(2):
            by_step[step] = child
    if not by_step:
        raise ValueError(f"no checkpoint directories (stepN[-unsharded]/config.yaml) under {str(folder)!r}")
    return [by_step[step] for step in sorted(by_step)]


def load_checkpoint_config(path: PathLike) -> InjectionTrainConfig:
    """The run config saved inside a checkpoint directory, set up to build the model on the CPU in float32."""
    config_path = Path(path) / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} has no config.yaml")
    cfg = InjectionTrainConfig.load(config_path)
    # Analyses run on the CPU: never build on meta/cuda and never use flash attention.
    cfg.model.init_device = "cpu"
    cfg.model.flash_attention = False
    return cfg


def load_checkpoint(path: PathLike, trust_checkpoint_code: bool = False) -> LoadedCheckpoint:
    """Restore the model saved in one checkpoint directory (any layout listed in the module docstring).

    ``trust_checkpoint_code=True`` loads a file holding objects outside the allow-list in full, running any code
    it holds: only for a checkpoint from a trusted source.
    """
    path = Path(path)
    cfg = load_checkpoint_config(path)
    model = OLMo(cfg.model, init_params=False)
    apply_olmo_patches()  # the allow-list, and a torch_new reader that works with this torch
    with trusting_checkpoints(trust_checkpoint_code):
        if (path / MODEL_AND_OPTIM_FOLDER).is_dir():
            olmo.checkpoint.load_model_state(path, model)
        else:
            if (path / "model.pt").is_file() or (path / "model.safetensors").is_file():
                state = olmo.checkpoint.load_state_dict(path, "model.pt", map_location="cpu")
            else:
                checkpointer = build_sharded_checkpointer(cfg)
                state, _, _ = checkpointer.unshard_checkpoint(
                    path, load_optimizer_state=False, load_trainer_state=False
                )
            state, _ = model._make_state_dict_compatible(state)
            model.load_state_dict(state)
    model.eval()
    return LoadedCheckpoint(path=path, step=checkpoint_step(path), config=cfg, model=model.float())


def checkpoint_task(checkpoint: LoadedCheckpoint, name: str):
    """The injected task ``name`` of the checkpoint's run, read from the run's task files.

    Task files are looked up in ``injection.task_dir`` when set, else in ``tasks/`` beside the checkpoint
    directory (the run's save folder, wherever it has been moved), else under the saved ``save_folder``.
    """
    from olmo_injection.tasks import build_tasks

    cfg = checkpoint.config
    beside = checkpoint.path.parent / "tasks"
    if cfg.injection.task_dir is None and beside.is_dir():
        cfg.injection.task_dir = str(beside)
    tasks = build_tasks(cfg)
    for task in tasks:
        if task.name == name:
            return task
    raise ValueError(f"task={name!r}: the run injects {[t.name for t in tasks]}")
