"""Every change the project makes to how ai2-olmo 0.6.0 behaves, in one place.

The entry point calls ``apply_olmo_patches()`` once per process; ``InjectionTrainer`` uses the scoped
``cuda_rng_state_without_cuda()``. Each patch names the upstream code it relies on; tests in
``tests/test_trainer.py`` pin that code and fail loudly if an upgrade changes it.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

log = logging.getLogger(__name__)

NO_WEIGHTS_ONLY_LOAD_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def apply_olmo_patches() -> None:
    """Apply the process-wide patches (idempotent)."""
    allow_full_checkpoint_loading()
    make_olmo_wandb_calls_failsafe()


def allow_full_checkpoint_loading() -> None:
    """Let OLMo's checkpointer load its own trainer and optimizer state on torch >= 2.6.

    ``olmo.checkpoint.load_state_dict`` calls ``torch.load`` without ``weights_only``; since torch 2.6 that
    defaults to ``weights_only=True``, which refuses the numpy RNG state and ``Path`` lists OLMo saves in
    ``train.pt``. torch reads this variable at every ``torch.load`` call. Only our own checkpoints are loaded.
    """
    os.environ[NO_WEIGHTS_ONLY_LOAD_ENV] = "1"


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
