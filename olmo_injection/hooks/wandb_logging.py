"""The wandb run of a training job: its identity from the config, its start, and reading an offline run back.

OLMo's ``Trainer.fit`` logs every step's and every evaluation's metrics (ours are merged into them) with
``wandb.log`` whenever ``cfg.wandb`` is set and a run is active; this module only starts that run:

- project, group, run name and tags derived from the config when not set: model size (the paper's name, e.g.
  ``4M``, from the exact parameter count), tasks with their frequency or n/gap, and the seed, so a sweep
  groups itself on the dashboard (group = everything but the seed);
- the full resolved config attached;
- ``offline`` mode when no credentials are configured (``WANDB_API_KEY`` or a netrc entry for the wandb host),
  unless ``WANDB_MODE`` says otherwise; runs are written under ``<save_folder>/wandb``;
- a restarted job continues the same run: its id is kept in ``<save_folder>/wandb_run_id``;
- a failure to start is logged and training goes on without wandb (``olmo_patches.FailSafeWandb`` does the
  same for failures while logging).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional
from urllib.parse import urlparse

if TYPE_CHECKING:
    from ..config import InjectionTrainConfig

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "olmo-injection"
RUN_ID_FILE = "wandb_run_id"

# docs/science.md#model-ladder (the paper's Table 2): exact parameter counts of the paper's models.
MODEL_SIZES = {6_963_200: "4M", 28_753_920: "20M", 371_458_048: "300M", 1_279_787_008: "1B", 4_707_057_664: "4B"}


@dataclass(frozen=True)
class RunIdentity:
    project: str
    group: str
    name: str
    tags: List[str]


def model_size_name(num_params: int) -> str:
    """The paper's name of a model size (``4M``) for an exact Table-2 count, else e.g. ``0.41M``."""
    if num_params in MODEL_SIZES:
        return MODEL_SIZES[num_params]
    return f"{num_params / 1e6:.3g}M" if num_params < 1e9 else f"{num_params / 1e9:.3g}B"


def _schedule_label(schedule) -> str:
    if schedule.mode == "frequency":
        return f"f{schedule.instances_per_token:.1e}"
    return f"n{schedule.n}g{schedule.gap}" + (f"o{schedule.offset}" if schedule.offset else "")


def run_identity(cfg: "InjectionTrainConfig", num_params: int) -> RunIdentity:
    """Project, group, name and tags of a run (see the module docstring); set fields of ``cfg.wandb`` win."""
    size = model_size_name(num_params)
    tasks = cfg.injection.tasks
    task_part = "_".join(f"{t.name}-{_schedule_label(t.schedule)}" for t in tasks) or "plain"
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
    mode = wandb_mode()
    try:
        run = wandb.init(
            dir=cfg.save_folder,
            project=identity.project,
            entity=cfg.wandb.entity,
            group=identity.group,
            name=identity.name,
            tags=identity.tags,
            config=cfg.asdict(),
            id=persistent_run_id(Path(cfg.save_folder)),
            resume="allow",
            mode=mode,
        )
    except Exception as exc:  # no network, bad entity, service crash: train anyway
        log.warning("wandb could not start (%s: %s); training continues without wandb", type(exc).__name__, exc)
        return None
    log.info("wandb run %s (%s) in %s", run.id, mode, run.dir)
    return run


# --- Reading an offline run back ---------------------------------------------------------------------------
# A ``.wandb`` file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then records in
# 32 KiB blocks, each chunk with a 7-byte header (crc32 of type+data, length, type: full/first/middle/last)
# holding a serialized ``wandb_internal_pb2.Record``. wandb 0.31 ships no Python reader for it.
_HEADER = b":W&B"
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Every ``Record`` in a ``.wandb`` file, in order; ``ValueError`` on a corrupt file."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != _HEADER:
        raise ValueError(f"{path}: not a .wandb file")
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # too little room left for a chunk header: the block is padded
            pos += _BLOCK - pos % _BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        if kind == 0 and length == 0:  # zero padding at the end of a file still being written
            break
        if zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        pending = payload if kind in (_FULL, _FIRST) else pending + payload
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def read_wandb_history(wandb_dir: Path, run_id: Optional[str] = None) -> Dict[int, Dict[str, float]]:
    """``{step: {key: value}}`` logged by the runs under ``wandb_dir`` (``<save_folder>/wandb``).

    Several files of one run (a resumed job writes a new one) are read oldest first; a later value for the same
    step and key replaces an earlier one, as when an interrupted run repeats steps after its last checkpoint.
    """
    files = sorted(Path(wandb_dir).glob(f"*run-*-{run_id or '*'}/run-*.wandb"), key=lambda p: p.parent.name.split("-", 2)[-1])
    history: Dict[int, Dict[str, float]] = {}
    for path in files:
        for record in read_wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            step = record.history.step.num
            row = history.setdefault(step, {})
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    row[key] = json.loads(item.value_json)
    return history
