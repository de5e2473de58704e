"""Fourier modes of a modular task's representations: how many frequencies of its label c (for T_ADD,
c = (a + b) mod P) the residual stream uses. It applies to the kinds that declare it (``TaskKind.analyses``);
the classes are always the kind's own labels of (a, b), so a kind over the same group Z_P needs nothing here.

Per residual (layer), the class means ``M[c] = mean of the residual over instances with label c`` are
row-centred (the mean over classes is removed) and projected onto an orthonormal real Fourier basis over c.
Frequency k's share of variance is the squared norm of its projection over the total. A uniform (isotropic)
spread gives frequency k the share ``n_k / (P - 1)``, where ``n_k`` is its number of basis vectors (2, or 1 for
the Nyquist frequency k = P/2 of an even P, which has a cosine and no sine); the paper's criterion counts k when
its share exceeds ``tau`` times that. k and P - k are the same mode, so k runs over 1..floor(P/2).

tau x the uniform share is not a null. The class means of a network that computes nothing already have a
Fourier structure: their quadratic part is a convolution over a of terms in e(a) and e(c - a), so their spectrum
is about the square of the (random) spectrum of the embedding table over the values, heavy-tailed, and single
frequencies exceed tau x uniform by chance (33 "modes" at tau = 3 in a 64-wide model at chance). Permuting the
rows of the class-mean matrix does not reproduce that tail; relabelling the *values* does. So a frequency counts
as a mode only against a value-relabelling null of the same layer: the values are relabelled by a random
permutation sigma (classes: the label of (sigma(a), sigma(b)), e.g. ``(sigma(a) + sigma(b)) mod P``; the same
residuals), and k is a mode when its share /
uniform share exceeds the ``null_level`` quantile, over ``null_permutations`` relabellings, of the *largest*
such ratio over all frequencies. At initialisation the token of each value is random, so the true labelling is
itself a draw from this null: a layer without learned structure shows a mode with probability
``1 - null_level`` (family-wise over frequencies). Both counts are reported: against the null (``modes``) and
against tau alone (``modes_tau``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import factorial
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from olmo.model import OLMo

from olmo_injection.task_kinds import require_analysis, task_kind
from olmo_injection.tasks import Task

from .residual_stream import residual_streams
from .task_prompts import LABEL_POSITION, prompt_ids

LabelRule = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(a, b) arrays -> the task's class of each pair."""


@dataclass
class FourierConfig:
    """How Fourier modes are counted."""

    tau: float = 3.0
    """``modes_tau``: frequencies whose variance share exceeds tau x the uniform share (paper: not stated)."""

    position: int = LABEL_POSITION
    """Token position whose residual is analysed (1 = TOK2, where the sum can first be formed)."""

    residuals: Optional[List[int]] = None
    """Residual indices analysed (0 = embedding, l + 1 = output of block l); default: every block output."""

    null_permutations: int = 200
    """Random relabellings of the values drawn for the null (the same ones for every residual)."""

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


def check_null_computable(num_values: int, modulus: int, cfg: FourierConfig) -> None:
    """ValueError when a task has too few values for the relabelling null that ``cfg`` asks for."""
    if modulus < 3:
        raise ValueError(f"modulus={modulus}: Fourier modes need at least 3 classes (one frequency besides the mean)")
    if factorial(num_values) < cfg.null_permutations:
        raise ValueError(f"fourier null: {num_values} values have only {factorial(num_values)} relabellings, fewer "
                         f"than null_permutations={cfg.null_permutations}; lower null_permutations/null_level "
                         "or use a task with more values")


def share_ratios(class_means: np.ndarray) -> np.ndarray:
    """Each frequency's variance share in units of the uniform share (1 = isotropic), [P//2]."""
    return frequency_shares(class_means) / uniform_shares(class_means.shape[0])


