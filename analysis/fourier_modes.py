"""Fourier modes of T_ADD representations: how many frequencies of c = (a + b) mod P the residual stream uses.

Per residual (layer), the class means ``M[c] = mean of the residual over instances with (a + b) mod P = c`` are
row-centred (the mean over classes is removed) and projected onto an orthonormal real Fourier basis over c.
Frequency k's share of variance is the squared norm of its projection over the total. A uniform (isotropic)
spread gives frequency k the share ``n_k / (P - 1)``, where ``n_k`` is its number of basis vectors (2, or 1 for
the Nyquist frequency k = P/2 of an even P, which has a cosine and no sine). k is a mode when its share exceeds
``tau`` times that. k and P - k are the same mode, so k runs over 1..floor(P/2) (OLMO_NOTES, pitfalls).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from olmo.model import OLMo

from olmo_injection.tasks import Task

from .residual_stream import residual_streams
from .task_prompts import LABEL_POSITION, prompt_ids


@dataclass
class FourierConfig:
    """How Fourier modes are counted."""

    tau: float = 3.0
    """A frequency is a mode when its variance share exceeds tau x the uniform share (paper: not stated)."""

    position: int = LABEL_POSITION
    """Token position whose residual is analysed (1 = TOK2, where the sum can first be formed)."""

    residuals: Optional[List[int]] = None
    """Residual indices analysed (0 = embedding, l + 1 = output of block l); default: every block output."""

    def validate(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau={self.tau}: must be > 0")
        if self.position not in (0, 1):
            raise ValueError(f"position={self.position}: must be 0 (TOK1) or 1 (TOK2)")


def fourier_basis(modulus: int) -> tuple:
    """Orthonormal real Fourier basis over 0..P-1 without the constant: ([P-1, P] rows, [P-1] frequency of each)."""
    c = np.arange(modulus)
    rows, freqs = [], []
    for k in range(1, modulus // 2 + 1):
        cos = np.cos(2 * np.pi * k * c / modulus)
        rows.append(cos / np.linalg.norm(cos))
        freqs.append(k)
        if 2 * k != modulus:  # the Nyquist frequency of an even P has no sine
            sin = np.sin(2 * np.pi * k * c / modulus)
            rows.append(sin / np.linalg.norm(sin))
            freqs.append(k)
    return np.stack(rows), np.asarray(freqs)


def frequency_shares(class_means: np.ndarray) -> np.ndarray:
    """Share of variance of each frequency k = 1..P//2 (index k - 1) of row-centred ``class_means`` [P, d]."""
    modulus = class_means.shape[0]
    centred = class_means - class_means.mean(axis=0, keepdims=True)
    basis, freqs = fourier_basis(modulus)
    power = ((basis @ centred) ** 2).sum(axis=1)
    per_frequency = np.bincount(freqs - 1, weights=power, minlength=modulus // 2)
    return per_frequency / (centred**2).sum()


def uniform_shares(modulus: int) -> np.ndarray:
    """The share of each frequency k = 1..P//2 under an isotropic spread: its basis-vector count / (P - 1)."""
    _, freqs = fourier_basis(modulus)
    return np.bincount(freqs - 1, minlength=modulus // 2) / (modulus - 1)


def detected_modes(class_means: np.ndarray, tau: float) -> np.ndarray:
    """Frequencies k (1-based, ascending) whose share exceeds ``tau`` times the uniform share."""
    shares = frequency_shares(class_means)
    return np.flatnonzero(shares > tau * uniform_shares(class_means.shape[0])) + 1


def class_means(features: np.ndarray, classes: np.ndarray, modulus: int) -> np.ndarray:
    """[P, d] mean of ``features`` [n, d] per class in 0..P-1; ValueError if a class has no rows."""
    counts = np.bincount(classes, minlength=modulus)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no instances")
    sums = np.zeros((modulus, features.shape[1]))
    np.add.at(sums, classes, features)
    return sums / counts[:, None]


def fourier_modes(model: OLMo, task: Task, cfg: FourierConfig) -> Dict:
    """Modes per residual and their total for one model, with each frequency's share (JSON-ready)."""
    cfg.validate()
    if task.kind != "add":
        raise ValueError(f"task {task.name!r} has kind {task.kind!r}: Fourier modes are defined for 'add'")
    ids = np.arange(task.num_values**2)
    residuals = residual_streams(model, prompt_ids(task, ids), [cfg.position])[:, :, 0]
    chosen = cfg.residuals if cfg.residuals is not None else list(range(1, residuals.shape[0]))
    bad = [r for r in chosen if not 0 <= r < residuals.shape[0]]
    if bad:
        raise ValueError(f"residuals={cfg.residuals}: indices {bad} outside 0..{residuals.shape[0] - 1}")
    classes = task.values.sum(axis=1) % task.modulus
    per_residual = {}
    for r in chosen:
        means = class_means(residuals[r].numpy(), classes, task.modulus)
        per_residual[str(r)] = {
            "modes": detected_modes(means, cfg.tau).tolist(),
            "shares": frequency_shares(means).round(6).tolist(),
        }
    total = sum(len(v["modes"]) for v in per_residual.values())
    return {"total_modes": total, "per_residual": per_residual, "config": asdict(cfg)}
