"""What loading a checkpoint may make Python do: rebuild tensors and the few objects OLMo 0.6.0 saves, nothing else.

Unpickling runs whatever a file names, so a checkpoint from someone else could run code when a run resumes from
it or an analysis reads it. Every ``torch.load`` of a checkpoint therefore runs with ``weights_only=True`` (torch's
default since 2.6; OLMo's ``olmo.checkpoint.load_state_dict`` passes nothing) and only ``OLMO_CHECKPOINT_GLOBALS``
allowed beyond tensors and plain containers. A file holding anything else is refused with
``UntrustedCheckpointError`` (one line naming the file and what it holds) before that thing is called.

The one way past the allow-list is ``trusting_checkpoints()`` (``olmo-inject train --trust_checkpoint``,
``load_checkpoint(..., trust_checkpoint_code=True)`` in analysis): inside it a refused file is unpickled in full,
which runs any code it holds. ``olmo_patches.apply_olmo_patches`` installs all of this for OLMo's own loads; the
analysis loader applies the same patches. The list and how it was found: ``docs/checkpoints.md``.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import pickle
import re
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

import numpy
import torch
from numpy.core.multiarray import _reconstruct

log = logging.getLogger(__name__)

OLMO_CHECKPOINT_GLOBALS: Tuple[Any, ...] = (
    # ``Trainer.trainer_state_dict`` (``train.pt``, ``train/rank{N}.pt``): ``rng.numpy`` is
    # ``numpy.random.get_state()``, whose MT19937 key is a uint32 array; torch also meets the dtype's class.
    _reconstruct,
    numpy.ndarray,
    numpy.dtype,
    type(numpy.dtype(numpy.uint32)),  # numpy.dtypes.UInt32DType
    # ... and ``checkpoints``, ``unsharded_checkpoints``, ``ephemeral_checkpoints`` are lists of ``Path``s.
    pathlib.PosixPath,
)
"""The globals OLMo's checkpoints hold besides tensors (model.pt and optim.pt hold only tensors, dicts and
numbers; ``rng.python`` is a tuple of ints). Found by saving DDP, olmo_core and torch_new checkpoints and loading
them with ``weights_only=True``; ``tests/test_checkpoint_safety.py`` loads a real checkpoint with this list and
fails to without any one entry, so a change in what OLMo saves shows up."""

TRUST_OPTIONS = "--trust_checkpoint (olmo-inject train) / trust_checkpoint_code=True (analysis)"
"""How the opt-in is spelt, for the refusal message."""

_trusted = False


class UntrustedCheckpointError(ValueError):
    """A checkpoint file holds something outside the allow-list; it was refused before that thing was called."""


FORCE_FULL_UNPICKLING_ENV = "TORCH_FORCE_NO_" + "WEIGHTS_ONLY_LOAD"
"""torch reads this at every ``torch.load``: when true, a load that passes no ``weights_only`` (OLMo's) unpickles
everything, so a shared checkpoint could run code. Spelt in two parts so a search for it finds no setter here."""


def refuse_forced_full_unpickling() -> None:
    """``UntrustedCheckpointError`` (one line) when the environment sets ``FORCE_FULL_UNPICKLING_ENV`` the way
    torch honours it: the allow-list would then be bypassed for every checkpoint this process loads."""
    import os

    value = os.environ.get(FORCE_FULL_UNPICKLING_ENV)
    if value is not None and value.lower() in ("1", "y", "yes", "true"):  # exactly what torch.load treats as set
        raise UntrustedCheckpointError(
            f"environment {FORCE_FULL_UNPICKLING_ENV}={value}: makes every torch.load unpickle anything, so a shared "
            f"checkpoint could run code; unset it (to load a checkpoint you trust, use {TRUST_OPTIONS})"
        )


def allow_olmo_checkpoint_globals() -> None:
    """Let ``weights_only`` loads in this process rebuild ``OLMO_CHECKPOINT_GLOBALS`` (idempotent)."""
    torch.serialization.add_safe_globals(list(OLMO_CHECKPOINT_GLOBALS))


@contextmanager
def trusting_checkpoints(trusted: bool = True) -> Iterator[None]:
    """Within: a checkpoint file the allow-list refuses is unpickled in full (running any code it holds),
    with a warning naming the file. ``trusted=False`` keeps the allow-list (also inside an outer trust)."""
    global _trusted
    outer, _trusted = _trusted, trusted
    try:
        yield
    finally:
        _trusted = outer


def load_refused_torch_file(path: Any, refusal: pickle.UnpicklingError, map_location: Optional[str] = None) -> Any:
    """What to do with a file ``torch.load(weights_only=True)`` refused: raise ``UntrustedCheckpointError``
    naming it, or, inside ``trusting_checkpoints()``, load it with full unpickling."""
    if not _trusted:
        raise UntrustedCheckpointError(_refusal_message(path, _refused_in_torch_file(path, refusal))) from None
    log.warning("loading %s with full unpickling (trusted checkpoint): it holds %s", path,
                _refused_in_torch_file(path, refusal))
    return torch.load(path, map_location=map_location, weights_only=False)


def _refusal_message(path: Any, refused: str) -> str:
    # One line: what was refused, where, and the one way to load it anyway.
    return (f"checkpoint file {path} holds {refused}, which OLMo checkpoints never contain: refused to load it "
            f"(allowed: tensors and the classes in docs/checkpoints.md). If you trust its source: {TRUST_OPTIONS}, "
            f"which runs any code the file holds")


def _refused_in_torch_file(path: Any, refusal: pickle.UnpicklingError) -> str:
    """The globals in ``path`` outside the allow-list (a static scan), else torch's own reason, on one line."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, unreadable: torch's reason below still says what it refused
        unsafe = []
    if unsafe:
        return ", ".join(sorted(unsafe))
    # A class torch meets only while unpickling (no GLOBAL opcode names it), or an opcode it does not allow.
    reason = re.search(r"WeightsUnpickler error: ([^\n]*)", str(refusal))
    return reason.group(1).strip() if reason else str(refusal).strip().splitlines()[0]


def add_trust_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust_checkpoint``: the command line's one opt-in to ``trusting_checkpoints()``."""
    parser.add_argument(
        "--trust_checkpoint", action="store_true",
        help="load a checkpoint (resume, load_path) even if it holds objects outside the allow-list of "
        "docs/checkpoints.md; unpickling it runs any code it holds, so only for a checkpoint you trust",
    )
