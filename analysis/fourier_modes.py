"""Fourier modes of T_ADD representations: how many frequencies of c = (a + b) mod P the residual stream uses.

Per residual (layer), the class means ``M[c] = mean of the residual over instances with (a + b) mod P = c`` are
row-centred (the mean over classes is removed) and projected onto an orthonormal real Fourier basis over c.
Frequency k's share of variance is the squared norm of its projection over the total. A uniform (isotropic)
spread gives frequency k the share ``n_k / (P - 1)``, where ``n_k`` is its number of basis vectors (2, or 1 for
the Nyquist frequency k = P/2 of an even P, which has a cosine and no sine). k is a mode when its share exceeds
``tau`` times that. k and P - k are the same mode, so k runs over 1..floor(P/2).

tau x the uniform share is not a null: class means of a model that computes nothing are far from isotropic (a
few directions dominate, especially at small width), and then single frequencies exceed tau x uniform by chance
(33 "modes" in a 64-wide model at chance). So a frequency counts as a mode only against a class-permutation null
of the same layer: the rows of the class-mean matrix are permuted (the classes relabelled at random, which keeps
the representation's geometry and destroys any cyclic order), and k is a mode when its share / uniform share
exceeds the ``null_level`` quantile, over ``null_permutations`` relabellings, of the *largest* such ratio over all
frequencies (a family-wise level: a layer without cyclic structure shows no mode with probability
``null_level``). Both counts are reported: against the null (``modes``) and against tau alone (``modes_tau``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import factorial
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

    null_permutations: int = 200
    """Class relabellings drawn for each layer's null."""

    null_level: float = 0.99
    """Quantile of the null's largest share ratio that a mode must exceed (family-wise over frequencies)."""

    seed: int = 0
    """Seeds the null's permutations."""

    def validate(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau={self.tau}: must be > 0")
        if not 0 < self.null_level < 1:
            raise ValueError(f"null_level={self.null_level}: must be in (0, 1)")
        needed = int(np.ceil(1 / (1 - self.null_level)))
        if self.null_permutations < needed:
            raise ValueError(f"null_permutations={self.null_permutations}: the {self.null_level} quantile of the null "
                             f"needs at least {needed} permutations")
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


def check_null_computable(modulus: int, cfg: FourierConfig) -> None:
    """ValueError when a modulus has too few classes for the permutation null that ``cfg`` asks for."""
    if modulus < 3:
        raise ValueError(f"modulus={modulus}: Fourier modes need at least 3 classes (one frequency besides the mean)")
    if factorial(modulus) < cfg.null_permutations:
        raise ValueError(f"fourier null: modulus={modulus} has only {factorial(modulus)} class permutations, fewer "
                         f"than null_permutations={cfg.null_permutations}; lower null_permutations/null_level "
                         "or use a task with more values")


def permutation_null(class_means: np.ndarray, num_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """[num_permutations] largest share / uniform share over frequencies, for class means with rows permuted."""
    uniform = uniform_shares(class_means.shape[0])
    return np.array([
        (frequency_shares(class_means[rng.permutation(class_means.shape[0])]) / uniform).max()
        for _ in range(num_permutations)
    ])


def modes_against_null(class_means: np.ndarray, cfg: FourierConfig, rng: np.random.Generator) -> Dict:
    """Modes of ``class_means`` [P, d] against the permutation null and against tau alone (see the module).

    Returns ``{"modes", "modes_tau", "null_threshold_ratio", "null_median_ratio", "shares"}``; ratios are in
    units of the uniform share.
    """
    shares = frequency_shares(class_means)
    ratio = shares / uniform_shares(class_means.shape[0])
    null = permutation_null(class_means, cfg.null_permutations, rng)
    threshold = float(np.quantile(null, cfg.null_level))
    return {
        "modes": (np.flatnonzero(ratio > threshold) + 1).tolist(),
        "modes_tau": detected_modes(class_means, cfg.tau).tolist(),
        "null_threshold_ratio": threshold,
        "null_median_ratio": float(np.median(null)),
        "shares": shares.round(6).tolist(),
    }


def class_means(features: np.ndarray, classes: np.ndarray, modulus: int) -> np.ndarray:
    """[P, d] mean of ``features`` [n, d] per class in 0..P-1; ValueError if a class has no rows."""
    counts = np.bincount(classes, minlength=modulus)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no instances")
    sums = np.zeros((modulus, features.shape[1]))
    np.add.at(sums, classes, features)
    return sums / counts[:, None]


def fourier_modes(model: OLMo, task: Task, cfg: FourierConfig) -> Dict:
    """Modes per residual (against the permutation null and against tau alone), their totals and each
    frequency's share, for one model (JSON-ready)."""
    cfg.validate()
    if task.kind != "add":
        raise ValueError(f"task {task.name!r} has kind {task.kind!r}: Fourier modes are defined for 'add'")
    check_null_computable(task.modulus, cfg)
    ids = np.arange(task.num_values**2)
    residuals = residual_streams(model, prompt_ids(task, ids), [cfg.position])[:, :, 0]
    chosen = cfg.residuals if cfg.residuals is not None else list(range(1, residuals.shape[0]))
    bad = [r for r in chosen if not 0 <= r < residuals.shape[0]]
    if bad:
        raise ValueError(f"residuals={cfg.residuals}: indices {bad} outside 0..{residuals.shape[0] - 1}")
    classes = task.values.sum(axis=1) % task.modulus
    rng = np.random.default_rng(cfg.seed)
    per_residual = {str(r): modes_against_null(class_means(residuals[r].numpy(), classes, task.modulus), cfg, rng)
                    for r in chosen}
    return {
        "total_modes": sum(len(v["modes"]) for v in per_residual.values()),
        "total_modes_tau": sum(len(v["modes_tau"]) for v in per_residual.values()),
        "per_residual": per_residual,
        "null": f"class-permutation null per residual: {cfg.null_permutations} relabellings, a mode exceeds the "
                f"{cfg.null_level} quantile of the largest share/uniform ratio",
        "config": asdict(cfg),
    }
