"""The student: shared width-N encoder and per-task linear decoders, for many widths at once.

All widths of a sweep live in one pair of tensors. The encoders are stacked row-wise: width ``N_i`` owns rows
``offsets[i] .. offsets[i+1]-1`` of ``encoder`` (total rows R = sum_i N_i, shape (R, d)), and the decoders
are padded within buckets of similar widths. One matmul computes every width's hidden layer (no compute on rows
a width does not have); the batch is cut into single-task chunks, so the decoder step runs as one batched
matmul per bucket over all chunks and all widths of the bucket. Widths never mix: width i's prediction reads
only its own rows, so its loss (and hence gradient) depends only on its own parameters.
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
    (``width_buckets``); ``decoders[b]`` (widths in bucket b, K, m, widest in bucket b) holds those widths'
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
            padded = torch.zeros(len(bucket), num_tasks, block_dim, self.bucket_width[number], dtype=dtype)
            for slot, index in enumerate(bucket):
                padded[slot, :, :, :self.widths[index]] = parts[index][1]
                self.bucket_of_width.append(number)
                self.slot_of_width.append(slot)
            self.decoders.append(nn.Parameter(padded))
        width_of_row = torch.repeat_interleave(torch.arange(self.num_widths), torch.tensor(self.widths))
        position_in_width = torch.arange(self.offsets[-1]) - torch.tensor(self.offsets[:-1])[width_of_row]
        slot_of_row = torch.tensor(self.slot_of_width)[width_of_row]
        self.register_buffer("width_of_row", width_of_row, persistent=False)
        bucket_start = np.concatenate([[0], np.cumsum([len(b) * w for b, w in zip(self.buckets, self.bucket_width)])])
        self.padded_columns = int(bucket_start[-1])
        bucket_of_row = torch.tensor(self.bucket_of_width)[width_of_row]
        # Column of every encoder row in the hidden layer padded per bucket (bucket after bucket, each laid out
        # as (widths in bucket, widest in bucket)).
        self.register_buffer("padded_position", torch.tensor(bucket_start[:-1])[bucket_of_row]
                             + slot_of_row * torch.tensor(self.bucket_width)[bucket_of_row] + position_in_width,
                             persistent=False)

    @property
    def num_widths(self) -> int:
        return len(self.widths)

    def _chunk_layout(self, tasks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Where each row goes when the batch is cut into single-task chunks of ``rows_per_chunk`` rows.

        Returns (slot of every batch row in the chunked layout (B,), task of every chunk (C,), rows per chunk).
        With chunks of ceil(B / K) rows each task present leaves fewer than ceil(B / K) slots empty, so the layout
        has fewer than B + K ceil(B / K) (about 2 B) rows; every chunk needs only one decoder, which lets one
        batched matmul per bucket replace a Python loop over tasks.
        """
        num_tasks = self.decoders[0].shape[1]
        rows_per_chunk = -(-tasks.shape[0] // num_tasks)
        counts = torch.bincount(tasks, minlength=num_tasks)
        chunks_per_task = -(-counts // rows_per_chunk)
        chunk_task = torch.repeat_interleave(torch.arange(num_tasks, device=tasks.device), chunks_per_task)
        order = torch.argsort(tasks, stable=True)
        first_row_of_task = torch.cumsum(counts, 0) - counts
        rank_in_task = torch.empty_like(order)
        rank_in_task[order] = torch.arange(tasks.shape[0], device=tasks.device) - first_row_of_task[tasks[order]]
        first_chunk_of_task = torch.cumsum(chunks_per_task, 0) - chunks_per_task
        slot = first_chunk_of_task[tasks] * rows_per_chunk + rank_in_task
        return slot, chunk_task, rows_per_chunk

    def predictions(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Every width's prediction for every row: x (B, d), tasks (B,) -> (num_widths, B, m).

        One matmul gives all widths' hidden units; the rows are then laid out in single-task chunks
        (``_chunk_layout``) and the hidden units padded per bucket, so each bucket's decoders act on all chunks
        and all its widths in one batched matmul. No Python loop runs over tasks or widths, only over the few
        buckets.
        """
        slot, chunk_task, rows_per_chunk = self._chunk_layout(tasks)
        chunked_rows = chunk_task.shape[0] * rows_per_chunk
        hidden = x @ self.encoder.T                                   # (B, R): all widths in one matmul
        padded = hidden.new_zeros(x.shape[0], self.padded_columns).index_copy(1, self.padded_position, hidden)
        # One split (not a slice per bucket): its backward is one cat, not a full-size zero buffer per bucket.
        bucket_columns = [len(bucket) * width for bucket, width in zip(self.buckets, self.bucket_width)]
        per_bucket = torch.split(padded, bucket_columns, 1)
        outputs = []
        for bucket, width, decoders, hidden_part in zip(self.buckets, self.bucket_width, self.decoders, per_bucket):
            # (widths in bucket, chunks * rows per chunk, widest): the layout bmm wants, built in one copy.
            rows = hidden_part.new_zeros(len(bucket), chunked_rows, width).index_copy(
                1, slot, hidden_part.view(-1, len(bucket), width).transpose(0, 1))
            per_chunk_decoders = decoders.index_select(1, chunk_task)   # (widths in bucket, C, m, widest)
            products = torch.bmm(rows.view(-1, rows_per_chunk, width), per_chunk_decoders.flatten(0, 1).transpose(1, 2))
            outputs.append(products.view(len(bucket), chunked_rows, -1))
        return torch.cat(outputs, dim=0).index_select(1, slot)

    def forward(self, x: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Predictions of every width: x (B, d), tasks (B,) -> (B, m, num_widths), in the batch's row order."""
        return self.predictions(x, tasks).permute(1, 2, 0)

    def per_width_loss(self, x: torch.Tensor, tasks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each width's batch mean of the squared error summed over the m outputs. Shape (num_widths,)."""
        return (self.predictions(x, tasks) - targets).square().sum(dim=2).mean(dim=1)

    def width_parameters(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Detached (encoder (N, d), decoders (K, m, N)) of the ``index``-th width."""
        rows = slice(self.offsets[index], self.offsets[index + 1])
        decoders = self.decoders[self.bucket_of_width[index]].detach()
        return self.encoder.detach()[rows], decoders[self.slot_of_width[index], :, :, :self.widths[index]]

    def per_width_grad_norm(self) -> torch.Tensor:
        """Euclidean norm of each width's own gradient (encoder rows and decoders). Shape (num_widths,)."""
        # vector_norm reduces without materialising the squared gradient (a square() here cost as much as AdamW).
        encoder_sq = torch.linalg.vector_norm(self.encoder.grad, dim=1).square()
        squared = encoder_sq.new_zeros(self.num_widths).index_add(0, self.width_of_row, encoder_sq)
        decoder_sq = torch.cat([torch.linalg.vector_norm(decoders.grad, dim=(1, 2, 3)).square()
                                for decoders in self.decoders])
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
            decoders.grad.mul_(coefficient[bucket][:, None, None, None])
        return norms
