"""Measurements of a trained student, exact in the population (no probe-sampling noise).

Inputs are standard Gaussian, so for any matrix A, ``E||A x||^2 = ||A||_F^2``: the population MSE of task k is
``||D_k W - Lambda_k^{1/2} B_k^T||_F^2`` exactly, which is the infinite-probe limit of the paper's fresh
probe batches. Every covariance here is diagonal in the coordinate basis, so the subspace metrics need only
the diagonal of the projector P_U onto the encoder's row space (the per-coordinate leverage scores).
P_U comes from an SVD of the encoder, so every signal metric is invariant to the gauge W -> G W (G invertible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .student import BatchedStudent
from .theory import residual_gradient_bound


def row_space_basis(encoder: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis (d, r) of the row space of ``encoder`` (N, d); singular values below
    ``rtol * largest`` count as zero, so a rank-deficient encoder gets the projector of its true row space."""
    left, singular, right_t = torch.linalg.svd(encoder.to(torch.float64), full_matrices=False)
    keep = singular > rtol * singular.max()
    return right_t[keep].T


def projector_diagonal(basis: torch.Tensor) -> torch.Tensor:
    """diag(P_U) for P_U = Q Q^T: squared row norms of the basis. Shape (d,)."""
    return basis.pow(2).sum(dim=1)


def task_signal(leverage: torch.Tensor, spectra: torch.Tensor) -> torch.Tensor:
    """s_k = tr(P_U C_k) / tr(C_k), in [0, 1]. ``spectra`` (K, m) -> (K,)."""
    per_coordinate = leverage.view(spectra.shape) * spectra
    return per_coordinate.sum(dim=1) / spectra.sum(dim=1)


def corrected_signal(signal: torch.Tensor, width: int, ambient_dim: int) -> torch.Tensor:
    """s~_k = (s_k - E[s_k]) / (1 - E[s_k]) with E[s_k] = N/d for a uniformly random N-dim subspace.
    0 at the random baseline, 1 at full capture; NaN when N = d, where it is undefined (every N-dim subspace
    is the whole space, so s_k = 1 says nothing about learning)."""
    baseline = width / ambient_dim
    if baseline >= 1.0:
        return torch.full_like(signal, float("nan"))
    return (signal - baseline) / (1.0 - baseline)


def task_losses(encoder: torch.Tensor, decoders: torch.Tensor, spectra: torch.Tensor) -> torch.Tensor:
    """Population MSE of every task with the learned decoders: ||D_k W - Lambda_k^{1/2} B_k^T||_F^2. (K,)."""
    num_tasks, block = spectra.shape
    effective = torch.einsum("kmn,nd->kmd", decoders.to(torch.float64), encoder.to(torch.float64))
    own_block = effective.view(num_tasks, block, num_tasks, block)[torch.arange(num_tasks), :, torch.arange(num_tasks)]
    on_block_error = own_block - torch.diag_embed(spectra.sqrt())
    return effective.pow(2).sum(dim=(1, 2)) - own_block.pow(2).sum(dim=(1, 2)) + on_block_error.pow(2).sum(dim=(1, 2))


def frequent_residual(leverage: torch.Tensor, frequent_weights: torch.Tensor) -> torch.Tensor:
    """delta_F = tr((I - P_U) M_F), with M_F = diag(frequent_weights) (d,) = sum_{k in F} pi_k C_k."""
    # leverage can exceed 1 by rounding (e.g. N = d); a residual is never negative.
    return ((1.0 - leverage).clamp(min=0.0) * frequent_weights).sum()


def frequent_gradient_norm(basis: torch.Tensor, frequent_weights: torch.Tensor) -> torch.Tensor:
    """||G_F(U)||_F for the frequent tasks' loss tr(M_F) - tr(U^T M_F U) on the Grassmannian:
    G_F = -2 (I - P_U) M_F U, with U the orthonormal ``basis`` (d, r). Basis-independent."""
    weighted = frequent_weights[:, None] * basis
    residual = weighted - basis @ (basis.T @ weighted)
    return 2.0 * residual.norm()


@dataclass
class Measurement:
    """Metrics of every width at one step. Arrays are numpy, shape (num_widths, K) or (num_widths,)."""

    task_loss: np.ndarray
    normalised_loss: np.ndarray
    signal: np.ndarray
    corrected_signal: np.ndarray
    leading_feature_corrected_signal: np.ndarray
    """s~ of each task's leading feature alone: (P_U[j1, j1] - N/d) / (1 - N/d), j1 = the task's first coordinate."""
    frequent_residual: np.ndarray
    frequent_gradient_norm: np.ndarray
    frequent_gradient_bound: np.ndarray


def measure(student: BatchedStudent, spectra: np.ndarray, prior: np.ndarray, frequent: np.ndarray) -> Measurement:
    """Evaluate every width of ``student``; ``frequent`` holds the frequent set's task indices."""
    spectra_t = torch.as_tensor(spectra, dtype=torch.float64, device=student.encoder.device)
    weights = np.zeros_like(spectra)
    weights[frequent] = prior[frequent, None] * spectra[frequent]
    weights_t = torch.as_tensor(weights.ravel(), dtype=torch.float64, device=student.encoder.device)
    top_frequent = float(weights.max())
    ambient_dim = spectra.size
    rows = {name: [] for name in ("loss", "signal", "corrected", "leading", "residual", "grad")}
    for index, width in enumerate(student.widths):
        encoder, decoders = student.width_parameters(index)
        basis = row_space_basis(encoder)
        leverage = projector_diagonal(basis)
        signal = task_signal(leverage, spectra_t)
        rows["loss"].append(task_losses(encoder, decoders, spectra_t))
        rows["signal"].append(signal)
        rows["corrected"].append(corrected_signal(signal, width, ambient_dim))
        rows["leading"].append(corrected_signal(leverage.view(spectra_t.shape)[:, 0], width, ambient_dim))
        rows["residual"].append(frequent_residual(leverage, weights_t))
        rows["grad"].append(frequent_gradient_norm(basis, weights_t))
    stacked = {name: torch.stack(values).cpu().numpy() for name, values in rows.items()}
    return Measurement(
        task_loss=stacked["loss"],
        normalised_loss=stacked["loss"] / spectra.sum(axis=1),
        signal=stacked["signal"],
        corrected_signal=stacked["corrected"],
        leading_feature_corrected_signal=stacked["leading"],
        frequent_residual=stacked["residual"],
        frequent_gradient_norm=stacked["grad"],
        frequent_gradient_bound=residual_gradient_bound(top_frequent, stacked["residual"]),
    )