def relabelling_null(features: Dict[str, np.ndarray], values: np.ndarray, label_index: LabelRule, modulus: int,
                     num_permutations: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Per residual, [num_permutations] largest share ratio over frequencies with the values relabelled.

    ``features`` maps a residual's name to its [n, d] features; ``values`` [n, 2] are each instance's (a, b);
    ``label_index(a, b)`` is the task's class of each pair, in 0..modulus-1. One relabelling serves every
    residual (their features are averaged per class together).
    """
    names = list(features)
    widths = np.cumsum([0] + [features[name].shape[1] for name in names])
    stacked = np.hstack([features[name] for name in names])
    null = {name: np.empty(num_permutations) for name in names}
    num_values = int(values.max()) + 1
    for i in range(num_permutations):
        sigma = rng.permutation(num_values)
        means = class_means(stacked, label_index(sigma[values[:, 0]], sigma[values[:, 1]]), modulus)
        for j, name in enumerate(names):
            null[name][i] = share_ratios(means[:, widths[j] : widths[j + 1]]).max()
    return null


def modes_against_null(class_means: np.ndarray, null: np.ndarray, cfg: FourierConfig) -> Dict:
    """Modes of ``class_means`` [P, d] against ``null`` (its layer's ``relabelling_null``) and against tau alone.

    Returns ``{"modes", "modes_tau", "null_threshold_ratio", "null_median_ratio", "shares"}``; ratios are in
    units of the uniform share.
    """
    threshold = float(np.quantile(null, cfg.null_level))
    return {
        "modes": (np.flatnonzero(share_ratios(class_means) > threshold) + 1).tolist(),
        "modes_tau": detected_modes(class_means, cfg.tau).tolist(),
        "null_threshold_ratio": threshold,
        "null_median_ratio": float(np.median(null)),
        "shares": frequency_shares(class_means).round(6).tolist(),
    }


def class_means(features: np.ndarray, classes: np.ndarray, modulus: int) -> np.ndarray:
    """[P, d] mean of ``features`` [n, d] per class in 0..P-1; ValueError if a class has no rows."""
    counts = np.bincount(classes, minlength=modulus)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no instances")
    order = np.argsort(classes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(np.asarray(features, dtype=np.float64)[order], starts, axis=0) / counts[:, None]


def fourier_modes(model: OLMo, task: Task, cfg: FourierConfig) -> Dict:
    """Modes per residual (against the permutation null and against tau alone), their totals and each
    frequency's share, for one model (JSON-ready)."""
    cfg.validate()
    require_analysis(task, "fourier")  # the task's kind says whether this analysis is defined for it
    check_null_computable(task.num_values, task.modulus, cfg)
    ids = np.arange(task.num_values**2)
    residuals = residual_streams(model, prompt_ids(task, ids), [cfg.position])[:, :, 0]
    chosen = cfg.residuals if cfg.residuals is not None else list(range(1, residuals.shape[0]))
    bad = [r for r in chosen if not 0 <= r < residuals.shape[0]]
    if bad:
        raise ValueError(f"residuals={cfg.residuals}: indices {bad} outside 0..{residuals.shape[0] - 1}")
    kind = task_kind(task.kind)

    def label_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return kind.label_index(a, b, task.modulus)

    features = {str(r): residuals[r].numpy().astype(np.float64) for r in chosen}
    null = relabelling_null(features, task.values, label_index, task.modulus, cfg.null_permutations,
                            np.random.default_rng(cfg.seed))
    per_residual = {name: modes_against_null(class_means(x, task.label_index, task.modulus), null[name], cfg)
                    for name, x in features.items()}
    return {
        "total_modes": sum(len(v["modes"]) for v in per_residual.values()),
        "total_modes_tau": sum(len(v["modes_tau"]) for v in per_residual.values()),
        "per_residual": per_residual,
        "null": f"value-relabelling null per residual: {cfg.null_permutations} random relabellings of the values; a "
                f"mode exceeds the {cfg.null_level} quantile of the largest share/uniform ratio over frequencies",
        "config": asdict(cfg),
    }
