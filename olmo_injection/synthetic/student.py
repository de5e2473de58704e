"""The student: shared width-N encoder and per-task linear decoders, for many widths at once.

All widths of a sweep live in one pair of tensors. The encoders are stacked row-wise: width ``N_i`` owns rows
``offsets[i] .. offsets[i+1]-1`` of ``encoder`` (total rows R = sum_i N_i, shape (R, d)), and the decoders
are padded within buckets of similar widths. One matmul computes every width's hidden layer (no compute on rows
a width does not have); the decoder step then runs as one batched matmul over the widths of a bucket per
task. Widths never mix: width i's prediction reads only its own rows, so its loss (and hence gradient)
depends only on its own parameters.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

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


def width_buckets(widths: Sequence[int], max_padding_ratio: float = 2.0) -> List[List[int]]:
    """Consecutive width indices grouped so that within a group the widest is at most ``max_padding_ratio``
    times the narrowest (``widths`` increasing). Padding each group to its widest width then wastes at most
    that factor of decoder work, instead of padding every width to the widest of the sweep."""
    buckets: List[List[int]] = []
    for index, width in enumerate(widths):
        if buckets and width <= max_padding_ratio * widths[buckets[-1][0]]:
            buckets[-1].append(index)
        else:
            buckets.append([index])
    return buckets


class BatchedStudent(nn.Module):
    """Linear-bottleneck regressors of several widths sharing one parameter layout.

    ``encoder`` (R, d) stacks every width's encoder rows. The widths are grouped into buckets of similar size
    (``width_buckets``); ``decoders[b]`` (K, widths in bucket b, m, widest in bucket b) holds those widths'
    per-task decoders, zero beyond each width's N columns. The padding entries stay exactly zero because they
    only ever meet zero hidden units (zero gradient, and AdamW maps a zero parameter with zero gradient to zero).
    """

    def __init__(self, widths: Sequence[int], ambient_dim: int, num_tasks: int, block_dim: int, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.widths = tuple(int(n) for n in widths)
        self.buckets = width_buckets(self.widths)
        parts = [init_width(n, ambient_dim, num_tasks, block_dim, seed, dtype) for n in self.widths]
        self.encoder = nn.Parameter(torch.cat([enc for enc, _ in parts], dim=0))
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.widths)]))
        self.bucket_width = [self.widths[bucket[-1]] for bucket in self.buckets]
        self.decoders = nn.ParameterList()
        self.bucket_of_width, self.slot_of_width = [], []
        for number, bucket in enumerate(self.buckets):
            padded = torch.zeros(num_tasks, len(bucket), block_dim, self.bucket_width[number], dtype=dtype)
            for slot, index in enumerate(bucket):
                padded[:, slot, :, :self.widths[index]] = parts[index][1]
                self.bucket_of_width.append(number)
                self.slot_of_width.append(slot)
            self.decoders.append(nn.Parameter(padded))
        width_of_row = torch.repeat_interleave(torch.arange(self.num_widths), torch.tensor(self.widths))
        position_in_width = torch.arange(self.offsets[-1]) - torch.tensor(self.offsets[:-1])[width_of_row]
        slot_of_row = torch.tensor(self.slot_of_width)[width_of_row]
        self.register_buffer("width_of_row", width_of_row, persistent=False)
        self.register_buffer("padded_position", slot_of_row * torch.tensor(self.bucket_width)[
            torch.tensor(self.bucket_of_width)[width_of_row]] + position_in_width, persistent=False)

    @property
    def num_widths(self) -> int:
        return len(self.widths)

    def padded_hidden(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Hidden units per bucket: (B, widths in bucket, widest in bucket), zero beyond each width's N."""
        hidden = x @ self.encoder.T                                   # (B, R): all widths in one matmul
        per_bucket = []
        for bucket, width in zip(self.buckets, self.bucket_width):
            rows = slice(self.offsets[bucket[0]], self.offsets[bucket[-1] + 1])
            padded = hidden.new_zeros(hidden.shape[0], len(bucket) * width)
            padded = padded.index_copy(1, self.padded_position[rows], hidden[:, rows])
            per_bucket.append(padded.view(-1, len(bucket), width))
        return per_bucket

    def grouped_predictions(self, x: torch.Tensor, tasks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predictions with the batch regrouped by task: returns (order, predictions (num_widths, B, m)) where
        column b of the predictions belongs to row ``order[b]`` of the batch.

        Grouping lets each task's decoders act on all of its rows and all widths of a bucket in one batched
        matmul; the Python loops run over the K tasks present and the few buckets, never over widths.
        """
        order = torch.argsort(tasks, stable=True)
        counts = torch.bincount(tasks, minlength=self.decoders[0].shape[0]).tolist()
        present = [task for task, count in enumerate(counts) if count]
        bucket_outputs = []
        for hidden, decoders in zip(self.padded_hidden(x[order]), self.decoders):
            # unbind/split once: per-task indexing or slicing would make autograd allocate a full-size
            # gradient buffer for every task present.
            per_task_decoders = decoders.unbind(0)
            per_task_hidden = torch.split(hidden.transpose(0, 1), [counts[task] for task in present], dim=1)
            bucket_outputs.append(torch.cat([torch.bmm(rows, per_task_decoders[task].transpose(1, 2))
                                             for task, rows in zip(present, per_task_hidden)], dim=1))
        return order, torch.cat(bucket_outputs, dim=0)

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
        rows = slice(self.offsets[index], self.offsets[index + 1])
        decoders = self.decoders[self.bucket_of_width[index]].detach()
        return self.encoder.detach()[rows], decoders[:, self.slot_of_width[index], :, :self.widths[index]]

    def per_width_grad_norm(self) -> torch.Tensor:
        """Euclidean norm of each width's own gradient (encoder rows and decoders). Shape (num_widths,)."""
        encoder_sq = self.encoder.grad.pow(2).sum(dim=1)
        squared = encoder_sq.new_zeros(self.num_widths).index_add(0, self.width_of_row, encoder_sq)
        decoder_sq = torch.cat([decoders.grad.pow(2).sum(dim=(0, 2, 3)) for decoders in self.decoders])
        return (squared + decoder_sq).sqrt()

    def clip_grad_norm_per_width_(self, max_norm: float) -> torch.Tensor:
        """Scale each width's gradient as ``torch.nn.utils.clip_grad_norm_`` would for that width trained alone.

        Returns the pre-clip norms (num_widths,). Clipping by the global norm across widths would couple the
        widths (one width's large gradient would shrink every other width's step).
        """
        norms = self.per_width_grad_norm()
        coefficient = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        self.encoder.grad.mul_(coefficient[self.width_of_row][:, None])
        for bucket, decoders in zip(self.buckets, self.decoders):
            decoders.grad.mul_(coefficient[bucket][None, :, None, None])
        return norms
