"""A save folder belongs to one experiment: which config fields make the experiment, and the folder's lock.

**Identity.** The fields under ``IDENTITY_FIELDS`` (minus ``NOT_IDENTITY``) decide what is trained: the model,
the tokenizer, the data and its order, the injected tasks and their schedules, every seed, the optimizer,
the learning-rate schedule, the batch shape and the length of the run. Everything else (where and how often
to checkpoint, evaluate and log, the distributed strategy, data-loader workers, ``task_eval``,
``grad_interference``, ``stop_at``) only changes how the same experiment is run or measured.

A rerun into a save folder that holds ``config.yaml`` compares its identity with that file before anything is
overwritten (``check_same_experiment``):

- same identity: it resumes; if the latest checkpoint is already at the run's last step it says the run is
  finished and trains nothing (``finished_step``);
- ``max_duration`` larger than the saved one: refused unless ``--extend`` (the learning-rate schedule is then
  recomputed for the new length, as OLMo derives it from ``max_duration``);
- any other identity field different: refused with the list of differing fields unless
  ``--allow_config_change``.

An allowed change is appended to ``<save_folder>/config_changes.jsonl`` (one JSON line: time, host, the
checkpoint step it continues from, the flag, and each field's saved and new value) before ``config.yaml`` is
rewritten. Fields that only one of the two configs has (a schema change between versions of this code) are
not compared; a list of tasks that grew or shrank is.

**Lock.** ``SaveFolderLock`` keeps a second run out of a save folder while one runs: ``run.lock`` holds the
owner's pid, host and start time; a lock whose pid no longer runs on this host is stale and taken over.

**Ranks.** Rank 0 takes the lock and decides the rerun (``on_rank_zero``); ``settled_on_every_rank`` makes a
bad-input error seen by any rank the error of every rank (``BadInputOnEveryRank``), so rank 0 reports it and
all ranks exit together.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, TypeVar

import torch.distributed as dist
from olmo.exceptions import OLMoConfigurationError

from .config import InjectionTrainConfig, max_duration_amount

T = TypeVar("T")

IDENTITY_FIELDS: Tuple[str, ...] = (
    "seed", "model", "tokenizer", "data", "injection", "optimizer", "scheduler", "max_duration",
    "global_train_batch_size", "max_grad_norm", "max_grad_norm_ratio", "precision", "softmax_auxiliary_loss",
    "auxiliary_loss_multiplier",
)
"""Config subtrees that define the experiment (dotted names into the config)."""

NOT_IDENTITY: Tuple[str, ...] = (
    "model.init_device", "model.flash_attention", "model.precision",  # model.precision is copied from precision
    "data.num_workers", "data.pin_memory", "data.prefetch_factor", "data.persistent_workers", "data.timeout",
    "optimizer.metrics_log_interval", "optimizer.record_update_metrics",
    "injection.task_dir",  # where task files live; their content is named by a hash of the task's fields
)
"""Fields inside ``IDENTITY_FIELDS`` that change how the run executes, not what it trains."""

CONFIG_FILE = "config.yaml"
CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = "run.lock"
EXTEND_FLAG = "--extend"
ALLOW_CHANGE_FLAG = "--allow_config_change"
BAD_INPUT = (ValueError, OLMoConfigurationError)
_MAX_LISTED = 8  # differing fields named in one message


@dataclass(frozen=True)
class FieldChange:
    """One identity field whose value in the save folder's ``config.yaml`` differs from this run's."""

    field: str
    saved: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.field}: {_short(self.saved)} -> {_short(self.now)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_tree(cfg: InjectionTrainConfig) -> dict:
    """``cfg`` as plain dicts and lists, resolved, enums as strings: the form ``config.yaml`` is read back in."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def read_config_tree(path: Path) -> dict:
    """A saved ``config.yaml`` as plain dicts; ``ValueError`` naming the file if it is not a readable mapping."""
    from omegaconf import DictConfig, OmegaConf

    try:
        conf = OmegaConf.load(str(path))
    except Exception as exc:  # a torn or hand-edited file: say which, whatever the parser raised
        raise ValueError(f"{path}: cannot read the saved config ({str(exc).splitlines()[0]})") from exc
    if not isinstance(conf, DictConfig):
        raise ValueError(f"{path}: the saved config is not a YAML mapping")
    return OmegaConf.to_container(conf, resolve=False)


def identity_changes(saved: Mapping, now: Mapping) -> List[FieldChange]:
    """Every identity field (leaf, dotted) whose value differs between two config trees, in config order."""
    changes: List[FieldChange] = []
    for name in IDENTITY_FIELDS:
        if name in saved and name in now:
            _diff(name, saved[name], now[name], changes)
    return changes


def _diff(prefix: str, saved: Any, now: Any, out: List[FieldChange]) -> None:
    if prefix in NOT_IDENTITY:
        return
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        for key in saved:
            if key in now:  # a field only one version of the code has is not compared
                _diff(f"{prefix}.{key}", saved[key], now[key], out)
    elif (
        isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now)
        and any(isinstance(v, Mapping) for v in saved)
    ):
        for i, (a, b) in enumerate(zip(saved, now)):
            _diff(f"{prefix}.{i}", a, b, out)
    elif not _same(saved, now):
        out.append(FieldChange(prefix, saved, now))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):  # a config's tuple is a list in YAML
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b or (not isinstance(a, (list, tuple, dict)) and str(a) == str(b))  # YAML may keep 8 for "8"


