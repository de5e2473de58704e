"""Every change the project makes to how ai2-olmo 0.6.0 behaves, in one place.

The entry point calls ``apply_olmo_patches()`` once per process; ``InjectionTrainer`` uses the scoped
``cuda_rng_state_without_cuda()``. Each patch names the upstream code it relies on; tests in
``tests/test_trainer.py`` (trainer and wandb), ``tests/test_olmo_patches.py`` (sharded checkpoints) and
``tests/test_checkpoint_safety.py`` (what checkpoints may unpickle) pin that code and fail loudly if an upgrade
changes it.
"""

from __future__ import annotations

import logging
import os
import pickle
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Dict, Iterator, Optional, Union

import torch
from olmo.checkpoint import RemoteFileSystemReader
from olmo.util import resource_path

from .checkpoint_safety import allow_olmo_checkpoint_globals, load_refused_torch_file, refuse_forced_full_unpickling

log = logging.getLogger(__name__)

REPLACED_UPSTREAM: Dict[str, Any] = {}
"""The upstream objects the patches replaced, by ``module.name``; tests pin their behaviour."""


def apply_olmo_patches() -> None:
    """Apply the process-wide patches (idempotent)."""
    load_only_allow_listed_checkpoint_contents()
    make_olmo_wandb_calls_failsafe()
    complete_torch_new_checkpoint_reader()
    make_olmo_core_optimizer_state_init_side_effect_free()


def load_only_allow_listed_checkpoint_contents() -> None:
    """Load OLMo's checkpoints with torch's ``weights_only`` unpickler and ``checkpoint_safety``'s allow-list.

    Every checkpointer reads model, optimizer and trainer state through ``olmo.checkpoint.load_state_dict``
    (looked up by its module-level name), which calls ``torch.load`` without ``weights_only``: torch >= 2.6 then
    unpickles with ``weights_only=True``, which refuses the numpy RNG state and ``Path`` lists in ``train.pt``
    unless they are allowed. ``load_state_dict_naming_refused_file`` replaces it so a refusal names the file.
    """
    refuse_forced_full_unpickling()
    allow_olmo_checkpoint_globals()
    import olmo.checkpoint

    replace_upstream(olmo.checkpoint, "load_state_dict", load_state_dict_naming_refused_file)


def load_state_dict_naming_refused_file(
    checkpoint_dir: Union[str, os.PathLike], fname: str, *, local_cache: Optional[Union[str, os.PathLike]] = None,
    map_location: Optional[str] = None,
) -> Any:
    """OLMo's ``load_state_dict``; a file torch's ``weights_only`` unpickler refuses raises
    ``checkpoint_safety.UntrustedCheckpointError`` naming it (or, when trusted, loads in full)."""
    try:
        return REPLACED_UPSTREAM["olmo.checkpoint.load_state_dict"](
            checkpoint_dir, fname, local_cache=local_cache, map_location=map_location
        )
    except pickle.UnpicklingError as refusal:
        path = resource_path(str(checkpoint_dir).rstrip("/"), fname, local_cache=local_cache)
        return load_refused_torch_file(path, refusal, map_location)


class FailSafeWandb:
    """Stands in for the ``wandb`` module inside ``olmo.train``: a failing ``log`` or ``finish`` never stops training.

    OLMo's ``Trainer.fit`` calls ``wandb.log`` itself whenever ``wandb.run`` is set. After the first failure a
    warning is logged and ``run`` reads as ``None``, so OLMo stops calling wandb (no retries slow the loop).
    Everything else is the real module.
    """

    def __init__(self, module: Any):
        self._module = module
        self._failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    @property
    def run(self) -> Any:
        return None if self._failed else self._module.run

    def log(self, *args: Any, **kwargs: Any) -> None:
        if self._failed:
            return
        try:
            self._module.log(*args, **kwargs)
        except Exception as exc:  # any wandb failure, whatever its type, must not end the run
            self._disable(exc)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        # OLMo's ``Trainer.close`` passes ``quiet=True``, an argument wandb has since removed.
        kwargs.pop("quiet", None)
        try:
            self._module.finish(*args, **kwargs)
        except Exception as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        self._failed = True
        log.warning("wandb failed (%s: %s); training continues without wandb logging", type(exc).__name__, exc)


def make_olmo_wandb_calls_failsafe() -> None:
    """Route ``olmo.train``'s module-level ``wandb`` name through ``FailSafeWandb``."""
    import wandb

    import olmo.train

    if not isinstance(olmo.train.wandb, FailSafeWandb):
        olmo.train.wandb = FailSafeWandb(wandb)


@contextmanager
def cuda_rng_state_without_cuda() -> Iterator[None]:
    """Let ``Trainer.trainer_state_dict`` run on a CPU-only torch.

    OLMo saves ``torch.cuda.get_rng_state()``, which raises without CUDA; there is no CUDA generator to save,
    so an empty state is recorded (``torch.cuda.set_rng_state`` queues it lazily and never applies it).
    """
    if torch.cuda.is_available():
        yield
        return
    original = torch.cuda.get_rng_state
    torch.cuda.get_rng_state = lambda device="cuda": torch.empty(0, dtype=torch.uint8)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.get_rng_state = original  # type: ignore[assignment]


