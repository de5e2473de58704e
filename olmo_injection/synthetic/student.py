"""The student: shared width-N encoder and per-task linear decoders, for many widths at once.

All widths of a sweep live in one pair of tensors. The encoders are stacked row-wise: width ``N_i`` owns rows
``offsets[i] .. offsets[i+1]-1`` of ``encoder`` (total rows R = sum_i N_i, shape (R, d)), and the decoders
are stacked the same way along their last axis (``decoders`` of shape (K, m, R)). One matmul then computes
every width's hidden layer, and a per-width segment sum gives every width's prediction. Widths never mix:
width i's prediction reads only its own rows, so its loss (and hence gradient) depends only on its own
parameters. There is no padding, so no compute is spent on rows a width does not have.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import nn


def width_seed(seed: int, width: int) -> int:
    """The initialisation seed of one width, derived from (run seed, width) so that it does not depend on
    which other widths are trained alongside."""
    return int(np.random.SeedSequence([seed, width]).generate_state(1)[0])


def init_width(width: int, ambient_dim: int, num_tasks: int, block_dim: int, seed: int,
               dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Initial (encoder (N, d), decoders (K, m, N)) of one width, on the CPU.

    The encoder has random orthonormal rows (so P_U is a uniformly random N-dimensional projector and every
    task's signal starts at its random baseline N/d); the decoders are Kaiming-uniform with fan-in N and
    linear gain, i.e. U(-sqrt(3/N), sqrt(3/N)).
    """
    generator = torch.Generator().manual_seed(width_seed(seed, width))
    gaussian = torch.randn(ambient_dim, width, generator=generator, dtype=torch.float64)
    orthonormal_columns, upper = torch.linalg.qr(gaussian)
    # Fix QR's sign ambiguity so the basis is Haar-distributed and reproducible.
    encoder = (orthonormal_columns * torch.sign(torch.diagonal(upper))).T
    bound = (3.0 / width) ** 0.5
    decoders = (torch.rand(num_tasks, block_dim, width, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return encoder.to(dtype), decoders.to(dtype)


class BatchedStudent(nn.Module):
    """Linear-bottleneck regressors of several widths sharing one stacked parameter layout."""

    def __init__(self, widths: Sequence[int], ambient_dim: int, num_tasks: int, block_dim: int, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.widths = tuple(int(n) for n in widths)
        parts = [init_width(n, ambient_dim, num_tasks, block_dim, seed, dtype) for n in self.widths]
        self.encoder = nn.Parameter(torch.cat([enc for enc, _ in parts], dim=0))
        self.decoders = nn.Parameter(torch.cat([dec for _, dec in parts], dim=2))
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.widths)]))
        self.register_buffer("width_of_row", torch.repeat_interleave(
            torch.arange(len(self.widths)), torch.tensor(self.widths)), persistent=False)

    @property
    def num_widths(self) -> int:
        return len(self.widths)

    def forward(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Predictions of every width: x (B, d), tasks (B,) -> (B, m, num_widths)."""
        hidden = x @ self.encoder.T                                   # (B, R): all widths in one matmul
        per_row = self.decoders[tasks] * hidden[:, None, :]           # (B, m, R): each sample's own decoder
        out = per_row.new_zeros(per_row.shape[0], per_row.shape[1], self.num_widths)
        return out.index_add(2, self.width_of_row, per_row)

    def width_parameters(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Detached (encoder (N, d), decoders (K, m, N)) of the ``index``-th width."""
        rows = slice(self.offsets[index], self.offsets[index + 1])
        return self.encoder.detach()[rows], self.decoders.detach()[:, :, rows]

    def per_width_grad_norm(self) -> torch.Tensor:
        """Euclidean norm of each width's own gradient (encoder rows and decoder columns). Shape (num_widths,)."""
        per_row = self.encoder.grad.pow(2).sum(dim=1) + self.decoders.grad.pow(2).sum(dim=(0, 1))
        squared = per_row.new_zeros(self.num_widths).index_add(0, self.width_of_row, per_row)
        return squared.sqrt()

    def clip_grad_norm_per_width_(self, max_norm: float) -> torch.Tensor:
        """Scale each width's gradient as ``torch.nn.utils.clip_grad_norm_`` would for that width trained alone.

        Returns the pre-clip norms (num_widths,). Clipping by the global norm across widths would couple the
        widths (one width's large gradient would shrink every other width's step).
        """
        norms = self.per_width_grad_norm()
        coefficient = torch.clamp(max_norm / (norms + 1e-6), max=1.0)[self.width_of_row]
        self.encoder.grad.mul_(coefficient[:, None])
        self.decoders.grad.mul_(coefficient)
        return norms