def check_same_experiment(
    save_folder: str, saved: Mapping, now: Mapping, *, extend: bool, allow_config_change: bool
) -> List[FieldChange]:
    """The identity changes from ``saved`` to ``now`` that the flags allow; ``ValueError`` listing them otherwise.

    ``extend`` allows ``max_duration`` to grow (same unit); ``allow_config_change`` allows any change.
    """
    changes = identity_changes(saved, now)
    if not changes or allow_config_change:
        return changes
    duration = [c for c in changes if c.field == "max_duration"]
    others = [c for c in changes if c.field != "max_duration"]
    if others:
        listed = "; ".join(str(c) for c in others[:_MAX_LISTED])
        more = f"; and {len(others) - _MAX_LISTED} more" if len(others) > _MAX_LISTED else ""
        raise ValueError(
            f"save_folder={save_folder!r} holds another experiment: {len(others)} field(s) differ from its "
            f"{CONFIG_FILE} ({listed}{more}); use another save_folder, or pass {ALLOW_CHANGE_FLAG} to continue this "
            "run with the new values"
        )
    (change,) = duration
    saved_amount, saved_unit = max_duration_amount(change.saved)
    now_amount, now_unit = max_duration_amount(change.now)
    grows = saved_unit == now_unit and now_amount > saved_amount
    if not extend:
        hint = f"pass {EXTEND_FLAG} to train it further" if grows else f"pass {ALLOW_CHANGE_FLAG} to change it"
        raise ValueError(
            f"max_duration={change.now!r}: save_folder={save_folder!r} holds a run with max_duration={change.saved!r}; "
            f"{hint}, or use another save_folder"
        )
    if not grows:
        raise ValueError(
            f"max_duration={change.now!r}: {EXTEND_FLAG} needs a max_duration larger than the saved "
            f"{change.saved!r}, in the same unit"
        )
    return changes


def record_config_changes(save_folder: Path, changes: Sequence[FieldChange], flag: str, from_step: Optional[int]) -> None:
    """Append one line to ``<save_folder>/config_changes.jsonl`` saying what changed, when, and from which step."""
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "from_step": from_step,
        "flag": flag,
        "changes": [asdict(c) for c in changes],
    }
    with (Path(save_folder) / CHANGES_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


class SaveFolderLock:
    """``<save_folder>/run.lock``: one live run per save folder.

    The file holds ``{"pid", "host", "since"}`` of the owner. ``acquire`` creates it atomically (creating the
    folder if needed); a lock of a pid that no longer runs on this host is stale and taken over; a live one (or
    one on another host, which cannot be checked from here) raises ``ValueError`` naming the owner.
    """

    def __init__(self, save_folder: str):
        self.save_folder = save_folder
        self.path = Path(save_folder) / LOCK_FILE
        self.held = False
        self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another run may take over the same stale lock at the same moment
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _is_stale(owner):
                    self._remove_stale(owner)
                    continue
                raise ValueError(self._in_use_message(owner)) from None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise ValueError(self._in_use_message(self._owner()))

    def release(self) -> None:
        """Remove the lock if this process still owns it, and the folder if ``acquire`` made it and it is empty
        (a run refused after taking the lock leaves nothing behind)."""
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        if self.created_folder:
            try:
                self.path.parent.rmdir()
            except OSError:  # not empty: the run wrote its outputs
                pass

    def _owner(self) -> Optional[dict]:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}  # released meanwhile: the next attempt takes it
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def _remove_stale(self, owner: dict) -> None:
        import logging

        if owner:
            logging.getLogger(__name__).warning(
                "save_folder=%s: taking over the stale lock of pid %s on host %s (no such process)",
                self.save_folder, owner["pid"], owner.get("host"),
            )
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)  # only one of several takers wins the rename
            aside.unlink()
        except FileNotFoundError:
            pass

    def _in_use_message(self, owner: Optional[dict]) -> str:
        if owner is None:
            return (
                f"save_folder={self.save_folder!r}: lock file {self.path} exists but cannot be read (a run is starting, "
                "or one was killed while taking it); delete it if no run uses this folder"
            )
        return (
            f"save_folder={self.save_folder!r} is in use by pid {owner['pid']} on host {owner.get('host')} since "
            f"{owner.get('since')} (lock file {self.path}); wait for that run to end, use another save_folder, or "
            "delete the lock file if that run is gone"
        )


def _is_stale(owner: dict) -> bool:
    """True if the lock's owner is gone: released (empty) or a pid that is not running on this host."""
    if not owner:
        return True
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # a killed owner that nobody has reaped yet still has a pid
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def add_experiment_flags(parser) -> None:
    """``--extend`` and ``--allow_config_change`` on an ``argparse`` parser of a training command."""
    parser.add_argument(EXTEND_FLAG, action="store_true",
                        help="let a rerun into a save folder train to a larger max_duration (recorded in the folder)")
    parser.add_argument(ALLOW_CHANGE_FLAG, action="store_true",
                        help="let a rerun change other experiment fields: model, data, injection, seeds, optimizer, "
                        "... (recorded in the folder)")


