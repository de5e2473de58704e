"""Token files in OLMo's format for tests (a plain module: test files import it; ``conftest`` names collide)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_token_file(path: Path, num_tokens: int, seed: int = 0, eos_every: int = 37) -> Path:
    """A raw uint16 token file (Dolma's .npy shard format) with ordinary ids and an EOS every ``eos_every``."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(100, 50000, size=num_tokens, dtype=np.uint16)
    tokens[eos_every - 1 :: eos_every] = 50279
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens.tofile(path)
    return path
