"""The gradient on the task neurons, split into task-token and non-task-token parts: g = g_t + g_nt.

A linear layer's weight gradient is a sum over token positions of (output gradient) x (input activation).
``NeuronGradCapture`` records, with module hooks on the first block's ``ff_proj`` and ``ff_out``, the input
activations in the forward pass and the output gradients in the same backward pass the optimizer uses, and sums
the outer products of the selected neurons' rows and columns separately over task positions and over all
other positions. No extra backward pass, no parameter ``.grad`` is read (so it holds under FSDP, whose
gradients are flat shards), and whatever scaling the loss had (OLMo divides each micro-batch's summed loss by
the device batch's token count) is already inside the output gradients. Summed over micro-batches and averaged
over ranks (as DDP and FSDP average gradients) it equals the gradient the optimizer sees for those rows, before
clipping.

Also here: the task reference direction g_r (the task loss gradient over the task's instances, restricted to
the neurons), the cosine metrics, and offline versions of both for any checkpoint and batch.

    with NeuronGradCapture(first_mlp_block(model), neurons) as capture:
        capture.add_task_mask(task_mask)           # [rows, seq] bool, for the next forward passes, in order
        loss.backward()                            # ... after the forward pass(es)
    grads = capture.gradients()                    # NeuronGradients: task, non_task, total ([K, 3, d_model])
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from olmo.model import OLMo, OLMoBlock
from olmo.torch_util import get_global_rank, get_world_size
from olmo.train import Trainer, cross_entropy_loss

from . import metric_names as mn
from .injecting_dataset import INJECTED_TASK, task_token_mask
from .neurons import PARTS_PER_NEURON, check_neurons, ff_proj_rows, first_mlp_block, num_neurons, top_neurons

if TYPE_CHECKING:
    from .tasks import Task

# (TOK1, TOK2) is enough context for the LABEL loss: the logits at position 1 see positions 0 and 1 only.
LABEL_CONTEXT_TOKENS = 2


@dataclass(frozen=True)
class NeuronGradients:
    """A gradient restricted to K neurons, split by token positions; each tensor ``[K, 3, d_model]`` float32."""

    task: torch.Tensor
    """g_t: the sum over task-token positions."""

    non_task: torch.Tensor
    """g_nt: the sum over all other positions."""

    @property
    def total(self) -> torch.Tensor:
        """g = g_t + g_nt."""
        return self.task + self.non_task


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over the default process group (no-op in a single process); returns it."""
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class NeuronGradCapture:
    """Accumulates g_t and g_nt of ``neurons`` of ``block`` over every forward/backward pass inside ``with``.

    Task masks are queued with ``add_task_mask`` before the backward passes, in the order of the forward passes:
    each ``ff_proj`` forward with gradient takes the next ``rows`` rows of the queue (so a device batch's mask can be
    queued once and the micro-batches consume it in order, whatever their size). Forward passes without gradient
    (evaluation under ``torch.no_grad``) are ignored. The hooks are removed on leaving the ``with`` block, even on
    an error. Activation checkpointing (non-reentrant, as OLMo uses it) is supported: the recomputation inside the
    backward pass is not counted again. So is ``torch.compile`` of the block (not with ``fullgraph=True``, which
    forbids the graph breaks the hooks need).
    """

    def __init__(self, block: OLMoBlock, neurons: torch.Tensor, *, record_outputs: bool = False):
        """``record_outputs``: keep each forward's ``ff_proj`` output for ``pop_ff_proj_outputs`` (offline use,
        where the caller back-propagates with ``torch.autograd.grad``); off in training, where keeping them
        would hold one ``[rows, seq, mlp_hidden_size]`` tensor per micro-batch until the step ends."""
        self._block = block
        self._record_outputs = record_outputs
        total = num_neurons(block)
        device = block.ff_out.weight.device
        self.neurons = check_neurons(neurons, total).to(device)
        self._proj_rows = ff_proj_rows(self.neurons, total)
        shape = (len(self.neurons), PARTS_PER_NEURON, block.ff_out.out_features)
        self._task = torch.zeros(shape, dtype=torch.float32, device=device)
        self._non_task = torch.zeros(shape, dtype=torch.float32, device=device)
        self._queued_masks: List[torch.Tensor] = []
        self._ff_out_mask: Optional[torch.Tensor] = None
        self._ff_proj_outputs: List[torch.Tensor] = []
        self._handles: List[Any] = []

    def __enter__(self) -> "NeuronGradCapture":
        # In a block compiled with torch.compile the hooks run eagerly, one graph break each: Dynamo neither
        # traces nor guards on their Python state (the mask queue changes with every micro-batch and would
        # recompile the block each time), and the tensors they see and hook are real, so the capture is exact.
        self._handles = [
            self._block.ff_proj.register_forward_hook(torch.compiler.disable(self._on_ff_proj_forward)),
            self._block.ff_out.register_forward_hook(torch.compiler.disable(self._on_ff_out_forward)),
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._ff_proj_outputs = []

    def add_task_mask(self, task_mask: torch.Tensor) -> None:
        """Queue ``[rows, seq]`` bool, True at task-token input positions, for the next forward passes."""
        if task_mask.dtype != torch.bool or task_mask.dim() != 2:
            raise ValueError(
                f"task_mask: dtype {task_mask.dtype}, shape {tuple(task_mask.shape)}; need bool [rows, seq]"
            )
        self._queued_masks.append(task_mask)

    def pop_ff_proj_outputs(self) -> List[torch.Tensor]:
        """The ``ff_proj`` outputs recorded since the last call (graph tensors), for ``torch.autograd.grad``."""
        outputs, self._ff_proj_outputs = self._ff_proj_outputs, []
        return outputs

    def gradients(self) -> NeuronGradients:
        """g_t and g_nt summed over the backward passes so far, on this rank (copies).

        Raises ``RuntimeError`` if queued mask rows were never consumed by a forward pass.
        """
        if self._queued_masks:
            rows = sum(m.shape[0] for m in self._queued_masks)
            raise RuntimeError(f"{rows} queued task-mask rows were not consumed by any forward pass")
        return NeuronGradients(task=self._task.clone(), non_task=self._non_task.clone())

    def _take_mask(self, rows: int, seq_len: int, device: torch.device) -> torch.Tensor:
        if not self._queued_masks:
            raise RuntimeError("a first-block forward pass with gradient found no queued task mask (add_task_mask)")
        head = self._queued_masks[0]
        if head.shape[1] != seq_len or head.shape[0] < rows:
            raise RuntimeError(
                f"forward pass of [{rows}, {seq_len}] tokens does not match the queued task mask {tuple(head.shape)}"
            )
        if head.shape[0] == rows:
            self._queued_masks.pop(0)
        else:
            self._queued_masks[0] = head[rows:]
        return head[:rows].to(device, non_blocking=True)

    @staticmethod
    def _skip(output: torch.Tensor) -> bool:
        # No gradient (evaluation), or an activation-checkpoint recomputation: that one runs inside the backward
        # pass, and its outputs are not in the graph the gradient flows through (the first pass's outputs are).
        return not output.requires_grad or torch._C._current_graph_task_id() != -1

    def _on_ff_proj_forward(self, module, inputs, output) -> None:
        if self._skip(output):
            return
        x = inputs[0].detach()
        mask = self._take_mask(x.shape[0], x.shape[1], x.device)
        self._ff_out_mask = mask
        if self._record_outputs:
            self._ff_proj_outputs.append(output)
        output.register_hook(lambda grad: self._accumulate_ff_proj(x, mask, grad))

    def _on_ff_out_forward(self, module, inputs, output) -> None:
        if self._skip(output):
            return
        # ff_out always follows the ff_proj of the same micro-batch (OLMo block forward), so it shares its mask.
        assert self._ff_out_mask is not None, "ff_out ran without a preceding ff_proj forward"
        mask, self._ff_out_mask = self._ff_out_mask, None
        acts = inputs[0].detach()[..., self.neurons]
        output.register_hook(lambda grad: self._accumulate_ff_out(acts, mask, grad))

    @staticmethod
    def _split_by_mask(weights: torch.Tensor, inputs: torch.Tensor, mask: torch.Tensor):
        """(sum over task positions, sum over others) of ``weights[p]^T inputs[p]``; both ``[cols_w, cols_in]``.

        The mask multiplies the narrow neuron-sized factor, so the two sums are exact partitions, not a difference.
        """
        weights = weights.reshape(-1, weights.shape[-1]).float()
        inputs = inputs.reshape(-1, inputs.shape[-1]).float()
        is_task = mask.reshape(-1, 1).to(weights.dtype)
        return (weights * is_task).T @ inputs, (weights * (1.0 - is_task)).T @ inputs

    def _accumulate_ff_proj(self, ff_norm_out: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor) -> None:
        k = len(self.neurons)
        task, non_task = self._split_by_mask(grad.detach()[..., self._proj_rows], ff_norm_out, mask)
        # [2K, d] rows are (value rows, gate rows) -> [K, 2, d]
        self._task[:, :2] += task.reshape(2, k, -1).transpose(0, 1)
        self._non_task[:, :2] += non_task.reshape(2, k, -1).transpose(0, 1)

    def _accumulate_ff_out(self, acts: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor) -> None:
        task, non_task = self._split_by_mask(acts, grad.detach(), mask)
        self._task[:, 2] += task
        self._non_task[:, 2] += non_task


def reduce_over_ranks(grads: NeuronGradients) -> NeuronGradients:
    """Average over ranks, as DDP/FSDP average parameter gradients (identity in a single process)."""
    world_size = get_world_size()
    stacked = all_reduce_sum_(torch.stack([grads.task, grads.non_task])) / world_size
    return NeuronGradients(task=stacked[0], non_task=stacked[1])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors taken as flat vectors; NaN when either is zero (undefined)."""
    a, b = a.double().flatten(), b.double().flatten()
    denominator = a.norm() * b.norm()
    if denominator == 0:
        return float("nan")
    return float(a @ b / denominator)


def interference_metrics(grads: NeuronGradients, reference: torch.Tensor) -> Dict[str, float]:
    """cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) and the L2 norms of g, g_t, g_nt, under ``grad/`` keys.

    A cosine is NaN when its vector is zero (``cos_t_ref`` on a batch without task tokens).
    """
    return {
        mn.GRAD_COS_G_REF: cosine(grads.total, reference),
        mn.GRAD_COS_T_REF: cosine(grads.task, reference),
        mn.GRAD_COS_NT_REF: cosine(grads.non_task, reference),
        mn.GRAD_NORM_G: float(grads.total.norm()),
        mn.GRAD_NORM_T: float(grads.task.norm()),
        mn.GRAD_NORM_NT: float(grads.non_task.norm()),
    }


def task_reference_gradient(
    model: OLMo,
    instances: np.ndarray,
    neurons: torch.Tensor,
    *,
    batch_size: int = 1024,
    autocast_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """g_r: gradient of the mean LABEL-token loss over ``instances``, restricted to ``neurons``; ``[K, 3, d_model]``.

    ``instances`` is ``[n, 3]`` (TOK1, TOK2, LABEL) token ids (``Task.instances[ids]``), the loss is the
    cross-entropy of LABEL given (TOK1, TOK2), averaged over all ``n``. With several ranks each takes every
    ``world_size``-th instance, in the same number of passes of at most ``batch_size`` on every rank, and the
    sums are added, so every rank returns the same g_r. Runs in eval mode (no dropout, the training RNG is
    untouched). ``model`` is a bare OLMo model, whose parameters' ``.grad`` are never written, or its FSDP
    wrapper (which gathers the sharded parameters): then a full backward pass runs, through FSDP's own hooks,
    and the wrapper's gradients are set to None afterwards, so call it only where ``.grad`` is not needed
    (the training hook calls it before the step's ``zero_grad``). ``torch.autograd.grad`` through FSDP would
    skip those hooks and leave FSDP with new parameter objects that the optimizer does not hold.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    if batch_size < 1:
        raise ValueError(f"grad_interference.reference_batch_size={batch_size}: must be at least 1")
    world_size, rank = get_world_size(), get_global_rank()
    if len(instances) < world_size:
        raise ValueError(f"{len(instances)} reference instances cannot be split over {world_size} ranks")
    through_fsdp = isinstance(model, FullyShardedDataParallel)
    block = first_mlp_block(model)
    device = block.ff_out.weight.device
    local = torch.as_tensor(np.asarray(instances)[rank::world_size], dtype=torch.int64, device=device)
    # Ranks hold n // world_size or one more instance: the same number of passes on each (FSDP's collectives).
    passes = math.ceil(math.ceil(len(instances) / world_size) / batch_size)
    was_training = model.training
    model.eval()
    try:
        with NeuronGradCapture(block, neurons, record_outputs=not through_fsdp) as capture:
            for chunk in torch.tensor_split(local, passes):
                context = chunk[:, :LABEL_CONTEXT_TOKENS]
                capture.add_task_mask(torch.ones_like(context, dtype=torch.bool))
                with _autocast(device, autocast_dtype):
                    # Only position 1's logits enter the loss: skip the LM head at position 0.
                    logits = model(input_ids=context, last_logits_only=True).logits[:, -1]
                loss = F.cross_entropy(logits.float(), chunk[:, LABEL_CONTEXT_TOKENS], reduction="sum") / len(instances)
                if through_fsdp:
                    loss.backward()
                else:
                    torch.autograd.grad(loss, capture.pop_ff_proj_outputs())
            reference = capture.gradients().total
    finally:
        model.train(was_training)
        if through_fsdp:
            model.zero_grad(set_to_none=True)
    return all_reduce_sum_(reference)


def select_task_neurons(
    model: OLMo,
    instances: np.ndarray,
    num_task_neurons: int,
    *,
    batch_size: int = 1024,
    autocast_dtype: Optional[torch.dtype] = None,
) -> tuple:
    """The top-``num_task_neurons`` first-block neurons by the norm of their task-loss gradient over ``instances``.

    Returns ``(ids [K] int64, gradient_norms [K] float32, reference [K, 3, d_model])``, ids by decreasing norm;
    ``reference`` is g_r restricted to the chosen neurons, a by-product of the same pass.
    """
    all_neurons = torch.arange(num_neurons(first_mlp_block(model)))
    gradient = task_reference_gradient(
        model, instances, all_neurons, batch_size=batch_size, autocast_dtype=autocast_dtype
    )
    ids = top_neurons(gradient, num_task_neurons)
    chosen = gradient[ids.to(gradient.device)]
    return ids, chosen.flatten(1).norm(dim=1).cpu(), chosen


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """The training forward's autocast (OLMo: ``cfg.autocast_precision`` on CUDA), or nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def olmo_labels(batch: Dict[str, Any]) -> torch.Tensor:
    """OLMo's training labels: input ids shifted left, masked positions -100. Computed by OLMo's own
    ``Trainer.get_labels``, which reads no trainer state (pinned in tests/test_grad_decomposition.py), so the
    offline analyses that have no trainer use the same rule as training."""
    return Trainer.get_labels(None, batch)  # type: ignore[arg-type]


def olmo_micro_batch_loss(
    model: OLMo, micro_batch: Dict[str, Any], batch_size_in_tokens: int, *, z_loss: bool = False
) -> torch.Tensor:
    """The loss OLMo's ``train_micro_batch`` back-propagates: summed token CE (+ z-loss) / device-batch tokens."""
    logits = model(
        input_ids=micro_batch["input_ids"],
        attention_mask=micro_batch.get("attention_mask"),
        attention_bias=micro_batch.get("attention_bias"),
        doc_lens=micro_batch.get("doc_lens"),
        max_doc_lens=micro_batch.get("max_doc_lens"),
    ).logits
    logits = logits[..., :-1, :].reshape(-1, logits.size(-1))
    ce, z = cross_entropy_loss(logits, olmo_labels(micro_batch).view(-1), reduction="sum", compute_z_loss=z_loss)
    loss = ce if z is None else ce + z
    return loss / batch_size_in_tokens


def split_rows(batch: Dict[str, Any], microbatch_size: int) -> List[Dict[str, Any]]:
    """Micro-batches of ``microbatch_size`` rows, in order (tensor fields only), as OLMo's ``split_batch``."""
    rows = batch["input_ids"].shape[0]
    return [
        {key: value[start : start + microbatch_size] for key, value in batch.items() if isinstance(value, torch.Tensor)}
        for start in range(0, rows, microbatch_size)
    ]


def batch_neuron_gradients(
    model: OLMo,
    batch: Dict[str, Any],
    task_mask: torch.Tensor,
    neurons: torch.Tensor,
    *,
    microbatch_size: Optional[int] = None,
    z_loss: bool = False,
) -> NeuronGradients:
    """g_t and g_nt of OLMo's training loss on ``batch`` (one rank's device batch), without touching ``.grad``.

    Same loss and scaling as OLMo's ``train_batch``: each micro-batch's summed loss divided by the device
    batch's token count. Averaged over ranks when a process group is initialised (every rank passes its batch).
    """
    block = first_mlp_block(model)
    batch_size_in_tokens = batch["input_ids"].numel()
    with NeuronGradCapture(block, neurons, record_outputs=True) as capture:
        capture.add_task_mask(task_mask)
        for micro_batch in split_rows(batch, microbatch_size or batch["input_ids"].shape[0]):
            loss = olmo_micro_batch_loss(model, micro_batch, batch_size_in_tokens, z_loss=z_loss)
            torch.autograd.grad(loss, capture.pop_ff_proj_outputs())
        grads = capture.gradients()
    return reduce_over_ranks(grads)


def task_positions(batch: Dict[str, Any], task_index: int) -> torch.Tensor:
    """``[rows, seq]`` bool: the injected token positions of rows holding an instance of task ``task_index``.

    Tokens of other injected tasks are not this task's tokens: they count in g_nt.
    """
    return task_token_mask(batch) & (batch[INJECTED_TASK] == task_index)[:, None]


def reference_instances(task: "Task", split: str = "all") -> np.ndarray:
    """``[n, 3]`` (TOK1, TOK2, LABEL) of the instances that define g_r: ``all`` (the paper), ``train`` or ``test``."""
    ids = {"all": np.arange(len(task.is_train)), "train": task.train_ids, "test": task.test_ids}[split]
    return task.instances[ids]


def grad_cosines_for_checkpoint(
    model: OLMo,
    batch: Dict[str, Any],
    task: "Task",
    neurons: Sequence[int],
    *,
    task_index: int = 0,
    reference_split: str = "all",
    microbatch_size: Optional[int] = None,
    z_loss: bool = False,
    reference_batch_size: int = 1024,
) -> Dict[str, float]:
    """Offline: the per-step metrics for a model loaded from any checkpoint and any training batch.

    ``batch`` is one device batch as the injecting data loader yields it (``injected_task`` marks the rows of
    each task; ``task_index`` is ``task``'s place in ``injection.tasks``); ``neurons`` come from the run's
    ``task_neurons/<task>.json``. Same loss, scaling and keys as the training hook; ``.grad`` is not touched.
    The batch is the only one counted: call once per rank's batch and average for a multi-rank step.
    """
    neurons = torch.as_tensor(neurons, dtype=torch.int64)
    instances = reference_instances(task, reference_split)
    reference = task_reference_gradient(model, instances, neurons, batch_size=reference_batch_size)
    mask = task_positions(batch, task_index)
    grads = batch_neuron_gradients(model, batch, mask, neurons, microbatch_size=microbatch_size, z_loss=z_loss)
    return interference_metrics(grads, reference)
