"""Analytic predictions of paper Sec. 3 and App. C, as pure numpy functions.

Theorem 3: with ``M = sum_k pi_k C_k`` the width-N optimum spans the top-N eigenspace of M. Because the
task blocks are orthogonal and each ``C_k`` is diagonal there, the eigenvalues of M are exactly the utilities
``u_{k,j} = pi_k * lambda_{k,j}``, so the optimum keeps the N largest utilities. Ties between equal
utilities make the optimum non-unique; we break them towards the more frequent task, then the leading
feature, which is the order in which ``utility_order`` lists features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def utilities(prior: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """u_{k,j} = pi_k * lambda_{k,j}. Shape (K, m)."""
    return prior[:, None] * spectra


def utility_order(utility: np.ndarray) -> np.ndarray:
    """Flat indices (k*m + j) of all features, largest utility first, ties to the lower task then feature.

    Utilities are compared after rounding to 12 significant digits, so features whose utilities are equal in
    exact arithmetic (e.g. pi_1*lambda_{1,8} = pi_4*lambda_{4,1} at beta = 1.5, alpha = 1) tie reliably.
    """
    flat = utility.ravel()
    rounded = np.array([float(f"{u:.12g}") for u in flat])
    return np.lexsort((np.arange(flat.size), -rounded))


def retained_features(utility: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """n_k(N): how many of task k's features a width-N optimum keeps. Shape (len(widths), K), integers."""
    num_tasks, block = utility.shape
    task_of_rank = utility_order(utility) // block
    counts = np.zeros((len(widths), num_tasks), dtype=np.int64)
    for row, width in enumerate(widths):
        counts[row] = np.bincount(task_of_rank[:width], minlength=num_tasks)
    return counts


def predicted_task_loss(spectra: np.ndarray, retained: np.ndarray) -> np.ndarray:
    """l*_k(N) = sum_{j > n_k(N)} lambda_{k,j} (spectra non-increasing in j). Shape of ``retained``."""
    tail = np.concatenate([np.cumsum(spectra[:, ::-1], axis=1)[:, ::-1], np.zeros((spectra.shape[0], 1))], axis=1)
    return np.take_along_axis(tail[None, :, :], retained[..., None], axis=2)[..., 0]


def predicted_normalised_loss(spectra: np.ndarray, retained: np.ndarray) -> np.ndarray:
    """l*_k(N) / tr(C_k): the mean predictor's loss is tr(C_k) because targets have zero mean."""
    return predicted_task_loss(spectra, retained) / spectra.sum(axis=1)


def critical_width(utility: np.ndarray) -> np.ndarray:
    """Smallest N at which the optimum keeps at least one feature of task k: 1 + rank of u_{k,1}. Shape (K,)."""
    rank = np.empty(utility.size, dtype=np.int64)
    rank[utility_order(utility)] = np.arange(utility.size)
    return rank.reshape(utility.shape)[:, 0] + 1


def min_width_for_features(utility: np.ndarray, features_per_task: int) -> int:
    """Theorem 3's converse: the least N at which every task keeps at least ``features_per_task`` features.

    That is the number of features whose utility is at least ``min_k u_{k,n}`` (with the tie-break order).
    """
    if not 1 <= features_per_task <= utility.shape[1]:
        raise ValueError(f"features_per_task = {features_per_task} is invalid: must be in 1..{utility.shape[1]}")
    rank = np.empty(utility.size, dtype=np.int64)
    rank[utility_order(utility)] = np.arange(utility.size)
    return int(rank.reshape(utility.shape)[:, features_per_task - 1].max()) + 1


def frequent_set(prior: np.ndarray, mass: float) -> np.ndarray:
    """Indices of the smallest set of most frequent tasks whose prior mass reaches ``mass`` (sorted)."""
    order = np.argsort(-prior, kind="stable")
    cumulative = np.cumsum(prior[order])
    size = int(np.searchsorted(cumulative, mass - 1e-12) + 1)
    return np.sort(order[:min(size, prior.size)])


def frequent_eigenvalues(utility: np.ndarray, frequent: np.ndarray) -> np.ndarray:
    """mu^F: eigenvalues of M_F = sum_{k in F} pi_k C_k, largest first (zeros for the other tasks' blocks
    are omitted)."""
    return np.sort(utility[frequent].ravel())[::-1]


def optimal_frequent_residual(utility: np.ndarray, frequent: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """delta_F^*(N) = sum_{i > N} mu_i^F: the residual of the best width-N encoder for the frequent tasks."""
    mu = frequent_eigenvalues(utility, frequent)
    tail = np.concatenate([np.cumsum(mu[::-1])[::-1], [0.0]])
    return tail[np.minimum(np.asarray(widths), mu.size)]


def prop6_critical_width(utility: np.ndarray, frequent: np.ndarray, rare_utility: float) -> int:
    """Prop. 6: N_crit = min{N : mu_N^F <= rare_utility} (mu_N^F = 0 beyond the frequent features)."""
    mu = frequent_eigenvalues(utility, frequent)
    return int(np.count_nonzero(mu > rare_utility)) + 1


def residual_gradient_bound(top_frequent_eigenvalue: float, residual: np.ndarray) -> np.ndarray:
    """Theorem 4: ||G_F(U)||_F <= 2 sqrt(lambda_1(M_F) * delta_F(U))."""
    return 2.0 * np.sqrt(top_frequent_eigenvalue * np.asarray(residual))


@dataclass(frozen=True)
class OneNeuronToy:
    """Example 7: one unit-norm neuron u = (cos theta, sin theta) over a common and a rare rank-one task.

    With theta measured from the common direction, L_c = lambda_c sin^2(theta), L_r = lambda_r cos^2(theta),
    and the rare task's alignment is a = sin^2(theta). Gradient descent on theta with step ``learning_rate``
    maps theta -> theta - lr lambda_c sin(2 theta) on a common step, theta + lr lambda_r sin(2 theta) on a rare one.
    """

    common_strength: float
    rare_strength: float
    learning_rate: float

    def step(self, theta: float, rare: bool) -> float:
        """One gradient step on the rare (``rare=True``) or the common task's loss."""
        strength = self.rare_strength if rare else -self.common_strength
        return theta + self.learning_rate * strength * np.sin(2.0 * theta)

    def mean_drift(self, theta: float, rare_probability: float) -> float:
        """E[d theta] = -lr (p_c lambda_c - p_r lambda_r) sin(2 theta): towards the task of larger utility."""
        return -self.learning_rate * ((1 - rare_probability) * self.common_strength
                                      - rare_probability * self.rare_strength) * np.sin(2.0 * theta)

    def gap_decay_factor(self, gap: int) -> float:
        """Linearised near theta = 0: a = sin^2 theta shrinks by (1 - 2 lr lambda_c)^(2 G) over G common steps."""
        return (1.0 - 2.0 * self.learning_rate * self.common_strength) ** (2 * gap)

    def simulate(self, theta0: float, gap: int, observations: int) -> np.ndarray:
        """Rare alignment sin^2(theta) after every step of ``observations`` cycles (one rare step, then ``gap``
        common steps). Shape (observations * (gap + 1) + 1,)."""
        thetas = [theta0]
        for _ in range(observations):
            thetas.append(self.step(thetas[-1], rare=True))
            for _ in range(gap):
                thetas.append(self.step(thetas[-1], rare=False))
        return np.sin(np.asarray(thetas)) ** 2