def _world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class BadInputOnEveryRank(ValueError):
    """A bad-input error raised on every rank at the same point, with the same message (that of the lowest
    rank that found it), so rank 0 can report it and all ranks can exit together."""


def settled_on_every_rank(check: Callable[[], T]) -> T:
    """Run ``check`` on every rank; if it raised a bad-input error on any rank, raise ``BadInputOnEveryRank``
    on every rank. One ``all_gather`` of a short string (none without a process group of several ranks)."""
    rank, world_size = _world()
    try:
        result, mine = check(), None
    except BAD_INPUT as exc:
        result, mine = None, exc
    messages = [None if mine is None else str(mine)]
    if world_size > 1:
        messages = [None] * world_size
        dist.all_gather_object(messages, None if mine is None else str(mine))
    first = next((m for m in messages if m is not None), None)
    if first is not None:
        raise BadInputOnEveryRank(first) from mine
    return result


def on_rank_zero(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 only; its result (picklable) given to every rank, its bad-input error raised on
    every rank (see ``settled_on_every_rank``)."""
    rank, world_size = _world()
    result = settled_on_every_rank(decide if rank == 0 else (lambda: None))
    if world_size > 1:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return result


@dataclass(frozen=True)
class RerunDecision:
    """What a (re)run into a save folder does, decided on rank 0 before anything is written."""

    changes: Tuple[FieldChange, ...] = ()
    """Identity changes the flags allowed (recorded in ``config_changes.jsonl``)."""

    flag: Optional[str] = None
    """The flag that allowed them."""

    resumed_step: Optional[int] = None
    """Step of the save folder's checkpoint the run continues from."""

    finished_message: Optional[str] = None
    """Set when that checkpoint is already at the run's last step: nothing to train."""


def decide_rerun(
    cfg: InjectionTrainConfig, resumed_step: Optional[int], *, starts_over: bool, extend: bool, allow_config_change: bool
) -> RerunDecision:
    """Compare this run with the save folder's ``config.yaml`` (unless it ``starts_over``, reclaiming the folder
    with ``save_overwrite``) and say whether the checkpoint at ``resumed_step`` already finished it.

    ``ValueError`` naming the differing fields when the flags do not allow the change (``check_same_experiment``).
    """
    from .config import check_token_files, planned_max_steps

    saved = Path(cfg.save_folder) / CONFIG_FILE
    changes: List[FieldChange] = []
    if saved.is_file() and not starts_over:
        changes = check_same_experiment(
            cfg.save_folder, read_config_tree(saved), config_tree(cfg), extend=extend,
            allow_config_change=allow_config_change,
        )
    flag = None if not changes else ALLOW_CHANGE_FLAG if allow_config_change else EXTEND_FLAG
    if resumed_step is None:
        return RerunDecision(tuple(changes), flag)
    num_sequences = None
    if cfg.data.paths:
        num_sequences = check_token_files(cfg.data.paths, "data.paths", cfg.data.memmap_dtype, cfg.model.max_sequence_length)
    last_step = planned_max_steps(cfg, num_sequences)
    limit = f"max_duration={cfg.max_duration!r}"
    if cfg.stop_at is not None and (last_step is None or cfg.stop_at < last_step):
        last_step, limit = cfg.stop_at, f"stop_at={cfg.stop_at}"
    finished = None
    if last_step is not None and resumed_step >= last_step:
        finished = (
            f"save_folder={cfg.save_folder!r}: the run is finished, its latest checkpoint is at step {resumed_step} "
            f"({limit} ends at step {last_step}); nothing to train. To train further, rerun with {EXTEND_FLAG} and a "
            "larger --max_duration"
        )
    return RerunDecision(tuple(changes), flag, resumed_step, finished)


def checkpoint_space_error(save_folder: str, step: int, exc: BaseException) -> Optional[ValueError]:
    """The one-line error for ``exc`` if it is a full disk while saving the checkpoint of ``step``, else ``None``.

    torch reports a short write as ``RuntimeError: ... unexpected pos``, not as ``ENOSPC``, so a failed write
    with (almost) no space left counts too. The partial ``step<step>*-tmp`` checkpoint is removed first; every
    complete checkpoint is left as it was.
    """
    import errno
    import shutil

    folder = Path(save_folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    no_space = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    failed_write = "No space left on device" in str(exc) or "unexpected pos" in str(exc)
    if not (no_space or (failed_write and free < 64 * 2**20)):
        return None
    partial = sorted(folder.glob(f"step{step}*-tmp"))
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    removed = f"removed the partial {', '.join(p.name for p in partial)}" if partial else "no partial checkpoint left"
    return ValueError(
        f"save_folder={save_folder!r}: no space left on device while saving the checkpoint of step {step} "
        f"({free / 2**20:.1f} MiB free); {removed}; free some space and rerun the same command to resume from the "
        "latest complete checkpoint"
    )
