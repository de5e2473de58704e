"""The student: shared width-N encoder and per-task linear decoders, for many widths at once.

All widths of a sweep live in one pair of tensors. The encoders are stacked row-wise: width ``N_i`` owns rows
``offsets[i] .. offsets[i+1]-1`` of ``encoder`` (total rows R = sum_i N_i, shape (R, d)), and the decoders
are padded to the widest width. One matmul computes every width's hidden layer (no compute on rows a width does
not have, which is where the cost is); the cheap decoder step then runs as one batched matmul over widths
per task. Widths never mix: width i's prediction reads only its own rows, so its loss (and hence gradient)
depends only on its own parameters.
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
    """Linear-bottleneck regressors of several widths sharing one parameter layout.

    ``encoder`` (R, d) stacks every width's encoder rows. ``decoders`` (K, num_widths, m, N_max) holds every
    width's per-task decoders, zero beyond that width's N columns; those padding entries stay exactly zero
    because they only ever meet zero hidden units (zero gradient, and AdamW maps a zero parameter with zero
    gradient to zero).
    """

    def __init__(self, widths: Sequence[int], ambient_dim: int, num_tasks: int, block_dim: int, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.widths = tuple(int(n) for n in widths)
        self.max_width = max(self.widths)
        parts = [init_width(n, ambient_dim, num_tasks, block_dim, seed, dtype) for n in self.widths]
        self.encoder = nn.Parameter(torch.cat([enc for enc, _ in parts], dim=0))
        decoders = torch.zeros(num_tasks, self.num_widths, block_dim, self.max_width, dtype=dtype)
        for index, (_, dec) in enumerate(parts):
            decoders[:, index, :, :dec.shape[2]] = dec
        self.decoders = nn.Parameter(decoders)
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.widths)]))
        width_of_row = torch.repeat_interleave(torch.arange(self.num_widths), torch.tensor(self.widths))
        position_in_width = torch.arange(self.offsets[-1]) - torch.tensor(self.offsets[:-1])[width_of_row]
        self.register_buffer("width_of_row", width_of_row, persistent=False)
        self.register_buffer("padded_position", width_of_row * self.max_width + position_in_width, persistent=False)

    @property
    def num_widths(self) -> int:
        return len(self.widths)

    def padded_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden units of every width, (B, num_widths, N_max), zero beyond each width's N."""
        hidden = x @ self.encoder.T                                   # (B, R): all widths in one matmul
        padded = hidden.new_zeros(hidden.shape[0], self.num_widths * self.max_width)
        return padded.index_copy(1, self.padded_position, hidden).view(-1, self.num_widths, self.max_width)

    def grouped_predictions(self, x: torch.Tensor, tasks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predictions with the batch regrouped by task: returns (order, predictions (num_widths, B, m)) where
        column b of the predictions belongs to row ``order[b]`` of the batch.

        Grouping lets each task's decoders act on all of its rows and all widths in one batched matmul, so
        the Python loop runs over the K tasks present, never over widths.
        """
        order = torch.argsort(tasks, stable=True)
        hidden = self.padded_hidden(x[order]).transpose(0, 1)         # (num_widths, B, N_max)
        counts = torch.bincount(tasks, minlength=self.decoders.shape[0]).tolist()
        # unbind/split once: per-task indexing or slicing would make autograd allocate a full-size gradient
        # buffer for every task present.
        per_task_decoders = self.decoders.unbind(0)
        present = [task for task, count in enumerate(counts) if count]
        per_task_hidden = torch.split(hidden, [counts[task] for task in present], dim=1)
        chunks = [torch.bmm(rows, per_task_decoders[task].transpose(1, 2))
                  for task, rows in zip(present, per_task_hidden)]
        return order, torch.cat(chunks, dim=1)

    def forward(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Predictions of every width: x (B, d), tasks (B,) -> (B, m, num_widths), in the batch's row order."""
        order, grouped = self.grouped_predictions(x, tasks)
        predictions = torch.empty_like(grouped)
        predictions[:, order] = grouped
        return predictions.permute(1, 2, 0)

    def per_width_loss(self, x: torch.Tensor, tasks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each width's batch mean of the squared error summed over the m outputs. Shape (num_widths,)."""
        order, grouped = self.grouped_predictions(x, tasks)
        return (grouped - targets[order]).pow(2).sum(dim=2).mean(dim=1)

    def width_parameters(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Detached (encoder (N, d), decoders (K, m, N)) of the ``index``-th width."""
        width = self.widths[index]
        rows = slice(self.offsets[index], self.offsets[index + 1])
        return self.encoder.detach()[rows], self.decoders.detach()[:, index, :, :width]

    def per_width_grad_norm(self) -> torch.Tensor:
        """Euclidean norm of each width's own gradient (encoder rows and decoders). Shape (num_widths,)."""
        encoder_sq = self.encoder.grad.pow(2).sum(dim=1)
        squared = encoder_sq.new_zeros(self.num_widths).index_add(0, self.width_of_row, encoder_sq)
        return (squared + self.decoders.grad.pow(2).sum(dim=(0, 2, 3))).sqrt()

    def clip_grad_norm_per_width_(self, max_norm: float) -> torch.Tensor:
        """Scale each width's gradient as ``torch.nn.utils.clip_grad_norm_`` would for that width trained alone.

        Returns the pre-clip norms (num_widths,). Clipping by the global norm across widths would couple the
        widths (one width's large gradient would shrink every other width's step).
        """
        norms = self.per_width_grad_norm()
        coefficient = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        self.encoder.grad.mul_(coefficient[self.width_of_row][:, None])
        self.decoders.grad.mul_(coefficient[None, :, None, None])
        return norms