class CompleteRemoteFileSystemReader(RemoteFileSystemReader):
    """OLMo's checkpoint reader with the two methods torch's ``StorageReader`` has since made abstract.

    ``olmo.checkpoint.RemoteFileSystemReader`` (used by ``sharded_checkpointer: torch_new`` to restore) lacks
    ``reset`` and ``validate_checkpoint_id``, so with torch 2.13 it cannot even be instantiated and every restore
    fails with ``TypeError: Can't instantiate abstract class``. Reading itself is OLMo's, unchanged.
    """

    def reset(self, checkpoint_id: Optional[Union[str, os.PathLike]] = None) -> None:
        # torch calls this before each read; a reader used again must not keep the last checkpoint's layout.
        self.storage_data = {}
        self._metadata = None
        if checkpoint_id is not None:
            self.path = str(checkpoint_id).rstrip("/")

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Union[str, os.PathLike]) -> bool:
        # Only asked when torch picks a reader by itself; OLMo always passes its reader explicitly, and that
        # reader takes any local path or URL that ``olmo.util.resource_path`` can open.
        return True


def load_sharded_optimizer_state_dict_with_state_key(*args: Any, **kwargs: Any) -> Dict[str, Any]:
    """torch's ``load_sharded_optimizer_state_dict``, with an empty ``state`` where the checkpoint holds none.

    An optimizer that has not stepped yet (OLMo's pre-training checkpoint at step 0, also the checkpoint a run
    preempted before its first ``save_interval`` resumes from) has an empty ``state``; torch's checkpoint writes
    no entry for an empty dict, so the loaded optimizer dict has no ``state`` key and OLMo's
    ``load_fsdp_model_and_optim_state`` fails with ``KeyError: 'state'``.
    """
    from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict

    loaded = load_sharded_optimizer_state_dict(*args, **kwargs)
    optimizer_key = kwargs["optimizer_key"] if "optimizer_key" in kwargs else args[1]
    loaded[optimizer_key].setdefault("state", {})
    return loaded


def complete_torch_new_checkpoint_reader() -> None:
    """Make ``sharded_checkpointer: torch_new`` restore: ``CompleteRemoteFileSystemReader`` and
    ``load_sharded_optimizer_state_dict_with_state_key`` in place of the names ``olmo.checkpoint`` imported."""
    import olmo.checkpoint

    replace_upstream(olmo.checkpoint, "RemoteFileSystemReader", CompleteRemoteFileSystemReader)
    replace_upstream(olmo.checkpoint, "load_sharded_optimizer_state_dict", load_sharded_optimizer_state_dict_with_state_key)


@torch.no_grad()
def init_optimizer_state_without_stepping(optim: torch.optim.Optimizer) -> None:
    """Create every parameter's optimizer state, as olmo_core's ``init_optimizer_state``, leaving parameters as they are.

    olmo_core 0.1.0 creates missing state with an ``optim.step()`` over zero gradients, whenever the optimizer has
    no state yet: before a run's first checkpoint (OLMo's pre-training checkpoint at step 0) and on every resume
    into a fresh optimizer. AdamW's weight decay then shrinks the parameters (``p *= 1 - lr * weight_decay``): at
    step 0 the run starts from other weights than DDP's and Adam counts a step it never took (every later bias
    correction is one step off); on resume the weights just restored are shrunk once more, so a resumed run
    differs from an uninterrupted one. Here the step runs with ``lr`` 0 (AdamW and OLMo's LionW then change no
    parameter by a single bit) and the step counters are set back to 0: the state a fresh optimizer would create
    on its first real step, so that step is the same with or without this call.
    """
    if optim.state:
        return
    learning_rates = [group["lr"] for group in optim.param_groups]
    for group in optim.param_groups:
        group["lr"] = 0.0
        for param in group["params"]:
            # An FSDP rank may hold an empty slice of a parameter; it needs no state.
            if param.numel() > 0:
                param.grad = torch.zeros_like(param, memory_format=torch.preserve_format)
    try:
        optim.step()
    finally:
        optim.zero_grad()
        for group, lr in zip(optim.param_groups, learning_rates):
            group["lr"] = lr
    for state in optim.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = torch.zeros_like(state["step"])


def make_olmo_core_optimizer_state_init_side_effect_free() -> None:
    """Route olmo_core's checkpoint save and load (``sharded_checkpointer: olmo_core``) through
    ``init_optimizer_state_without_stepping``; both look ``init_optimizer_state`` up by its module-level name."""
    import olmo_core.distributed.checkpoint

    replace_upstream(olmo_core.distributed.checkpoint, "init_optimizer_state", init_optimizer_state_without_stepping)


def replace_upstream(module: ModuleType, name: str, replacement: Any) -> None:
    """Set ``module.name`` to ``replacement`` (idempotent), keeping the upstream object in ``REPLACED_UPSTREAM``."""
    current = getattr(module, name)
    if current is not replacement:
        REPLACED_UPSTREAM.setdefault(f"{module.__name__}.{name}", current)
        setattr(module, name, replacement)
