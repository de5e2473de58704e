"""The data: a mixture of K linear-regression tasks living in orthogonal coordinate blocks.

Task k (0-based index here, task k+1 in the paper) occupies input coordinates ``k*m .. (k+1)*m - 1`` of
``x ~ N(0, I_d)``, ``d = K*m``. Its teacher is ``y = Lambda_k^{1/2} x[block k]`` (output dimension m), so its
input covariance seen through the teacher is ``C_k = B_k Lambda_k B_k^T``, diagonal in the coordinate basis.
That diagonality is what lets every metric and prediction here be computed from per-coordinate numbers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import MixtureConfig

# A task sampler returns the task id of every row of the batch at a given step (the batch size may vary
# from step to step, as in the matched-frequency injection runs).
TaskSampler = Callable[[int, torch.Generator], torch.Tensor]


def task_prior(config: MixtureConfig) -> np.ndarray:
    """pi_k proportional to (k+1)**-beta for k = 0..K-1, summing to one. Shape (K,)."""
    raw = np.arange(1, config.num_tasks + 1, dtype=np.float64) ** -config.prior_exponent
    return raw / raw.sum()


def spectrum_exponents(config: MixtureConfig) -> np.ndarray:
    """alpha_k for every task: shared, or linear from the most frequent to the rarest task. Shape (K,)."""
    if config.spectrum_exponent_rarest is None:
        return np.full(config.num_tasks, config.spectrum_exponent)
    return np.linspace(config.spectrum_exponent, config.spectrum_exponent_rarest, config.num_tasks)


def task_spectra(config: MixtureConfig) -> np.ndarray:
    """lambda_{k,j} proportional to (j+1)**-alpha_k, non-increasing in j, scaled per task. Shape (K, m)."""
    j = np.arange(1, config.block_dim + 1, dtype=np.float64)
    spectra = j[None, :] ** -spectrum_exponents(config)[:, None]
    if config.spectrum_normalisation == "trace":
        return spectra / spectra.sum(axis=1, keepdims=True)
    return spectra / spectra[:, :1]


def iid_task_sampler(prior: np.ndarray, batch_size: int) -> TaskSampler:
    """Every row's task drawn independently from ``prior`` (the standard mixture stream)."""
    probabilities = torch.as_tensor(prior, dtype=torch.float64)

    def sample(step: int, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)

    return sample


def sample_batch(tasks: torch.Tensor, config: MixtureConfig, sqrt_spectra: torch.Tensor,
                 generator: torch.Generator) -> tuple:
    """Fresh inputs and teacher targets for the given task ids.

    Returns ``(x, y)``: x of shape (B, d) drawn from N(0, I_d), y of shape (B, m) with
    ``y[b] = sqrt(lambda_{tasks[b]}) * x[b, block tasks[b]]``. ``sqrt_spectra`` is (K, m) on the wanted
    device and dtype; ``generator`` lives on that device too.
    """
    batch = tasks.shape[0]
    x = torch.randn(batch, config.ambient_dim, generator=generator, dtype=sqrt_spectra.dtype,
                    device=sqrt_spectra.device)
    own_block = x.view(batch, config.num_tasks, config.block_dim)[torch.arange(batch, device=x.device), tasks]
    return x, own_block * sqrt_spectra[tasks]
